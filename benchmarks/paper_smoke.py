"""Every paper config executed at paper size on the CPU: one training step and one evaluation pass each.

    python benchmarks/paper_smoke.py [--configs NAME ...] [--threads 1] [--out benchmarks/results/paper_smoke]
    python benchmarks/paper_smoke.py --render benchmarks/paper_smoke/paper_smoke.json   # table only

For each of the nine configs of the original release, in a fresh process (so memory figures see only it):

1. **Original-format weights.** The original's model (its `ARTransformer` neck/decoder, `<task>_head`s with
   their VQ-VAE copies, the SwinV2 backbone under the original's key names; restated in
   `packages/ait/tests/test_original_checkpoints.py`, reused from there) at the config's paper size, random
   weights (the original's init scales: normal 0.02 for linears and embeddings, LayerNorms at 1/0), saved
   as an mmcv runner file and loaded through the converter (`ait.engine.inference.load_solver`, strict:
   every key mapped or dropped with a reason, every one of ours filled).
2. **One training step per precision** (fp32, then bf16 autocast) on real images through the training
   data pipeline with the paper's augmentation: NYU frames of `fixtures/nyu_sample` (480x480 crops of
   480x640 Kinect frames with holes) and COCO images of `fixtures/coco_sample` (640 canvas, scale jitter),
   one image per task (the joint config: one NYU + one COCO image). AdamW with the config's layer decay and
   clipping. Checked: the loss is finite; every parameter the original trains receives a finite, non-zero
   gradient (AiT-P's mask embedding, which the autoregressive configs keep but never use, is the only one
   expected without); the frozen tokenizers receive none.
3. **One evaluation pass** in fp32: the NYU evaluation protocol on one 480x640 test frame (two 480-wide
   windows, each with its flip) and/or one COCO validation image through `predict_instances` (100 objects,
   nucleus sampling, masks pasted) and COCO evaluation. Checked: shapes, finite values, boxes inside the
   image, labels among the 80 classes, scores in [0, 1], one full-size boolean mask per object.

Measured per config and precision:
- `step_s`: wall seconds of the step (forward, backward, clip, AdamW), `--threads` torch threads;
- `activation_bytes`: bytes autograd saves for the backward pass (saved-tensor hooks, each storage counted
  once; parameters, buffers and the input batch excluded; under bf16 the per-step bf16 copies of the
  weights are counted apart as `weight_cast_bytes`), per image as `activation_bytes_per_image`. This is
  what a GPU must hold per image at the end of the forward pass, measured here on the CPU with the CPU's
  autocast (CUDA's fp16/bf16 autocast casts the same op families);
- `rss_growth_bytes`: growth of the process's peak resident set across the step (activations, gradients,
  AdamW state of the first step, allocator slack): context, not the GPU figure;
- `flops_per_image`: forward + backward FLOPs of the step (`torch.utils.flop_counter.FlopCounterMode`,
  counted in a separate pass), per image;
- `eval_s`: the evaluation pass.

The results JSON and a Markdown table go to `--out`; the committed copy is `benchmarks/paper_smoke/`.
The steps of the SwinV2-L and 640-px configs run with the backbone checkpointed (their saved activations
at fp32 exceed this machine's memory); the measuring passes see them without. Runtime on the shared 2-core
CPU: several minutes per config, hours for the nine, hence a benchmark and not a CI session.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
REFERENCE = ROOT / "packages" / "ait" / "tests" / "test_original_checkpoints.py"
PAPER_CONFIGS = [
    "swinv2b_480reso_depthonly",
    "swinv2b_480reso_parallel_depthonly",
    "swinv2b_480reso_depthonly_wosoft",
    "swinv2l_480reso_depthonly",
    "swinv2l_480reso_parallel_depthonly",
    "swinv2b_640reso_detonly",
    "swinv2b_640reso_inssegonly",
    "swinv2b_640reso_inssegonly_wosoft",
    "swinv2b_640reso_joint",
]
PRECISIONS = ("fp32", "bf16")


# ------------------------------------------------------------------------------------------ the data
def data_overrides(cfg_tasks: tuple[str, ...], work: Path, threads: int) -> dict:
    """The config's data keys pointed at the repository's fixtures: one image per task and step."""
    nyu = FIXTURES / "nyu_sample"
    (work / "nyu_train.txt").write_text(
        "".join(
            f"train_sync_metric3d/rgb_{i:05d}.jpg train_sync_metric3d/sync_depth_{i:05d}.png\n"
            for i in (0, 50, 100)
        )
    )
    (work / "nyu_test.txt").write_text(
        "test_official_densedepth/image_0.png test_official_densedepth/depth_0.png\n"
    )
    overrides = {
        "work_dir": str(work / "run"),
        "num_threads": threads,
        "data.eval_batch": 1,
        "data.num_workers": 0,
    }
    if "depth" in cfg_tasks:
        overrides.update(
            {
                "data.nyu_root": str(nyu),
                "data.nyu_train_split": str(work / "nyu_train.txt"),
                "data.nyu_test_split": str(work / "nyu_test.txt"),
                "data.depth_batch": 1,
            }
        )
    if {"insseg", "det"} & set(cfg_tasks):
        overrides.update(
            {
                "data.coco_root": str(FIXTURES / "coco_sample"),
                "data.coco_train_images": "train2017_tinycoco",
                "data.coco_train_ann": "annotations/instances_train2017_tinycoco6.json",
                "data.coco_val_images": "train2017_coco8",
                "data.coco_val_ann": "annotations/instances_train2017_coco8.json",
                "data.insseg_batch": 1,
            }
        )
    return overrides


# ------------------------------------------------------------------------------- original weights
def _reference_module():
    spec = importlib.util.spec_from_file_location("_original_reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_original_checkpoint(cfg, path: Path) -> dict:
    """A random model in the original's key layout at the config's paper size, saved as an mmcv file."""
    import torch

    from ait.model import build_task_solver

    ref = _reference_module()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained tokenizer presets: the original's heads carry copies
        ours = build_task_solver(cfg)
    model = cfg.model
    instance = "insseg" in model.tasks
    num_vocal = 2001 + 80 + 2 + 128 + 128 + (128 if instance else 0)
    grid = 15 if tuple(model.tasks) == ("depth",) else 20  # the original's n_rows/n_cols (480 or 640 px)
    transformer = ref.ARTransformer(
        ours.backbone.out_channels, 256, 8, 6, 6, 1024, num_vocal, 2100, grid, grid, model.parallel
    )
    reference = ref.AiT(ours.backbone, transformer, model.tasks, num_vocal)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # timm zero-initialises SwinV2's residual post-norms (no gradient reaches a block's weights until
        # they move); released or SimMIM-pretrained weights are not zero: perturb everything, norms near 1
        for name, tensor in ours.backbone.named_parameters():
            noise = torch.randn(tensor.shape, generator=generator) * 0.02
            is_norm_weight = "norm" in name and name.endswith(".weight")
            tensor.copy_(1.0 + noise if is_norm_weight else tensor + noise)
        for name, tensor in transformer.named_parameters():
            if name.endswith(".weight") and ("norm" in name or "_ln" in name or name.startswith("norm")):
                tensor.fill_(1.0)
            elif name.endswith(".bias") or name == "outp_bias":
                tensor.zero_()
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)
    state = ref.original_state_dict(reference)
    ref.save_mmcv(state, path)
    return {"original_keys": len(state), "original_parameters": sum(t.numel() for t in state.values())}


# ------------------------------------------------------------------------------------ measurements
class SavedTensorBytes:
    """Bytes autograd saves for backward (each storage once), apart from the model's own tensors."""

    def __init__(self, model, batch, keep: bool = True):
        import torch

        self.keep = keep

        self._skip = {
            t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()] if t.numel()
        }
        self._skip |= {
            v.untyped_storage().data_ptr()
            for task in batch.values()
            for v in task.values()
            if isinstance(v, torch.Tensor) and v.numel()
        }
        self._shapes = {tuple(p.shape) for p in model.parameters() if p.dim() > 1}
        self.seen: dict[int, int] = {}
        self.weight_casts: dict[int, int] = {}
        # pointer -> a weak reference to the tensor last saved there: with placeholders the saved tensors
        # are freed and a later one may reuse the address; the same address with its tensor alive is the
        # same storage saved twice
        self._alive: dict[int, weakref.ref] = {}
        self._total = {"seen": 0, "casts": 0}
        self._context = None

    def _pack(self, tensor):
        import torch

        if tensor.numel() and tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            pointer = storage.data_ptr()
            previous = self._alive.get(pointer)
            if pointer not in self._skip and (previous is None or previous() is None):
                low = tensor.dtype in (torch.bfloat16, torch.float16)
                kind = "casts" if low and tuple(tensor.shape) in self._shapes else "seen"
                self._total[kind] += storage.nbytes()
                self._alive[pointer] = weakref.ref(tensor)
        return tensor if self.keep else _Placeholder()

    def __enter__(self):
        import torch

        self._context = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._context.__enter__()
        return self

    def __exit__(self, *exc):
        self._context.__exit__(*exc)

    def _unpack(self, packed):
        if isinstance(packed, _Placeholder):
            raise RuntimeError("a measuring pass has no backward")
        return packed

    @property
    def bytes(self) -> int:
        return self._total["seen"]

    @property
    def weight_cast_bytes(self) -> int:
        return self._total["casts"]


