"""Train a depth or instance-mask tokenizer.

    ait-tokenizer-train depth-small --out /tmp/tok-depth --cfg-options max_steps=500
    ait-tokenizer-train mask-paper --out runs/mask --maskcoco maskcoco_train2017.npz
    torchrun --nproc-per-node 2 -m ait_tokenizer.train depth-small --out /tmp/tok-ddp

Named configs reproduce the paper's schedules ("depth-paper": Adam 3e-4, no weight decay, x0.98 whenever
the within-epoch step index is a multiple of 500; "mask-paper": AdamW 3e-4, 500 linear warm-up steps from
3e-7, per-step cosine to 1e-6) and give CPU-sized ones ("depth-small", "mask-small").

Runs are deterministic for a seed on the CPU, and a resumed run equals an uninterrupted one: data order is
a function of (seed, epoch), every augmentation draw of (seed, epoch, index), every per-step random choice
(mask augmentation, k-means, dead-code restarts) of (seed, step), and the learning rate of the step.
Under torchrun (WORLD_SIZE set) it joins the env:// process group (gloo on CPU, nccl on GPU), shards the
data with a DistributedSampler, averages gradients over ranks, and the quantizer all-reduces its EMA
statistics so every rank keeps the same codebook.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import itertools
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from ait_tokenizer.checkpoint import check_finite, fault_point, load_tokenizer, save_tokenizer, torch_save_to
from ait_tokenizer.data import MaskCrops, NYUDepthMaps, SyntheticDepthMaps, stack_batch
from ait_tokenizer.locking import RunLock
from ait_tokenizer.model import VQVAETokenizer
from ait_tokenizer.quantizer import utilisation
from ait_tokenizer.registry import create_tokenizer, tokenizer_config

STATE_FILE = "train_state.pt"
LAST_CHECKPOINT = "last.safetensors"
FINAL_CHECKPOINT = "final.safetensors"
METRICS_FILE = "metrics.jsonl"


@dataclass
class TokenizerTrainConfig:
    """One tokenizer training run. ``data``: "synthetic" (default), "nyu" or "maskcoco"."""

    tokenizer: str = "depth-small"
    tokenizer_overrides: dict = field(default_factory=dict)
    # data
    data: str = "synthetic"
    data_seed: int = 0
    train_size: int = 2000  # synthetic: depth maps, or rooms whose instances are cropped (masks)
    val_size: int = 64  # synthetic validation maps / rooms (the "val" split: held out)
    nyu_root: str | None = None
    nyu_split_file: str | None = None
    nyu_val_split_file: str | None = None
    nyu_columns: tuple[int, int] | None = (41, 601)  # the paper's column crop of 640-wide NYU maps
    nyu_short_side: int | None = None  # nearest downscale of NYU maps before the crop (small presets)
    maskcoco: str | None = None
    maskcoco_val: str | None = None
    instance_room_size: int = 128  # synthetic rooms rendered at this size before cropping instances
    flip: bool = True  # horizontal flip (depth; the mask recipe has none)
    num_workers: int = 0
    # optimisation
    epochs: int = 20
    max_steps: int | None = None  # stop after this many steps in all (the schedule still spans `epochs`)
    # global: maps per optimiser step over all processes, split evenly (the original's batch_size //
    # world_size per GPU), so a config's step-based schedule is the same on any number of processes
    batch_size: int = 8
    optimizer: str = "adam"  # "adam" | "adamw"
    lr: float = 3e-4
    weight_decay: float = 0.0
    schedule: str = "step"  # "step": x decay_factor each `decay_every` within-epoch steps; "cosine"
    decay_every: int = 500
    decay_factor: float = 0.98
    warmup_steps: int = 500
    warmup_start_lr: float = 3e-7
    min_lr: float = 1e-6
    # bookkeeping
    val_every: int = 500  # steps; 0: only at the end
    checkpoint_every: int = 500  # steps; 0: only at the end
    log_every: int = 25
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    num_threads: int | None = None  # torch CPU threads (1 is fastest on a crowded machine)
    # convolution weights and activations in NHWC order: the same arithmetic in another summation order, and
    # the demo's depth-tokenizer phase 1.24x faster on an AVX-512 CPU (oneDNN's convolutions and their
    # gradients are fastest in it; benchmarks/bench_tokenizer.py times the phase); False keeps PyTorch's NCHW
    channels_last: bool = True
    cache_data: bool = True  # render synthetic depth maps once, up front, and keep them in memory
    progress: bool = True
    resume: bool = True  # continue from out_dir/train_state.pt when present

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> TokenizerTrainConfig:
        """ValueError naming the first field whose value cannot train (e.g. batch_size=-4); returns self."""
        _validate_train_config(self)
        return self


def _validate_train_config(cfg: TokenizerTrainConfig) -> None:
    def fail(name: str, value, what: str) -> None:
        raise ValueError(f"tokenizer training config: {name}={value!r} is invalid, expected {what}")

    def integer(name: str, low: int, allow_none: bool = False) -> None:
        value = getattr(cfg, name)
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            fail(name, value, f"an integer >= {low}" + (" or None" if allow_none else ""))

    def number(name: str, low: float, high: float = math.inf, low_open: bool = False) -> None:
        value = getattr(cfg, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > low if low_open else value >= low) and value <= high
        if not ok:
            fail(
                name,
                value,
                f"a finite number {'>' if low_open else '>='} {low}"
                + (f" and <= {high}" if high < math.inf else ""),
            )

    for name in ("epochs", "batch_size", "train_size", "val_size", "decay_every", "log_every"):
        integer(name, 1)
    for name in ("warmup_steps", "val_every", "checkpoint_every", "num_workers", "data_seed", "seed"):
        integer(name, 0)
    for name in ("data_seed", "seed"):  # torch's generators take 64-bit seeds: say so here, not mid-run
        if getattr(cfg, name) >= 2**63:
            fail(name, getattr(cfg, name), "an integer in [0, 2**63)")
    integer("max_steps", 1, allow_none=True)
    integer("num_threads", 1, allow_none=True)
    integer("instance_room_size", 8)
    number("lr", 0.0, low_open=True)
    number("weight_decay", 0.0)
    number("decay_factor", 0.0, 1.0, low_open=True)
    number("warmup_start_lr", 0.0)
    number("min_lr", 0.0)
    choices = {
        "optimizer": ("adam", "adamw"),
        "schedule": ("step", "cosine"),
        "data": ("synthetic", "nyu", "maskcoco"),
        "device": ("auto", "cpu", "cuda"),
    }
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            fail(name, getattr(cfg, name), f"one of {list(allowed)}")
    if not isinstance(cfg.tokenizer_overrides, dict):
        fail("tokenizer_overrides", cfg.tokenizer_overrides, "a dict of tokenizer config keys")
    for name in ("channels_last", "flip", "cache_data", "progress", "resume"):
        if not isinstance(getattr(cfg, name), bool):
            fail(name, getattr(cfg, name), "true or false")


class NonFiniteTrainingError(FloatingPointError):
    """The loss or the weights became NaN/inf; the step was not saved (the last checkpoint stays good)."""

    def __init__(self, step: int, what: str, last_checkpoint: Path | None):
        self.step, self.last_checkpoint = step, last_checkpoint
        where = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "nothing was saved"
        super().__init__(
            f"tokenizer training diverged at step {step}: {what}; training stopped, {where}. "
            "Lower lr (e.g. --lr 3e-4) or check the data."
        )


def _config(**values) -> TokenizerTrainConfig:
    return TokenizerTrainConfig(**values)


# Named configs. The paper's ones need the real data (point them at it); the small ones run on this CPU.
TRAIN_CONFIGS: dict[str, TokenizerTrainConfig] = {
    "depth-paper": _config(
        tokenizer="depth-paper",
        data="nyu",
        epochs=20,
        batch_size=8,
        optimizer="adam",
        lr=3e-4,
        schedule="step",
        decay_every=500,
        decay_factor=0.98,
        val_every=2000,
        checkpoint_every=2000,
    ),
    "mask-paper": _config(
        tokenizer="mask-paper",
        data="maskcoco",
        epochs=20,
        batch_size=512,
        optimizer="adamw",
        lr=3e-4,
        weight_decay=0.0,
        schedule="cosine",
        warmup_steps=500,
        warmup_start_lr=3e-7,
        min_lr=1e-6,
        flip=False,
        val_every=2000,
        checkpoint_every=2000,
    ),
    # ~10 CPU minutes: 64x64 synthetic maps, 8x8 tokens; the paper's schedule family, faster decay.
    "depth-small": _config(
        tokenizer="depth-small",
        data="synthetic",
        train_size=4000,
        val_size=64,
        epochs=8,
        batch_size=16,
        optimizer="adam",
        lr=1e-3,
        schedule="step",
        decay_every=50,
        decay_factor=0.98,
        val_every=500,
        checkpoint_every=500,
    ),
    "mask-small": _config(
        tokenizer="mask-small",
        data="synthetic",
        train_size=600,
        val_size=40,
        epochs=10,
        batch_size=32,
        optimizer="adamw",
        lr=1e-3,
        schedule="cosine",
        warmup_steps=100,
        warmup_start_lr=1e-5,
        min_lr=1e-5,
        flip=False,
        val_every=500,
        checkpoint_every=500,
    ),
}


def list_train_configs() -> list[str]:
    return sorted(TRAIN_CONFIGS)


def train_config(name: str, **overrides) -> TokenizerTrainConfig:
    if name not in TRAIN_CONFIGS:
        raise ValueError(f"unknown training config {name!r}; expected one of {list_train_configs()}")
    return dataclasses.replace(TRAIN_CONFIGS[name], **overrides)


# --------------------------------------------------------------------------- schedule
def learning_rate(
    cfg: TokenizerTrainConfig, step: int, epoch: int, step_in_epoch: int, steps_per_epoch: int
) -> float:
    """Learning rate of global step ``step`` (0-based), which is ``step_in_epoch`` of ``epoch``."""
    if cfg.schedule == "step":
        # The paper multiplies by 0.98 after each step whose within-epoch index is a multiple of 500.
        per_epoch = math.ceil(steps_per_epoch / cfg.decay_every)
        decays = epoch * per_epoch + math.ceil(step_in_epoch / cfg.decay_every)
        return cfg.lr * cfg.decay_factor**decays
    if cfg.schedule == "cosine":
        if step < cfg.warmup_steps:
            return cfg.warmup_start_lr + (cfg.lr - cfg.warmup_start_lr) * step / cfg.warmup_steps
        total = max(cfg.epochs * steps_per_epoch, cfg.warmup_steps + 1)
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))
    raise ValueError(f"schedule must be 'step' or 'cosine', got {cfg.schedule!r}")


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """Seed of one step's random choices (distinct per rank: each rank augments its own samples)."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63)


