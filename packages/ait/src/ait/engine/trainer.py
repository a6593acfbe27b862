"""The training loop: one code path for a single process and for torchrun + DistributedDataParallel.

Per optimiser step: one global batch ({task: batch} of this rank's share, from `ait.data.TaskStreams`),
cut into `optim.accumulate` micro-batches whose losses are all normalised by the token counts of the whole
global batch (so accumulation changes memory, not the update),
`loss = model(batch)["loss"]` under the autocast `optim.amp` names (fp16 + GradScaler on CUDA, bf16, or
fp32: `ait.engine.precision`), a cross-rank check
that the loss is finite (a NaN/inf stops every rank with an error naming the step, before anything is
written, so the last checkpoint stays the last good one), unscale, clip, AdamW step, per-iteration lr
schedule. Metrics are averaged over ranks and logged as JSON lines; checkpoints are atomic and carry
everything `--resume` needs to continue bit-for-bit (see `ait.engine.checkpoint`).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ait.config.schema import Config
from ait.config.validation import resolve_accumulation
from ait.data import TaskStreams, build_task_streams, describe_batches, rank_share, task_can_be_absent
from ait.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_torch_save,
    capture_rng_state,
    check_config_compatible,
    check_finite_weights,
    checkpoint_path,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    remove_temporary_files,
    restore_rng_state,
)
from ait.engine.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    init_distributed,
)
from ait.engine.ema import WeightEma, delivered_weights
from ait.engine.logging import MetricsLogger
from ait.engine.optim import build_optimizer, build_scheduler
from ait.engine.precision import resolve_amp
from ait.engine.preflight import check_training_files
from ait_tokenizer.checkpoint import fault_point
from ait_tokenizer.locking import RunLock, check_unlocked

__all__ = ["NonFiniteLossError", "TrainResult", "Trainer", "seed_everything", "train"]

# DDP without a buffer broadcast before each forward. torch 2.13 renamed the switch: `forward_sync_buffers`
# (buffers still synced once, when DDP is built) replaces `broadcast_buffers`, which now warns
NO_PER_STEP_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)

# Test hook: SIGKILL this process right after the given optimiser step (the resume test's "crash").
KILL_AFTER_STEP_ENV = "AIT_KILL_AFTER_STEP"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; nothing of that step was applied or saved."""

    def __init__(self, step: int, parts: dict[str, float], last_checkpoint: Path | None):
        self.step, self.parts, self.last_checkpoint = step, parts, last_checkpoint
        where = (
            f"the last good checkpoint is {last_checkpoint}"
            if last_checkpoint
            else "no checkpoint was written yet"
        )
        shown = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
        super().__init__(
            f"non-finite loss at step {step} ({shown}); training stopped before applying it, {where}. "
            "Lower optim.lr, enable optim.grad_clip, or check the data of that step."
        )

    def __reduce__(self):  # pickled with its own fields: a worker process's failure reaches its parent
        return type(self), (self.step, self.parts, self.last_checkpoint)