class _Placeholder:
    __slots__ = ()


def measure_forward(solver, batch, precision: str, count_flops: bool = False) -> dict:
    """A forward pass in training mode that records what autograd would save, without keeping it.

    Saved tensors are replaced by placeholders (so even 640-px images at fp32 fit this machine); no
    backward. Per backbone block: the bytes saved inside it and its input, from which the saved bytes
    under activation checkpointing follow (`checkpointed_bytes`): everything outside the blocks, every
    block's input (what checkpointing keeps) and the largest block's own bytes (recomputed one block at a
    time in the backward pass).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    solver.train()
    counter = SavedTensorBytes(solver, batch, keep=False)
    blocks = [block for stage in solver.backbone.layers for block in stage.blocks]
    marks: dict[int, list] = {}
    handles = []
    for index, block in enumerate(blocks):

        def before(module, args, _index=index):
            marks.setdefault(_index, []).append([counter.bytes, args[0].untyped_storage().nbytes(), None])

        def after(module, args, output, _index=index):
            marks[_index][-1][2] = counter.bytes

        handles += [block.register_forward_pre_hook(before), block.register_forward_hook(after)]
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    )
    flops = FlopCounterMode(display=False) if count_flops else contextlib.nullcontext()
    checkpointing = [stage.grad_checkpointing for stage in solver.backbone.layers]
    solver.backbone.set_grad_checkpointing(False)
    try:
        with counter, autocast, flops:
            solver.training_step(batch)
    finally:
        for handle in handles:
            handle.remove()
        for stage, enabled in zip(solver.backbone.layers, checkpointing, strict=True):
            stage.grad_checkpointing = enabled
    inside = [end - start for runs in marks.values() for start, _, end in runs]
    inputs = [size for runs in marks.values() for _, size, _ in runs]
    total = counter.bytes
    images = _images(batch)
    out = {
        "precision": precision,
        "activation_bytes_per_image": total / images,
        "weight_cast_bytes": counter.weight_cast_bytes,
        "backbone_block_bytes_per_image": sum(inside) / images,
        "checkpointed_bytes_per_image": (total - sum(inside) + sum(inputs) + max(inside)) / images,
    }
    if count_flops:
        out["forward_flops_per_image"] = flops.get_total_flops() / images
    return out


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _images(batch) -> int:
    return sum(int(task["image"].shape[0]) for task in batch.values())


def check_gradients(solver) -> dict:
    """Trainable parameters without a finite non-zero gradient, and whether a frozen tensor got one."""
    import torch

    missing, non_finite = [], []
    for name, parameter in solver.named_parameters():
        if not parameter.requires_grad:
            if parameter.grad is not None:
                raise AssertionError(f"frozen {name} received a gradient")
            continue
        grad = parameter.grad
        if grad is None or not bool(grad.abs().sum() > 0):
            missing.append(name)
        elif not bool(torch.isfinite(grad).all()):
            non_finite.append(name)
    frozen = [n for n, p in solver.named_parameters() if not p.requires_grad]
    return {"without_gradient": missing, "non_finite_gradient": non_finite, "frozen": len(frozen)}


def expected_without_gradient(cfg) -> list[str]:
    # AiT-P's mask embedding: kept in every config for one checkpoint layout, used only by parallel tasks
    if any(cfg.model.decoding_mode(task) == "parallel" for task in cfg.model.tasks):
        return []
    return ["decoder.mask_embed"]


def training_step(solver, optimizer, batch, cfg, precision: str, count_flops: bool) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    solver.train()
    optimizer.zero_grad(set_to_none=True)
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    )
    flops = FlopCounterMode(display=False) if count_flops else contextlib.nullcontext()
    rss_before = _peak_rss_bytes()
    start = time.perf_counter()
    with flops:
        with autocast:
            out = solver.training_step(batch)
        loss = out["loss"]
        loss.float().backward()
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip or math.inf))
    gradients = check_gradients(solver)
    optimizer.step()
    seconds = time.perf_counter() - start
    images = _images(batch)
    parts = {k: float(v) for k, v in out.items() if k != "loss" and isinstance(v, (int, float))}
    record = {
        "precision": precision,
        "images": images,
        "loss": float(loss.detach()),
        "loss_finite": bool(torch.isfinite(loss.detach()).all()),
        "parts": parts,
        "grad_norm": grad_norm,
        "step_s": seconds,
        "rss_growth_bytes": max(0, _peak_rss_bytes() - rss_before),
        **gradients,
    }
    if count_flops:
        record["step_flops"] = int(flops.get_total_flops())
    return record


def evaluation_pass(solver, cfg) -> dict:
    """One image per task through the evaluation protocol, with the checks of the module doc."""
    import torch

    from ait.data import build_eval_loader, coco_ground_truth
    from ait.evaluation import evaluate_depth, evaluate_instances

    solver.eval()
    out: dict = {}
    for task in cfg.model.tasks:
        loader = build_eval_loader(cfg, task)
        start = time.perf_counter()
        if task == "depth":
            windows = []
            predict = solver.predict_depth

            def capture(images, _predict=predict, _windows=windows):
                pred = _predict(images)
                _windows.append((tuple(images.shape), tuple(pred.shape), pred))
                return pred

            solver.predict_depth = capture
            try:
                metrics = evaluate_depth(solver, loader, cfg.eval, max_batches=1)
            finally:
                del solver.predict_depth
            image_shape = tuple(next(iter(loader))["image"].shape)
            preds = torch.cat([p for _, _, p in windows])
            checks = {
                "input_shape": list(image_shape),
                "window_calls": [[list(i), list(o)] for i, o, _ in windows],
                "windows_match_inputs": all(
                    i[0] == o[0] and i[2:] == o[2:] and o[1] == 1 for i, o, _ in windows
                ),
                "finite": bool(torch.isfinite(preds).all()),
                "depth_min": float(preds.min()),
                "depth_max": float(preds.max()),
                "metrics_finite": all(math.isfinite(float(v)) for v in metrics.values()),
            }
            out["depth"] = {"eval_s": time.perf_counter() - start, "rmse": metrics["rmse"], **checks}
        else:
            results = []
            predict = solver.predict_instances

            def capture(*args, _predict=predict, _results=results, **kwargs):
                found = _predict(*args, **kwargs)
                _results.extend(found)
                return found

            solver.predict_instances = capture
            generator = torch.Generator().manual_seed(cfg.seed)
            try:
                coco = evaluate_instances(
                    solver, loader, coco_ground_truth(cfg), cfg.eval, generator=generator, max_batches=1
                )
            finally:
                del solver.predict_instances
            batch = next(iter(loader))
            height, width = (int(v) for v in torch.as_tensor(batch["orig_size"]).reshape(-1)[:2])
            result = results[0]
            boxes, scores, labels = result["boxes"], result["scores"], result["labels"]
            checks = {
                "image_size": [height, width],
                "objects": int(boxes.shape[0]),
                "boxes_inside_image": bool(
                    (boxes[:, 0] >= 0).all()
                    and (boxes[:, 1] >= 0).all()
                    and (boxes[:, 2] <= width).all()
                    and (boxes[:, 3] <= height).all()
                    and (boxes[:, 2] >= boxes[:, 0]).all()
                    and (boxes[:, 3] >= boxes[:, 1]).all()
                ),
                "labels_in_classes": bool(((labels >= 0) & (labels < 80)).all()),
                "scores_in_unit_interval": bool(((scores >= 0) & (scores <= 1)).all()),
                "finite": bool(torch.isfinite(boxes).all() and torch.isfinite(scores).all()),
            }
            if task == "insseg":
                masks = result["masks"]
                checks["masks_shape"] = list(masks.shape)
                checks["masks_full_size_bool"] = masks.dtype == torch.bool and tuple(masks.shape) == (
                    boxes.shape[0],
                    height,
                    width,
                )
            out[task] = {
                "eval_s": time.perf_counter() - start,
                "box_ap": coco["bbox"]["AP"],
                **checks,
            }
    return out


def run_one(name: str, threads: int, precisions: tuple[str, ...], flops: bool) -> dict:
    import torch

    from ait.config import create_config
    from ait.data import build_task_streams
    from ait.engine.inference import load_solver
    from ait.engine.optim import build_optimizer

    torch.set_num_threads(threads)
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="paper_smoke_") as tmp:
        work = Path(tmp)
        base = create_config(name)
        cfg = create_config(name, data_overrides(tuple(base.model.tasks), work, threads))
        record: dict = {"config": name, "tasks": list(cfg.model.tasks), "threads": threads}
        start = time.perf_counter()
        record.update(write_original_checkpoint(cfg, work / "original.pth"))
        solver, cfg = load_solver(work / "original.pth", cfg)  # the converter, strict
        record["convert_s"] = time.perf_counter() - start
        record["trainable_parameters"] = sum(p.numel() for p in solver.parameters() if p.requires_grad)
        record["frozen_bytes"] = sum(
            t.numel() * t.element_size()
            for t in [*(p for p in solver.parameters() if not p.requires_grad), *solver.buffers()]
        )
        record["expected_without_gradient"] = expected_without_gradient(cfg)
        batch = build_task_streams(cfg).next_batch()
        images = _images(batch)
        record["batch"] = {task: list(b["image"].shape) for task, b in batch.items()}
        record["measured"] = [
            measure_forward(solver, batch, p, count_flops=flops and p == "fp32") for p in precisions
        ]
        # SwinV2-L and 640-px steps save 8-20 GB per image at fp32: more than this machine has beside its
        # neighbours, so they run with the backbone checkpointed (what the 8 x 40 GB recipes use)
        large = max(size for b in batch.values() for size in b["image"].shape[-2:]) > 480
        checkpointing = large or solver.backbone.out_channels > 1024
        cfg.model.backbone_grad_checkpointing = checkpointing
        solver.backbone.set_grad_checkpointing(checkpointing)
        record["backbone_grad_checkpointing"] = checkpointing
        # dropout and stochastic depth off for the steps: with one image a dropped residual branch gets an
        # exactly zero gradient, and the check below is about parameters the graph does not reach
        for module in solver.modules():
            if isinstance(module, torch.nn.Dropout) or type(module).__name__ == "DropPath":
                for attribute in ("p", "drop_prob"):
                    if hasattr(module, attribute):
                        setattr(module, attribute, 0.0)
        optimizer = build_optimizer(solver, cfg.optim)
        # FlopCounterMode keeps what checkpointing would free (measured: 6.6 instead of 1.9 GB for one
        # 480-px image), so a checkpointed step is not counted: forward counted, backward taken as 2x it
        record["steps"] = [
            training_step(
                solver, optimizer, batch, cfg, p, count_flops=flops and p == "fp32" and not checkpointing
            )
            for p in precisions
        ]
        if flops:
            counted = [s for s in record["steps"] if "step_flops" in s]
            forward = next(m for m in record["measured"] if "forward_flops_per_image" in m)
            if counted:
                record["flops_per_image"] = counted[0]["step_flops"] / images
                record["flops_method"] = "counted (forward + backward)"
            else:
                record["flops_per_image"] = 3 * forward["forward_flops_per_image"]
                record["flops_method"] = "forward counted, backward projected as 2x forward"
        cfg.eval.flip = False  # the smoke keeps the two sliding windows, not their mirror images
        record["eval"] = evaluation_pass(solver, cfg)
        record["peak_rss_bytes"] = _peak_rss_bytes()
        record["wall_s"] = time.perf_counter() - wall
    record["ok"] = verdict(record)
    return record


def verdict(record: dict) -> bool:
    steps_ok = all(
        s["loss_finite"]
        and sorted(s["without_gradient"]) == sorted(record["expected_without_gradient"])
        and not s["non_finite_gradient"]
        for s in record["steps"]
    )
    evals_ok = all(all(v for k, v in e.items() if isinstance(v, bool)) for e in record["eval"].values())
    return steps_ok and evals_ok


# ---------------------------------------------------------------------------------------------- report
def _gib(value: float) -> str:
    return f"{value / 2**30:.2f}"


def render(results: dict) -> str:
    lines = [
        f"Paper configs at paper size on the CPU ({results['machine']}, {results['threads']} torch "
        f"thread(s), {results['date']}, commit {results['commit']}); `{results['command']}`.",
        "",
        "| config | images | fp32 step s | bf16 step s | backbone ckpt in the step | saved activations "
        "per image fp32 / bf16 GiB | with backbone ckpt, bf16 GiB | GFLOP per image (fwd + bwd) | eval s "
        "| loss fp32 / bf16 | checks |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results["configs"]:
        if "error" in r:
            lines.append(f"| {r['config']} | | | | | | | | | | error: {r['error'][:100]} |")
            continue
        steps = {s["precision"]: s for s in r["steps"]}
        measured = {m["precision"]: m for m in r["measured"]}

        def get(table, precision, key, fmt):
            return fmt(table[precision][key]) if precision in table else "-"

        eval_s = sum(e["eval_s"] for e in r["eval"].values())
        images = next(iter(steps.values()))["images"]
        flops = f"{r['flops_per_image'] / 1e9:.0f}" if "flops_per_image" in r else "-"
        fp32_loss = get(steps, "fp32", "loss", lambda v: f"{v:.2f}")
        bf16_loss = get(steps, "bf16", "loss", lambda v: f"{v:.2f}")
        lines.append(
            f"| {r['config']} | {images} "
            f"| {get(steps, 'fp32', 'step_s', lambda v: f'{v:.0f}')} "
            f"| {get(steps, 'bf16', 'step_s', lambda v: f'{v:.0f}')} "
            f"| {'on' if r['backbone_grad_checkpointing'] else 'off'} "
            f"| {get(measured, 'fp32', 'activation_bytes_per_image', _gib)} / "
            f"{get(measured, 'bf16', 'activation_bytes_per_image', _gib)} "
            f"| {get(measured, 'bf16', 'checkpointed_bytes_per_image', _gib)} "
            f"| {flops} | {eval_s:.0f} | {fp32_loss} / {bf16_loss} "
            f"| {'pass' if r['ok'] else 'FAIL'} |"
        )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- 8-GPU projection
# Everything below is a projection from the CPU measurements plus the stated assumptions; docs/SCALING.md
# is this function's output with the committed results.
GPUS = 8
CAPACITY_GIB = {"80 GB": 80.0, "40 GB": 40.0}
RESERVE_GIB = 3.0  # CUDA context, cuDNN/cuBLAS workspaces, NCCL buffers (assumption)
BYTES_PER_TRAINABLE = 20  # fp32 weight 4 + gradient 4 + DDP bucket copy 4 + AdamW moments 8
TRANSIENT = 1.25  # backward-pass temporaries and allocator slack on top of the saved activations (assumption)
PEAK_TFLOPS = {  # dense tensor-core peaks (TFLOP/s): fp16/bf16, and fp32 matmuls through TF32
    "A100": {"half": 312.0, "fp32": 156.0},
    "H100": {"half": 989.0, "fp32": 495.0},
    "V100": {"half": 125.0, "fp32": 15.7},  # no TF32: plain fp32
}
# model FLOP utilisation assumed for a SwinV2 + transformer-decoder training step: windowed attention,
# LayerNorms, window partition/roll and softmax are memory-bound, so a fraction of the tensor-core peak
MFU = 0.15
# the original's GPUs per config (its README's launch commands) and per-GPU images (global / GPUs)
ORIGINAL_GPUS = {"depth": 8, "det": 32, "insseg": 16, "joint": 64}


def _kind(cfg_tasks: list[str]) -> str:
    return "joint" if len(cfg_tasks) == 2 else cfg_tasks[0]


def recipe(record: dict, capacity_gib: float, precision: str) -> dict:
    """Images per GPU, accumulation and checkpointing that keep the config's global batch on 8 GPUs."""
    from ait.config import create_config
    from ait.config.validation import global_images_per_step

    cfg = create_config(record["config"])
    total = global_images_per_step(cfg)
    share = total // GPUS
    measured = {m["precision"]: m for m in record["measured"]}
    source = measured["fp32" if precision == "fp32" else "bf16"]
    fixed = record["trainable_parameters"] * BYTES_PER_TRAINABLE + record.get("frozen_bytes", 0)
    if precision != "fp32":
        fixed += source["weight_cast_bytes"]
    usable = capacity_gib * 2**30 - RESERVE_GIB * 2**30 - fixed
    divisors = [n for n in range(1, share + 1) if share % n == 0]
    for checkpointing, key in ((False, "activation_bytes_per_image"), (True, "checkpointed_bytes_per_image")):
        per_image = source[key] * TRANSIENT
        fitting = [n for n in divisors if n * per_image <= usable]
        if fitting:
            n = max(fitting)
            return {
                "images_per_gpu": n,
                "accumulate": share // n,
                "checkpointing": checkpointing,
                "per_image_gib": source[key] / 2**30,
                "peak_gib": (fixed + n * per_image) / 2**30 + RESERVE_GIB,
                "share": share,
                "total": total,
            }
    return {"images_per_gpu": 0, "share": share, "total": total, "checkpointing": True}