# --------------------------------------------------------------------------- distributed
@dataclass
class Runtime:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    distributed: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_runtime(device: str = "auto") -> Runtime:
    """Join the torchrun process group when WORLD_SIZE is set (gloo on CPU, nccl on GPU)."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if "WORLD_SIZE" not in os.environ:
        return Runtime(device=torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://")
    return Runtime(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        device=torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"),
        distributed=True,
    )


def per_process_batch(batch_size: int, world_size: int) -> int:
    """Each process's share of the global `batch_size`; ValueError when it does not split evenly."""
    if batch_size % world_size:
        multiples = ", ".join(str(world_size * k) for k in range(1, 4))
        raise ValueError(
            f"tokenizer training config: batch_size={batch_size} is the global batch, split evenly over "
            f"{world_size} processes; expected a multiple of {world_size}: one of [{multiples}, ...]"
        )
    return batch_size // world_size


def average_gradients(model: torch.nn.Module, world_size: int) -> None:
    """Mean of the gradients over ranks (what DDP would do; explicit, so the EMA buffers stay ours)."""
    if world_size == 1:
        return
    for parameter in model.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
            parameter.grad /= world_size


# --------------------------------------------------------------------------- data
def build_datasets(cfg: TokenizerTrainConfig, kind: str, size: tuple[int, int]):
    """(train, validation) datasets of ``{"x": (1,H,W)}`` (+ ``complete`` for synthetic depth)."""
    if kind == "depth":
        if cfg.data == "synthetic":
            return (
                SyntheticDepthMaps(cfg.train_size, size, "train", cfg.data_seed, cfg.flip, cfg.cache_data),
                SyntheticDepthMaps(
                    cfg.val_size, size, "val", cfg.data_seed, flip=False, cache=cfg.cache_data
                ),
            )
        if cfg.data == "nyu":
            if not cfg.nyu_root or not cfg.nyu_split_file:
                raise ValueError("data='nyu' needs nyu_root and nyu_split_file (BTS split-file layout)")
            options = {"short_side": cfg.nyu_short_side, "columns": cfg.nyu_columns, "seed": cfg.seed}
            train = NYUDepthMaps(cfg.nyu_root, cfg.nyu_split_file, "train", size, train=True, **options)
            val_file = cfg.nyu_val_split_file or cfg.nyu_split_file
            split = "test" if cfg.nyu_val_split_file else "train"
            val = NYUDepthMaps(cfg.nyu_root, val_file, split, size, train=False, **options)
            return train, val
        raise ValueError(f"depth tokenizers train on data 'synthetic' or 'nyu', got {cfg.data!r}")
    if cfg.data == "synthetic":
        return (
            MaskCrops.from_synthetic(
                cfg.train_size, "train", cfg.data_seed, cfg.instance_room_size, size[0], cfg.flip
            ),
            MaskCrops.from_synthetic(cfg.val_size, "val", cfg.data_seed, cfg.instance_room_size, size[0]),
        )
    if cfg.data == "maskcoco":
        if not cfg.maskcoco:
            raise ValueError("data='maskcoco' needs maskcoco (path of the .npz from ait-maskcoco)")
        train = MaskCrops.from_maskcoco(cfg.maskcoco, cfg.flip, cfg.seed)
        return train, MaskCrops.from_maskcoco(cfg.maskcoco_val or cfg.maskcoco)
    raise ValueError(f"mask tokenizers train on data 'synthetic' or 'maskcoco', got {cfg.data!r}")


