"""Overfit runs: a small task-solver learns a handful of fixed images through the whole chain.

Used by the overfit proofs (`integration_tests/test_overfit.py`) and by the regression benchmark
(`benchmarks/bench_quality.py`, whose box AP `bench_check` guards). A bug anywhere in sequence building ->
loss -> decoding -> parsing -> mask decoding -> pasting -> pycocotools keeps AP near zero however long the
solver trains; a working chain reaches AP near 1 on images it has memorised.

The frozen mask tokenizer is fitted on the same images' box crops (the targets the solver's mask tokens are
cut from): the solver cannot beat its tokenizer, and one trained for minutes on other rooms would cap the
mask AP for reasons that are not the chain's. Everything is seeded; call it with one torch thread for
figures that repeat across machines.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ait.config import create_config
from ait.data import TransformedDataset, _collate, _transform, build_raw_dataset
from ait.engine import Trainer
from ait.evaluation import evaluate_instances
from ait.model.instance_head import crop_masks
from ait_tokenizer import create_tokenizer, save_tokenizer

__all__ = [
    "FIT_SETTINGS",
    "INSSEG_OVERRIDES",
    "eval_set",
    "fit_mask_tokenizer",
    "fit_tokenizer",
    "overfit_synthetic_instances",
]

# How every overfit run trains: no augmentation (each step sees the same images), a short warm-up, a high
# lr without weight decay, no checkpoints, one thread.
FIT_SETTINGS = {
    "data.augment": False,
    "optim.warmup_iters": 10,
    "optim.lr": 2e-3,
    "optim.weight_decay": 0.0,
    "checkpoint_interval": 0,
    "log_interval": 100,
    "num_threads": 1,
}
# A solver of the tiny CPU family, a little wider, on rooms of 3-8 objects (every object fits the 8-object
# sequence); each step sees the same images with new random padding.
INSSEG_OVERRIDES = {
    **FIT_SETTINGS,
    "model.max_objects": 8,
    "model.d_model": 128,
    "model.dim_feedforward": 256,
    "data.synthetic_objects": (3, 8),
    "optim.max_iters": 500,
}


def eval_set(cfg, raw, task: str, indices: list[int]) -> TransformedDataset:
    """The training images again, through the evaluation transform (no augmentation, no crop)."""
    subset = torch.utils.data.Subset(raw, indices)
    return TransformedDataset(subset, _transform(cfg, task, train=False), cfg.seed, task)


def fit_tokenizer(preset: str, maps: torch.Tensor, path: Path, steps: int, seed: int = 0) -> Path:
    """A tokenizer preset fitted (Adam 1e-3, full batch, its own mask augmentation) to `maps` (B, 1, H, W)."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, received {steps}")
    torch.manual_seed(seed)
    tokenizer = create_tokenizer(preset).train()
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=1e-3)
    for step in range(steps):
        out = tokenizer(maps, generator=torch.Generator().manual_seed(seed * 100_003 + step))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
    save_tokenizer(tokenizer.eval(), path)
    return path


def fit_mask_tokenizer(batch: dict, path: Path, steps: int, seed: int = 0) -> Path:
    """mask-small fitted to the box crops the solver's targets are cut from (roi_align 64x64, as training)."""
    crops = []
    for masks, boxes in zip(batch["masks"], batch["boxes"], strict=True):
        rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes.float()], 1)
        crops.append(crop_masks(torch.as_tensor(masks), rois, (64, 64)))
    return fit_tokenizer("mask-small", torch.cat(crops), path, steps, seed)


def overfit_synthetic_instances(
    work_dir: str | Path,
    rooms: int = 8,
    solver_steps: int = 500,
    tokenizer_steps: int = 300,
    seed: int = 0,
    overrides: dict | None = None,
) -> dict:
    """Train on `rooms` fixed synthetic rooms, decode autoregressively, score on those rooms.

    `overrides`: dotted config keys applied last (the ablations switch the soft mask loss off with
    `{"loss.mask_aux_weight": 0.0}`, or soft tokens altogether with `{"model.soft_token": False}`).

    Returns {"bbox": {...}, "segm": {...}, "seconds": {"tokenizer", "solver", "eval"}, "max_objects_in_a_room"}.
    """
    if rooms <= 0 or solver_steps <= 0:
        raise ValueError(f"rooms and solver_steps must be positive, received {rooms} and {solver_steps}")
    from ait_data import to_coco_dict

    work_dir = Path(work_dir)
    start = time.perf_counter()
    settings = {
        **INSSEG_OVERRIDES,
        "data.synthetic_train_length": rooms,
        "data.insseg_batch": rooms,
        "optim.max_iters": solver_steps,
        "optim.warmup_iters": min(INSSEG_OVERRIDES["optim.warmup_iters"], solver_steps),
        "seed": seed,
        "work_dir": str(work_dir / "solver"),
        **(overrides or {}),
    }
    cfg = create_config("cpu_insseg_tiny", settings)
    raw = build_raw_dataset(cfg, "insseg", "train")
    images = eval_set(cfg, raw, "insseg", list(range(rooms)))
    batch = _collate([images[i] for i in range(rooms)])
    fit_mask_tokenizer(batch, work_dir / "mask.safetensors", steps=tokenizer_steps, seed=seed)
    cfg.model.mask_tokenizer.checkpoint = str(work_dir / "mask.safetensors")
    fitted = time.perf_counter()

    trainer = Trainer(cfg, evaluate=False, log=lambda message: None)
    trainer.train()
    solver = trainer.model.eval()
    trained = time.perf_counter()

    metrics = evaluate_instances(
        solver,
        torch.utils.data.DataLoader(images, batch_size=rooms, collate_fn=_collate),
        to_coco_dict(raw.base, list(range(rooms))),
        label_to_category_id=raw.label_to_category_id,
        generator=torch.Generator().manual_seed(seed),  # nucleus sampling (top-p), seeded
    )
    return {
        **metrics,
        "seconds": {
            "tokenizer": fitted - start,
            "solver": trained - fitted,
            "eval": time.perf_counter() - trained,
        },
        "max_objects_in_a_room": max(len(labels) for labels in batch["labels"]),
    }