def scaling(results: dict) -> str:
    from ait.config import create_config

    lines = []
    rows = [r for r in results["configs"] if "error" not in r]
    lines += [
        "| config | global batch (8 GPUs: per GPU) | precision | saved activations per image, "
        "measured fp32 / projected fp16 = bf16 (GiB) | with backbone checkpointing fp32 / half (GiB) "
        "| 8 x 80 GB: images per GPU x accumulation, checkpointing | 8 x 40 GB: same "
        "| TFLOP per step | projected hours, 8 x A100 / 8 x H100 | the original: GPUs x images per GPU | "
        "projected hours on the original's GPUs if V100 / if A100 |",
        "|---|---|---|---:|---:|---|---|---:|---:|---|---:|",
    ]
    for r in rows:
        cfg = create_config(r["config"])
        precision = "fp32" if cfg.optim.amp in ("none", False) else str(cfg.optim.amp)
        measured = {m["precision"]: m for m in r["measured"]}
        cells = []
        for capacity in CAPACITY_GIB.values():
            plan = recipe(r, capacity, precision)
            if not plan["images_per_gpu"]:
                cells.append("does not fit")
            else:
                cells.append(
                    f"{plan['images_per_gpu']} x {plan['accumulate']}, "
                    f"{'on' if plan['checkpointing'] else 'off'} ({plan['peak_gib']:.0f} GiB)"
                )
        plan80 = recipe(r, 80.0, precision)
        total = plan80["total"]
        # checkpointing recomputes the backbone's forward: bounded by the whole forward (the backbone is
        # nearly all of it: 95 % of the forward FLOPs at 640 px)
        recompute = measured["fp32"]["forward_flops_per_image"] if plan80["checkpointing"] else 0.0
        step_flops = total * (r["flops_per_image"] + recompute)
        peak = "fp32" if precision == "fp32" else "half"

        def hours(gpus, gpu, flops=step_flops, peak=peak, iters=cfg.optim.max_iters):
            return iters * flops / (gpus * PEAK_TFLOPS[gpu][peak] * 1e12 * MFU) / 3600

        kind = _kind(list(cfg.model.tasks))
        original_gpus = ORIGINAL_GPUS[kind]
        plain = total * r["flops_per_image"]  # the original ran without checkpointing
        lines.append(
            f"| {r['config']} | {total} ({plan80['share']}) | {precision} "
            f"| {_gib(measured['fp32']['activation_bytes_per_image'])} / "
            f"{_gib(measured['bf16']['activation_bytes_per_image'])} "
            f"| {_gib(measured['fp32']['checkpointed_bytes_per_image'])} / "
            f"{_gib(measured['bf16']['checkpointed_bytes_per_image'])} "
            f"| {cells[0]} | {cells[1]} | {step_flops / 1e12:.0f} "
            f"| {hours(GPUS, 'A100'):.1f} / {hours(GPUS, 'H100'):.1f} "
            f"| {original_gpus} x {total // original_gpus} "
            f"| {hours(original_gpus, 'V100', plain):.1f} / {hours(original_gpus, 'A100', plain):.1f} |"
        )
    return "\n".join(lines) + "\n"