# --------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(
    tokenizer: VQVAETokenizer, dataset, batch_size: int = 32, device: torch.device | str = "cpu"
) -> dict:
    """Reconstruction scores (ait_eval) and codebook utilisation of decode(encode(x)) on ``dataset``."""
    from ait_eval import depth_reconstruction_scores, mask_reconstruction_scores

    was_training = tokenizer.training
    tokenizer.eval()
    inputs, recons, completes = [], [], []
    counts = torch.zeros(tokenizer.num_codes)
    for start in range(0, len(dataset), batch_size):
        batch = stack_batch([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        x = batch["x"].to(device)
        ids = tokenizer.encode(x)
        counts += torch.bincount(ids.flatten().cpu(), minlength=tokenizer.num_codes).float()
        recons.append(tokenizer.decode(ids).cpu()[:, 0].numpy())
        inputs.append(batch["x"][:, 0].numpy())
        if "complete" in batch:
            completes.append(batch["complete"][:, 0].numpy())
    tokenizer.train(was_training)
    recon, target = np.concatenate(recons), np.concatenate(inputs)
    use = utilisation(counts)
    scores = {"perplexity": use["perplexity"], "codes_used": use["codes_used"]}
    if tokenizer.kind == "mask":
        return {**scores, **mask_reconstruction_scores(target, recon)}
    # Depth: against the valid pixels of the input, and (synthetic) against the complete map everywhere.
    valid = depth_reconstruction_scores(recon, target, eigen_crop=False)
    scores.update({name: valid[name] for name in ("rmse", "abs_rel", "d1")})
    if completes:
        complete = np.concatenate(completes)
        full = depth_reconstruction_scores(recon, complete, eigen_crop=False)
        scores.update({f"complete_{name}": full[name] for name in ("rmse", "abs_rel", "d1")})
        holes = target <= 0
        if holes.any():
            scores["holes_rmse"] = float(np.sqrt(np.mean((recon[holes] - complete[holes]) ** 2)))
    return scores


# --------------------------------------------------------------------------- checkpoints
# Fields that may differ between the run that wrote train_state.pt and the one resuming it: where data and
# files live, how often to log/validate/save, and how long to run do not change the numbers of a step; the
# thread count and the memory layout change only their summation order.
RESUME_FREE_FIELDS = frozenset(
    {
        "max_steps", "val_every", "checkpoint_every", "log_every", "device", "num_threads", "channels_last",
        "cache_data", "progress", "resume", "num_workers", "nyu_root", "nyu_split_file", "nyu_val_split_file",
        "maskcoco", "maskcoco_val", "val_size",
    }
)  # fmt: skip
_TEMPORARY_PATTERNS = (STATE_FILE + ".tmp*", "*.safetensors.*.tmp")


def _save_state(out_dir: Path, tokenizer, optimizer, cfg, step: int, history: list) -> None:
    """One all-or-nothing file (weights, optimizer, step, history, config), then ``last.safetensors``.

    ``train_state.pt`` alone is what a resume reads, and it is replaced in one ``os.replace``: a kill -9 at
    any point leaves either the previous complete state or the new one, never weights of one step with the
    optimizer of another. ``last.safetensors`` (the same weights, for users) is written after it.
    """
    model = {name: t.detach().cpu().clone() for name, t in tokenizer.state_dict().items()}
    check_finite(model, f"refusing to save step {step} to {out_dir / STATE_FILE}")
    state = {
        "format": "ait-tokenizer-train-state-v2",
        "step": step,
        "model": model,
        "optimizer": optimizer.state_dict(),
        "history": history,
        "config": cfg.to_dict(),
    }
    temporary = out_dir / (STATE_FILE + ".tmp")
    try:
        with open(temporary, "wb") as handle:
            torch_save_to(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        fault_point("tokenizer-save:state-temp-written", step)
        os.replace(temporary, out_dir / STATE_FILE)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise _write_error(out_dir / STATE_FILE, error) from error
    fault_point("tokenizer-save:state-replaced", step)
    extra = {"step": step, "train_config": cfg.to_dict()}
    try:
        save_tokenizer(tokenizer, out_dir / LAST_CHECKPOINT, extra=extra)
    except OSError as error:
        raise _write_error(out_dir / LAST_CHECKPOINT, error) from error
    fault_point("tokenizer-save:done", step)


def _write_error(path: Path, error: OSError) -> OSError:
    code = errno.errorcode.get(error.errno or 0, "")
    reason = error.strerror or str(error)
    return OSError(
        error.errno,
        f"cannot write {path}: {reason}{f' ({code})' if code else ''}; the previous checkpoint in "
        f"{path.parent} is kept: free space or choose another --out, then rerun to resume",
    )


def _load_state(out_dir: Path, tokenizer, optimizer, cfg: TokenizerTrainConfig) -> tuple[int, list]:
    """Restore a run from ``train_state.pt`` (tensors and plain data only: nothing in it can execute)."""
    return _apply_state(out_dir, _read_state(out_dir, tokenizer, cfg), tokenizer, optimizer)


def _read_state(out_dir: Path, tokenizer, cfg: TokenizerTrainConfig) -> dict:
    """``train_state.pt`` checked (readable, complete, this config, finite weights) but not applied yet."""
    path = out_dir / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a crafted pickle, a truncated or foreign file: refused, never executed
        from ait_tokenizer.original import load_error_reason

        raise ValueError(
            f"cannot resume from {path}: not a tokenizer training state ({load_error_reason(error)}); delete "
            f"{path} or pass --no-resume"
        ) from error
    missing = [
        key for key in ("step", "optimizer", "config") if not isinstance(state, dict) or key not in state
    ]
    if missing:
        raise ValueError(f"cannot resume from {path}: missing {missing}; delete it or pass --no-resume")
    saved_cfg = state["config"]
    current = cfg.to_dict()
    differ = sorted(
        key
        for key in set(saved_cfg) | set(current)
        if key not in RESUME_FREE_FIELDS and saved_cfg.get(key) != current.get(key)
    )
    if differ:
        shown = ", ".join(
            f"{k}: {saved_cfg.get(k)!r} (saved) vs {current.get(k)!r} (now)" for k in differ[:6]
        )
        raise ValueError(
            f"{out_dir} holds a run of another config ({shown}); use another --out, or --no-resume to "
            "replace that run"
        )
    if "model" in state:
        weights = state["model"]
    else:  # written before the state carried its weights: only if last.safetensors is of the same step
        last = out_dir / LAST_CHECKPOINT
        from ait_tokenizer.checkpoint import read_metadata

        if read_metadata(last)["extra"].get("step") != state["step"]:
            raise ValueError(
                f"cannot resume from {path}: {last} is of another step than the state; delete {out_dir} "
                "or pass --no-resume"
            )
        weights = load_tokenizer(last, expected_preset=tokenizer.preset).state_dict()
    check_finite(weights, path)
    return {**state, "model": weights}


def _apply_state(out_dir: Path, state: dict, tokenizer, optimizer) -> tuple[int, list]:
    path = out_dir / STATE_FILE
    try:
        tokenizer.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise ValueError(f"cannot resume from {path}: it does not fit this tokenizer ({error})") from error
    return int(state["step"]), list(state.get("history", []))


def _remove_temporaries(out_dir: Path) -> None:
    """Temporary files an interrupted (killed) save left behind."""
    for pattern in _TEMPORARY_PATTERNS:
        for path in out_dir.glob(pattern):
            path.unlink(missing_ok=True)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records of steps after ``step`` (written after the checkpoint a resume starts from)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        at = record.get("val", {}).get("step") if "val" in record else record.get("step")
        if isinstance(at, int) and at <= step:
            kept.append(line)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(temporary, path)


def _check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' requested but CUDA is not available on this machine: use --device cpu"
        )


def _prepare_out_dir(out_dir: Path, cfg: TokenizerTrainConfig) -> None:
    """Create ``out_dir`` and prove it writable before any time is spent; clear a replaced run's files."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".ait-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise _write_error(out_dir / "train_config.json", error) from error
    _remove_temporaries(out_dir)
    if not cfg.resume:  # --no-resume: this run replaces whatever run the folder held
        for name in (STATE_FILE, LAST_CHECKPOINT, FINAL_CHECKPOINT, METRICS_FILE):
            (out_dir / name).unlink(missing_ok=True)


# --------------------------------------------------------------------------- training
def _non_finite_tensor(tokenizer: torch.nn.Module) -> str | None:
    """Name of the first parameter or buffer holding NaN/inf, or None."""
    for name, tensor in itertools.chain(tokenizer.named_parameters(), tokenizer.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def _check_finite_step(bad: bool, runtime: Runtime, step: int, what: str, last_good: Path | None) -> None:
    """Raise NonFiniteTrainingError on every rank when any rank saw a non-finite value (a collective)."""
    if runtime.distributed:
        flag = torch.tensor([1.0 if bad else 0.0], device=runtime.device)
        dist.all_reduce(flag)
        bad = bool(flag.item() > 0)
    if bad:
        raise NonFiniteTrainingError(step, what, last_good)


def train_tokenizer(cfg: TokenizerTrainConfig, out_dir: str | os.PathLike) -> Path:
    """Train as ``cfg`` says, writing checkpoints and metrics to ``out_dir``; returns the final checkpoint."""
    return run_training(cfg, out_dir)[1]


def _training_dependencies() -> None:
    """Training needs the ``train`` extra; without it, say so before any work instead of failing mid-run."""
    import importlib.util

    missing = [name for name in ("tqdm", "ait_data", "ait_eval") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(
            f"tokenizer training needs {', '.join(missing)}, which is not installed: "
            "pip install './packages/ait-tokenizer[train]' (from a clone of the repository)",
            name=missing[0],
        )


def run_training(cfg: TokenizerTrainConfig, out_dir: str | os.PathLike) -> tuple[VQVAETokenizer, Path]:
    """``train_tokenizer`` that also returns this process's trained tokenizer (every rank holds one).

    ``out_dir`` is locked while the run writes into it: a second training into it refuses at once.
    """
    _training_dependencies()
    if int(os.environ.get("RANK", "0")) != 0:  # only the first process writes
        return _run_training(cfg, Path(out_dir))
    with RunLock(out_dir, "--out", "tokenizer training"):
        return _run_training(cfg, Path(out_dir))


def _run_training(cfg: TokenizerTrainConfig, out_dir: Path) -> tuple[VQVAETokenizer, Path]:
    from tqdm import tqdm

    cfg.validate()
    _check_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    runtime = setup_runtime(cfg.device)
    if runtime.main:
        _prepare_out_dir(out_dir, cfg)
        (out_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    if runtime.distributed:
        dist.barrier()

    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    tokenizer = create_tokenizer(cfg.tokenizer, **cfg.tokenizer_overrides).to(runtime.device).train()
    if cfg.channels_last:  # the input follows the weights' layout in every convolution
        tokenizer = tokenizer.to(memory_format=torch.channels_last)
    size = tokenizer_config(cfg.tokenizer, **cfg.tokenizer_overrides).input_size
    # a state that cannot be resumed fails before the data is built (rendering maps takes a while)
    saved_state = None
    if cfg.resume and (out_dir / STATE_FILE).is_file():
        saved_state = _read_state(out_dir, tokenizer, cfg)
    local_batch = per_process_batch(cfg.batch_size, runtime.world_size)
    train_set, val_set = build_datasets(cfg, tokenizer.kind, size)
    if len(train_set) < cfg.batch_size:
        raise ValueError(f"training set has {len(train_set)} samples, fewer than one step's {cfg.batch_size}")
    optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    optimizer = optimizer_class(tokenizer.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    sampler = DistributedSampler(
        train_set,
        num_replicas=runtime.world_size,
        rank=runtime.rank,
        shuffle=True,
        seed=cfg.seed,
        drop_last=True,
    )
    steps_per_epoch = len(sampler) // local_batch
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    if total_steps < 1:
        raise ValueError(
            f"tokenizer training config gives no step to train (epochs={cfg.epochs}, {steps_per_epoch} steps "
            f"per epoch of batch_size={cfg.batch_size}, max_steps={cfg.max_steps})"
        )

    step, history = 0, []
    last_good: Path | None = None
    if saved_state is not None:
        step, history = _apply_state(out_dir, saved_state, tokenizer, optimizer)
        last_good = out_dir / STATE_FILE
        if runtime.main:
            _truncate_metrics(out_dir / METRICS_FILE, step)
            # the resume rule of both tokenizer commands, said aloud: a run of this config continues
            print(
                f"resuming the run in {out_dir} from step {step} (--no-resume starts it over)",
                file=sys.stderr,
                flush=True,
            )

    bar = tqdm(
        total=total_steps, initial=step, disable=not (cfg.progress and runtime.main), desc=cfg.tokenizer
    )
    metrics_path = out_dir / METRICS_FILE
    started = time.perf_counter()
    while step < total_steps:
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        order = list(sampler)
        batches = [order[i * local_batch : (i + 1) * local_batch] for i in range(steps_per_epoch)]
        loader = DataLoader(
            train_set,
            batch_sampler=batches[step_in_epoch:],
            num_workers=cfg.num_workers,
            collate_fn=stack_batch,
        )
        for batch in loader:
            lr = learning_rate(cfg, step, epoch, step_in_epoch, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            seed = step_seed(cfg.seed, step, runtime.rank)
            # k-means seeds and dead-code restarts (rank 0's are broadcast) draw from the device's generator; on
            # the CPU, seeding only it skips torch.manual_seed's queued seeds for accelerators that never start
            if runtime.device.type == "cuda":
                torch.manual_seed(seed)
            else:
                torch.default_generator.manual_seed(seed)
            out = tokenizer(batch["x"].to(runtime.device), generator=torch.Generator().manual_seed(seed))
            _check_finite_step(not bool(torch.isfinite(out.loss.detach())), runtime, step + 1,
                               f"loss {out.loss.item():.4g}", last_good)  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            average_gradients(tokenizer, runtime.world_size)
            optimizer.step()
            broken = _non_finite_tensor(tokenizer)
            _check_finite_step(broken is not None, runtime, step + 1, f"non-finite {broken}", last_good)
            step += 1
            step_in_epoch += 1
            bar.update(1)

            if runtime.main and (step % cfg.log_every == 0 or step == total_steps):
                record = {
                    "step": step,
                    "epoch": epoch,
                    "lr": lr,
                    "loss": out.loss.item(),
                    "recon_loss": out.recon_loss.item(),
                    "commit_loss": out.commit_loss.item(),
                    **out.metrics,
                    "seconds": time.perf_counter() - started,
                }
                bar.set_postfix(loss=f"{record['loss']:.4f}", ppl=f"{out.metrics.get('perplexity', 0):.1f}")
                with metrics_path.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
            if runtime.main and ((cfg.val_every and step % cfg.val_every == 0) or step == total_steps):
                scores = {"step": step, **validate(tokenizer, val_set, device=runtime.device)}
                history.append(scores)
                with metrics_path.open("a") as handle:
                    handle.write(json.dumps({"val": scores}) + "\n")
                bar.write(f"step {step} validation: " + ", ".join(f"{k}={v:.4g}" for k, v in scores.items()))
            if runtime.main and (
                (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == total_steps
            ):
                _save_state(out_dir, tokenizer, optimizer, cfg, step, history)
                last_good = out_dir / STATE_FILE
            if step >= total_steps:
                break
    bar.close()

    final = out_dir / FINAL_CHECKPOINT
    if runtime.main:
        save_tokenizer(
            tokenizer, final, extra={"step": step, "train_config": cfg.to_dict(), "validation": history[-1:]}
        )
    if runtime.distributed:
        dist.barrier()
    return tokenizer, final


# --------------------------------------------------------------------------- command line
def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _key_values(pairs: list[str], what: str) -> dict:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"{what} expects key=value, got {pair!r}")
        values[key.replace("-", "_")] = _parse_value(value)
    return values


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both tokenizer commands share (``ait-tokenizer-train`` and ``ait tokenizer train``), so
    every hint an error gives (--out, --lr, --device, --no-resume) names a flag of the command that ran."""
    parser.add_argument("--out", type=Path, help="output folder (checkpoints, metrics)")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="any training config field, e.g. max_steps=100 nyu_root=data/nyu",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-resume",
        action="store_true",
        help="start over in --out (by default a run of the same config there is continued; a run of another "
        "config is refused)",
    )


_SHARED_FIELDS = ("epochs", "max_steps", "batch_size", "lr", "seed", "device")


def apply_training_arguments(cfg: TokenizerTrainConfig, args: argparse.Namespace) -> TokenizerTrainConfig:
    """``cfg`` with the shared options of ``add_training_arguments`` applied (``--cfg-options`` first)."""
    overrides = _key_values(args.cfg_options, "--cfg-options")
    for name in _SHARED_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    known = {f.name for f in dataclasses.fields(TokenizerTrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}; expected some of {sorted(known)}")
    cfg = dataclasses.replace(cfg, **overrides)
    if args.no_progress:
        cfg = dataclasses.replace(cfg, progress=False)
    if args.no_resume:
        cfg = dataclasses.replace(cfg, resume=False)
    return cfg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ait-tokenizer-train",
        description="Train an AiT VQ-VAE tokenizer: ait-tokenizer-train CONFIG --out DIR [--cfg-options KEY=VALUE ...]",
    )
    parser.add_argument(
        "config_name", nargs="?", metavar="CONFIG", choices=list_train_configs(),
        help=f"named training config: {', '.join(list_train_configs())} (default depth-small)",
    )  # fmt: skip
    parser.add_argument("--config", choices=list_train_configs(), help="the same as CONFIG")
    add_training_arguments(parser)
    parser.add_argument("--data", choices=["synthetic", "nyu", "maskcoco"], help="training data")
    parser.add_argument("--nyu-root", help="NYUv2 root (BTS split-file layout)")
    parser.add_argument("--nyu-split-file", help="NYUv2 training split file")
    parser.add_argument("--nyu-val-split-file", help="NYUv2 test split file (validation)")
    parser.add_argument("--maskcoco", help="maskcoco .npz (training)")
    parser.add_argument("--maskcoco-val", help="maskcoco .npz (validation)")
    parser.add_argument("--no-mask-aug", action="store_true", help="train without mask augmentation")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="the same as --cfg-options")
    parser.add_argument(
        "--tokenizer-set", nargs="*", default=[], metavar="KEY=VALUE", help="tokenizer overrides"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> TokenizerTrainConfig:
    if args.config_name and args.config and args.config_name != args.config:
        raise ValueError(f"two configs given ({args.config_name!r} and --config {args.config!r}): give one")
    if args.out is None:
        raise ValueError("ait-tokenizer-train needs --out DIR (the folder for checkpoints and metrics)")
    data = {}
    for name in ("data", "nyu_root", "nyu_split_file", "nyu_val_split_file", "maskcoco", "maskcoco_val"):
        value = getattr(args, name)
        if value is not None:
            data[name] = value
    cfg = train_config(args.config_name or args.config or "depth-small", **data)
    args.cfg_options = [*args.set, *args.cfg_options]
    cfg = apply_training_arguments(cfg, args)
    tokenizer_overrides = {**cfg.tokenizer_overrides, **_key_values(args.tokenizer_set, "--tokenizer-set")}
    if args.no_mask_aug:
        tokenizer_overrides["mask_ratio"] = 0.0
    return dataclasses.replace(cfg, tokenizer_overrides=tokenizer_overrides)


DEBUG_ENV = "AIT_DEBUG"  # AIT_DEBUG=1: show the full traceback instead of the one-line error


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> Path:
    """The command line; a failure is one ``ait: error: ...`` line and exit status 2 (AIT_DEBUG=1: traceback)."""
    import signal
    import threading

    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM stops like Ctrl-C
    try:
        cfg = config_from_args(args)
        final = train_tokenizer(cfg, args.out)
        if not dist.is_initialized() or dist.get_rank() == 0:
            print(f"final checkpoint: {final}", file=sys.stderr)
    except KeyboardInterrupt:
        print("ait: interrupted (rerun the same command to resume from the last checkpoint)", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        if os.environ.get(DEBUG_ENV):
            raise
        expected = isinstance(error, (ValueError, OSError, ArithmeticError, KeyError, ImportError))
        text = " ".join(str(error).split()) or type(error).__name__
        if not expected:
            text = f"unexpected {type(error).__name__}: {text} (rerun with {DEBUG_ENV}=1 for the traceback)"
        print(f"ait: error: {text}", file=sys.stderr)
        raise SystemExit(2 if expected else 1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return final


def cli(argv: list[str] | None = None) -> int:
    """The console script: `main`, then exit status 0 (a script's `sys.exit(main())` would turn the returned
    path into status 1); failures exit inside `main` with their one-line message."""
    main(argv)
    return 0


if __name__ == "__main__":
    main()