@dataclass
class TrainResult:
    step: int
    work_dir: Path
    checkpoint: Path | None
    last_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, Any] = field(default_factory=dict)
    images_per_s: float = float("nan")
    wall_s: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (libraries may draw from numpy's global RNG)
    torch.manual_seed(seed)


def configure_determinism(enabled: bool, device: torch.device) -> None:
    if not enabled:
        # the process-wide switch may still be on from an earlier run in this process
        torch.use_deterministic_algorithms(False)
        if device.type == "cuda":
            torch.backends.cudnn.deterministic = False
        return
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    # warn_only: a few kernels (e.g. some CUDA scatter/index ops) have no deterministic version
    torch.use_deterministic_algorithms(True, warn_only=True)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [_to_device(v, device) for v in batch]
    if isinstance(batch, tuple):
        return tuple(_to_device(v, device) for v in batch)
    return batch


def _slice_samples(value: Any, start: int, stop: int, length: int) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == length:
        return value[start:stop]
    if isinstance(value, (list, tuple)) and len(value) == length:
        return value[start:stop]
    return value  # not per sample


def split_micro_batches(batch: dict[str, dict], steps: int) -> list[dict[str, dict]]:
    """A rank's {task: collated batch} -> `steps` micro-batches: each task's samples cut into contiguous
    runs whose sizes differ by at most one. A task without a sample in a run is left out of that
    micro-batch (the model then reports it absent, as for a rank without the task's images)."""
    if steps == 1:
        return [batch]
    micro: list[dict[str, dict]] = [{} for _ in range(steps)]
    for task, samples in batch.items():
        length = int(samples["image"].shape[0])
        for index in range(steps):
            start, stop = rank_share(length, index, steps)
            if stop > start:
                micro[index][task] = {
                    key: _slice_samples(value, start, stop, length) for key, value in samples.items()
                }
    return micro


def _float_parts(out: dict[str, Any]) -> dict[str, float]:
    parts = {}
    for key, value in out.items():
        if isinstance(value, torch.Tensor):
            if value.numel() == 1:
                parts[key] = float(value.detach())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            parts[key] = float(value)
    return parts


def load_initial_weights(model: nn.Module, path: str, log: Callable[[str], None]) -> None:
    """`load_from`: copy every tensor whose name and shape match (e.g. a detection model into insseg/joint)."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(
            f"load_from checkpoint not found: {source} (set --cfg-options load_from=None to start from scratch)"
        )
    from ait.original import original_initial_weights

    original = original_initial_weights(model, source, log)  # None unless an original release file
    if original is not None:
        weights = original
    elif source.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            weights = load_file(str(source))
        except Exception as error:
            raise ValueError(f"load_from {source}: not a readable safetensors file ({error})") from error
    else:
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as error:  # a crafted pickle, a truncated or foreign file: refused, never executed
            from ait_tokenizer.original import load_error_reason

            raise ValueError(
                f"load_from {source}: not a checkpoint of plain tensors ({load_error_reason(error)})"
            ) from error
        if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
            weights = delivered_weights(state)  # the run's weight average where it kept one
        elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            weights = state["state_dict"]  # mmcv-style checkpoints
        else:
            weights = state
    if not isinstance(weights, dict):
        raise ValueError(f"load_from {source}: expected a dict of tensors, found {type(weights).__name__}")
    check_finite_weights(weights, f"load_from {source}")
    own = model.state_dict()
    matched = {k: v for k, v in weights.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    skipped = sorted(set(weights) - set(matched))
    if not matched:
        raise ValueError(f"load_from {source}: no tensor matches this model by name and shape")
    model.load_state_dict(matched, strict=False)
    log(
        f"load_from {source}: {len(matched)} tensors loaded, {len(skipped)} skipped, {len(own) - len(matched)} kept"
    )


class Trainer:
    """Builds everything for a run and trains it; see `train()` for the one-call version.

    `model_factory(cfg) -> nn.Module` defaults to `ait.model.build_task_solver`; the module's forward (or
    `training_step`) takes {task: batch} and returns {"loss": tensor, **float parts}.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        model_factory: Callable[[Config], nn.Module] | None = None,
        datasets: dict | None = None,
        dist_info: DistInfo | None = None,
        device: str | None = None,
        log: Callable[[str], None] | None = None,
        evaluate: bool = True,
    ):
        cfg.validate()
        self.cfg = cfg
        self.dist = dist_info or init_distributed(device)
        self.device = self.dist.device
        # micro-batches per step; a per-GPU batch that cannot split the global batch fails before data or
        # model are built
        self.accumulate = resolve_accumulation(cfg, self.dist.world_size)
        # an amp mode this device cannot run fails here, before data or model are built
        self.amp = resolve_amp(cfg.optim.amp, self.device)
        self._print = log or print
        self.evaluate_enabled = evaluate
        self.work_dir = Path(cfg.work_dir)
        if self.dist.is_main:
            ensure_writable(self.work_dir)  # fail now, not after building data and model
            # another run writing into work_dir (two `ait train` started together) refuses now
            check_unlocked(self.work_dir, "--work-dir", "training run")
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        configure_determinism(cfg.deterministic, self.device)
        seed_everything(cfg.seed)  # same seed on every rank: identical initial weights

        # data first: a missing dataset path fails before a large model is built
        self.streams: TaskStreams = build_task_streams(cfg, self.dist.rank, self.dist.world_size, datasets)
        # a missing tokenizer, backbone or load_from file refuses before the (large) model is built
        check_training_files(cfg)
        if model_factory is None:
            from ait.model import build_task_solver

            model_factory = build_task_solver
        self.model = model_factory(cfg).to(self.device)
        if cfg.load_from:
            load_initial_weights(self.model, cfg.load_from, self.log)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim)
        self.use_amp = self.amp.scaler  # a GradScaler (fp16) whose state the checkpoints carry
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step = 0
        self.last_checkpoint: Path | None = None

        if self.dist.distributed:
            unused = getattr(self.model, "unused_parameter_names", list)()
            if unused:
                # never used by this config, never given a gradient: left out of DDP's reduction
                nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                    self.model, unused
                )
            self.wrapped: nn.Module = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # the backbone's relative-position buffers are the same on every rank (fixed tables): the
                # original does not broadcast them each step either (about 145 MB per step for SwinV2-B at
                # 640)
                **NO_PER_STEP_BUFFER_SYNC,
                # the unused-parameter search walks the graph every step: only when a rank can be without
                # one task's images (4 NYU images over 8 ranks in joint training) and its head sits out;
                # a micro-batch counts as a rank here (the last one's backward is the reduction)
                find_unused_parameters=task_can_be_absent(cfg, self.dist.world_size * self.accumulate),
            )
        else:
            self.wrapped = self.model
        # the weight average starts from the initial (or load_from) weights, as DDP has broadcast them
        self.ema = WeightEma(self.model, cfg.optim.ema_decay) if cfg.optim.ema_decay else None
        self.metrics = MetricsLogger(self.work_dir, enabled=self.dist.is_main)
        # the RNG state training starts from, so a run does not depend on what else ran in this process
        self._start_rng = capture_rng_state()

    # ------------------------------------------------------------------------------------------ helpers
    def log(self, message: str) -> None:
        if self.dist.is_main:
            self._print(message)

    def _forward(self, batch: dict, normalisers: torch.Tensor | None = None) -> dict:
        # DDP only hooks forward(); fall back to training_step for modules whose forward is something else
        kwargs = {} if normalisers is None else {"normalisers": normalisers}
        module = self.wrapped
        if self.dist.distributed or not hasattr(self.model, "training_step"):
            return module(batch, **kwargs)
        return self.model.training_step(batch, **kwargs)

    def _global_normalisers(self, micro_batches: list[dict]) -> torch.Tensor | None:
        """Per-task divisors over the whole global batch (all micro-batches, all ranks), or None when the
        model cannot count its tokens before the forward pass (then each micro-batch is its own mean)."""
        if len(micro_batches) == 1 or not hasattr(self.model, "token_counts"):
            return None
        from ait.losses import token_normaliser

        with torch.no_grad():
            counts = sum(self.model.token_counts(batch) for batch in micro_batches)
        return token_normaliser(counts)  # one all-reduce per optimiser step, on every rank

    def current_lr(self) -> float:
        # the lr of the group with the largest scale (the non-backbone parameters: scale 1)
        return max(g["lr"] for g in self.optimizer.param_groups)

    # --------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        rng_states = all_gather_objects(capture_rng_state())
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_json(),
            "config_name": self.cfg.name,
            # the frozen tokenizers' architectures: `load_solver` rebuilds them without their files
            "tokenizers": json.dumps(getattr(self.model, "tokenizer_configs", dict)()),
            "step": self.step,
            "model": self.model.state_dict(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            "optimizer": self.optimizer.state_dict(),
            # the schedule's lambda is rebuilt from the config; only its counters are state
            "scheduler": {
                **self.scheduler.state_dict(),
                "lr_lambdas": [None] * len(self.optimizer.param_groups),
            },
            "scaler": self.scaler.state_dict() if self.use_amp else None,
            "data": self.streams.state_dict(),
            "rng": rng_states,
            "world_size": self.dist.world_size,
        }

    def save_checkpoint(self) -> Path:
        state = self.state_dict()  # collective (RNG gather): every rank calls it
        path = checkpoint_path(self.work_dir, self.step)
        if self.dist.is_main:
            atomic_torch_save(state, path, step=self.step)
            fault_point("solver-save:replaced", self.step)
            prune_checkpoints(self.work_dir, self.cfg.keep_checkpoints)
            fault_point("solver-save:pruned", self.step)
        barrier()
        self.last_checkpoint = path
        return path

    def resume(self, path: str | os.PathLike | None = None) -> int:
        """Restore from `path` or the newest checkpoint of work_dir; returns the step reached."""
        if path is None:
            path = find_latest_checkpoint(self.work_dir)
            if path is None:
                raise FileNotFoundError(f"--resume: no checkpoint in {self.work_dir / 'checkpoints'}")
        state = load_checkpoint(path, map_location="cpu")
        check_config_compatible(state, self.cfg, path)
        check_finite_weights(state["model"], path)
        from ait.engine.checkpoint import load_model_weights

        load_model_weights(self.model, state["model"], path)
        if self.ema is not None:
            if not isinstance(state.get("ema"), dict):
                raise ValueError(
                    f"checkpoint {path} holds no weight average, and optim.ema_decay={self.cfg.optim.ema_decay} "
                    "needs one to continue exactly: resume with the run's own config"
                )
            check_finite_weights(state["ema"], path)
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.use_amp and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.streams.load_state_dict(state["data"])
        self.step = int(state["step"])
        rng = state["rng"]
        if state.get("world_size") == self.dist.world_size and len(rng) == self.dist.world_size:
            restore_rng_state(rng[self.dist.rank])
        else:
            self.log(
                f"resume: checkpoint was written by {state.get('world_size')} ranks, now {self.dist.world_size}; "
                "data order is kept, dropout RNG restarts from rank 0's state"
            )
            restore_rng_state(rng[0])
        self.last_checkpoint = Path(path)
        self.log(f"resumed from {path} at step {self.step}")
        return self.step

    # ---------------------------------------------------------------------------------------- evaluation
    def run_evaluation(self) -> dict[str, Any]:
        from ait.engine.evaluate import evaluate_solver

        with self.ema.applied() if self.ema is not None else contextlib.nullcontext():
            return evaluate_solver(self.cfg, self.model, self.dist)

    # ------------------------------------------------------------------------------------------- training
    def _train_step(self) -> dict[str, float]:
        cfg = self.cfg
        self.wrapped.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        autocast = self.amp.autocast()
        steps = self.accumulate
        micro_batches = split_micro_batches(_to_device(self.streams.next_batch(), self.device), steps)
        normalisers = self._global_normalisers(micro_batches)
        # with global normalisers each micro-batch's loss is already its share of the step's loss: summed;
        # otherwise every micro-batch is normalised alone and the step takes their mean
        weight = 1.0 if normalisers is not None else 1.0 / steps
        for micro, batch in enumerate(micro_batches):
            last_micro = micro == steps - 1
            sync = (
                contextlib.nullcontext()
                if (last_micro or not self.dist.distributed)
                else self.wrapped.no_sync()
            )
            with sync:
                with autocast:
                    out = self._forward(batch, normalisers)
                loss = out["loss"]
                parts = _float_parts(out)
                # every rank must take the same branch, so the finiteness check is a collective
                bad = all_reduce_sum(torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0]))
                if float(bad) > 0:
                    raise NonFiniteLossError(self.step + 1, parts, self.last_checkpoint)
                self.scaler.scale(loss.float() * weight).backward()
            for key, value in parts.items():
                # SILog is a per-micro-batch statistic, not a share of a sum: averaged
                share = 1.0 / steps if normalisers is None or key.endswith("silog") else 1.0
                sums[key] = sums.get(key, 0.0) + value * share
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if cfg.optim.grad_clip is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip))
        else:
            grad_norm = (
                float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
                if params
                else 0.0
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.step)
        sums["grad_norm"] = grad_norm
        return sums

    def train(
        self, resume: bool | str | os.PathLike | None = None, stop_at_step: int | None = None
    ) -> TrainResult:
        """Train to optim.max_iters (resume: True = newest checkpoint of work_dir, or a path).

        `stop_at_step` leaves the loop right after that step without a final checkpoint or evaluation, as an
        interruption would (tests use it to check that `--resume` continues exactly). work_dir is locked
        while this runs: a second run into it refuses.
        """
        if not self.dist.is_main:
            return self._train(resume, stop_at_step)
        with RunLock(self.work_dir, "--work-dir", "training run"):
            return self._train(resume, stop_at_step)

    def _train(self, resume: bool | str | os.PathLike | None, stop_at_step: int | None) -> TrainResult:
        cfg = self.cfg
        start_wall = time.perf_counter()
        if self.dist.is_main:
            removed = remove_temporary_files(self.work_dir)
            if removed:
                self.log(f"removed {len(removed)} temporary file(s) of an interrupted save")
        if resume:
            self.resume(None if resume is True else resume)
            if self.dist.is_main:
                truncate_metrics(self.metrics.path, self.step)
        elif self.step == 0:
            refuse_used_work_dir(self.work_dir)
            restore_rng_state(self._start_rng)
        if self.dist.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            (self.work_dir / "config.json").write_text(cfg.to_json(), encoding="utf-8")
        n_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.log(
            f"training {cfg.name}: {cfg.optim.max_iters} steps from step {self.step}, {self.dist.world_size} "
            f"rank(s) on {self.device}, {n_params / 1e6:.2f}M trainable parameters, batches "
            f"[{'; '.join(describe_batches(cfg, self.dist.world_size))}] in {self.accumulate} micro-batch(es), "
            f"precision {self.amp.describe()}, work_dir {self.work_dir}"
        )
        kill_after = int(os.environ.get(KILL_AFTER_STEP_ENV, "0") or 0)
        images_per_step = self.streams.images_per_step()
        progress = None
        if cfg.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            progress = tqdm(
                total=cfg.optim.max_iters,
                initial=self.step,
                desc=cfg.name,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
            )
        window: dict[str, float] = {}
        window_steps, window_time = 0, 0.0
        total_train_time, total_train_images = 0.0, 0
        last_metrics: dict[str, float] = {}
        eval_metrics: dict[str, Any] = {}
        try:
            while self.step < cfg.optim.max_iters:
                lr = self.current_lr()
                t0 = time.perf_counter()
                parts = self._train_step()
                elapsed = time.perf_counter() - t0
                total_train_time += elapsed
                total_train_images += images_per_step
                window_time += elapsed
                window_steps += 1
                for key, value in parts.items():
                    window[key] = window.get(key, 0.0) + value
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(
                        loss=f"{parts['loss']:.4f}", img_s=f"{images_per_step / elapsed:.1f}"
                    )
                done = self.step >= cfg.optim.max_iters
                if self.step % cfg.log_interval == 0 or done:
                    means = all_reduce_mean({k: v / window_steps for k, v in window.items()})
                    last_metrics = {
                        **means,
                        "lr": lr,
                        "images_per_s": images_per_step * window_steps / max(window_time, 1e-9),
                        "epoch": {t: s.position / s.length for t, s in self.streams.streams.items()},
                    }
                    self.metrics.log({"kind": "train", **last_metrics}, step=self.step)
                    if progress is None:
                        self.log(
                            f"step {self.step}/{cfg.optim.max_iters} loss {means['loss']:.4f} lr {lr:.3g} "
                            f"{last_metrics['images_per_s']:.1f} img/s"
                        )
                    window, window_steps, window_time = {}, 0, 0.0
                if (cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0) or done:
                    self.save_checkpoint()
                if kill_after and self.step == kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
                if stop_at_step is not None and self.step >= stop_at_step and not done:
                    break
                if self.evaluate_enabled and (
                    (cfg.eval_interval and self.step % cfg.eval_interval == 0 and not done) or done
                ):
                    eval_metrics = self.run_evaluation()
                    self.metrics.log({"kind": "eval", **eval_metrics}, step=self.step)
                    self.log(f"eval at step {self.step}: {_summary(eval_metrics)}")
        finally:
            if progress is not None:
                progress.close()
            self.metrics.close()
        if self.ema is not None and self.step >= cfg.optim.max_iters:
            # the run delivers the average: whoever takes the trainer's model next (the demo, the curriculum's
            # instance phase) gets the weights the final checkpoint's "ema" holds
            self.ema.copy_to_model()
        throughput = total_train_images / total_train_time if total_train_time > 0 else float("nan")
        self.log(
            f"done: step {self.step}, {throughput:.1f} images/s (training steps only), checkpoint {self.last_checkpoint}"
        )
        return TrainResult(
            step=self.step,
            work_dir=self.work_dir,
            checkpoint=self.last_checkpoint,
            last_metrics=last_metrics,
            eval_metrics=eval_metrics,
            images_per_s=throughput,
            wall_s=time.perf_counter() - start_wall,
        )