def _normalise(record: dict) -> dict:
    """Records of the script before FLOPs were kept out of checkpointed steps: same figure definitions."""
    if "error" in record or "flops_method" in record or "flops_per_image" not in record:
        return record
    if record["backbone_grad_checkpointing"]:
        forward = next(m for m in record["measured"] if "forward_flops_per_image" in m)
        record["flops_with_recompute_per_image"] = record["flops_per_image"]
        record["flops_per_image"] = 3 * forward["forward_flops_per_image"]
        record["flops_method"] = "forward counted, backward projected as 2x forward"
        for step in record["steps"]:
            step["note"] = "timed with FlopCounterMode active (its memory growth is not the step's own)"
    else:
        record["flops_method"] = "counted (forward + backward)"
    return record


def _machine() -> str:
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {os.cpu_count()} cores"


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=PAPER_CONFIGS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP-counting pass")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "paper_smoke")
    parser.add_argument("--render", type=Path, help="print the table of a results JSON and exit")
    parser.add_argument(
        "--scaling", type=Path, help="print docs/SCALING.md's projection table from a results JSON and exit"
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        help="results JSONs of runs over disjoint configs: one table in --out",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: one config, JSON on stdout
    args = parser.parse_args(argv)

    if args.render:
        print(render(json.loads(args.render.read_text())), end="")
        return 0
    if args.scaling:
        print(scaling(json.loads(args.scaling.read_text())), end="")
        return 0
    if args.merge:
        parts = [json.loads(path.read_text()) for path in args.merge]
        merged = {**parts[0], "configs": [], "command": " ; ".join(p["command"] for p in parts)}
        by_name = {r["config"]: _normalise(r) for p in parts for r in p["configs"]}
        merged["configs"] = [by_name[name] for name in PAPER_CONFIGS if name in by_name]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "paper_smoke.json").write_text(json.dumps(merged, indent=1))
        (args.out / "paper_smoke.md").write_text(render(merged))
        print(render(merged), end="")
        return 0
    if args.one:
        warnings.simplefilter("ignore")
        record = run_one(args.one, args.threads, tuple(args.precisions), not args.no_flops)
        print("RESULT " + json.dumps(record))
        return 0

    unknown = sorted(set(args.configs) - set(PAPER_CONFIGS))
    if unknown:
        parser.error(f"not a paper config: {unknown}; choose among {PAPER_CONFIGS}")
    results = {
        "machine": _machine(),
        "threads": args.threads,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "command": "python benchmarks/paper_smoke.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "configs": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    for name in args.configs:
        command = [sys.executable, __file__, "--one", name, "--threads", str(args.threads)]
        command += ["--precisions", *args.precisions] + (["--no-flops"] if args.no_flops else [])
        print(f"{name} ...", flush=True)
        proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not found:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            record = {"config": name, "error": tail[0], "ok": False}
        else:
            record = json.loads(found[-1][len("RESULT ") :])
        results["configs"].append(record)
        print(
            f"  {'pass' if record['ok'] else 'FAIL'}"
            + (f" ({record['wall_s']:.0f} s)" if "wall_s" in record else f": {record.get('error')}"),
            flush=True,
        )
        (args.out / "paper_smoke.json").write_text(json.dumps(results, indent=1))
    table = render(results)
    (args.out / "paper_smoke.md").write_text(table)
    print(table, end="")
    return 0 if all(r["ok"] for r in results["configs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