def ensure_writable(work_dir: Path) -> None:
    """Create work_dir and prove it writable, so an unwritable folder fails before any time is spent."""
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        probe = work_dir / f".ait-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OSError(
            error.errno,
            f"work_dir {work_dir} is not writable ({error.strerror or error}): choose another with "
            "--work-dir or --cfg-options work_dir=...",
        ) from error


def refuse_used_work_dir(work_dir: Path) -> None:
    """A fresh run may not write into a folder that holds another run's checkpoints or metrics."""
    found = [str(p.relative_to(work_dir)) for _, p in list_checkpoints(work_dir)][-2:]
    metrics = work_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        found.append("metrics.jsonl")
    if found:
        raise ValueError(
            f"work_dir {work_dir} already holds a run ({', '.join(found)}); continue it with --resume, or "
            "choose another --work-dir (or delete that folder) to start a new run"
        )


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics records of steps after `step`: a resumed run logs each step once."""
    if not path.is_file():
        return
    import json

    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


def _summary(metrics: dict[str, Any]) -> str:
    pieces = []
    depth = metrics.get("depth") or {}
    if depth:
        pieces.append(f"depth rmse {depth.get('rmse', math.nan):.4f} d1 {depth.get('d1', math.nan):.3f}")
    for task in ("insseg", "det"):
        coco = metrics.get(task) or {}
        if coco:
            pieces.append(
                f"{task} box AP {100 * coco.get('bbox', {}).get('AP', math.nan):.1f}"
                + (f" mask AP {100 * coco['segm']['AP']:.1f}" if "segm" in coco else "")
            )
    return ", ".join(pieces) or "(nothing evaluated)"


def train(cfg: Config, resume: bool | str | None = None, **kwargs: Any) -> TrainResult:
    """Build a Trainer for `cfg` and run it (resume: True = newest checkpoint of work_dir, or a path); with
    `curriculum.detection_iters`, its detection phase first (`ait.engine.curriculum`)."""
    from ait.engine.curriculum import train_with_curriculum

    return train_with_curriculum(cfg, resume=resume, **kwargs)[1]
