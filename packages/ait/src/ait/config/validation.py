"""Range and consistency checks of a `Config` (what `Config.validate()` runs)."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from ait.config.overrides import ConfigError
from ait_decoder import DECODING_WEIGHTS
from ait_decoder.sequences import DUPLICATE_BOXES, OBJECT_ORDERS

if TYPE_CHECKING:
    from ait.config.schema import Config

TASKS = ("depth", "insseg", "det")
DATASETS = ("synthetic", "nyu", "coco", "joint")
SCHEDULES = ("step", "linear", "constant")
DECODING_MODES = ("autoregressive", "parallel")  # model.decoding values: AiT / AiT-P
AMP_MODES = ("fp16", "bf16", "none")  # optim.amp (ait.engine.precision; true/false = fp16/none)
SOFT_LOOKUP_BACKENDS = ("auto", "triton", "torch")  # model.soft_lookup (ait_tokenizer.soft_lookup)
COORDINATE_EMBEDDINGS = ("learned", "sine")  # model.coordinate_embedding (ait.model.solver)
# which tasks each dataset kind can feed
DATASET_TASKS = {
    "synthetic": {"depth", "insseg", "det"},
    "nyu": {"depth"},
    "coco": {"insseg", "det"},
    "joint": {"depth", "insseg", "det"},
}


def _check(condition: bool, key: str, expected: str, value: object) -> None:
    if not condition:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _backbone_stride(m) -> int | None:
    """Total stride of model.backbone's preset (patch size x 2 per later stage); None if not a preset name."""
    from ait_backbone import get_preset

    try:
        preset = get_preset(
            m.backbone, **{k: v for k, v in m.backbone_overrides.items() if k == "patch_size"}
        )
    except (KeyError, ValueError, TypeError):
        return None
    return preset.patch_size * 2 ** (len(preset.depths) - 1)


def global_images_per_step(cfg: Config) -> int:
    """Images of all tasks in one global batch (what every optimiser step consumes over all processes)."""
    tasks = set(cfg.model.tasks)
    return (cfg.data.depth_batch if "depth" in tasks else 0) + (
        cfg.data.insseg_batch if tasks & {"insseg", "det"} else 0
    )


def resolve_accumulation(cfg: Config, world_size: int) -> int:
    """Micro-batches per optimiser step on `world_size` processes; ConfigError when they cannot be equal.

    `data.images_per_gpu` (when set) fixes the count: the per-process share of the global batch divided by
    it. Otherwise `optim.accumulate`. With more than one micro-batch every process runs the same number of
    images per pass (the original's rule for its per-GPU batch: the global batch divides evenly), so the
    memory a pass needs is known in advance.
    """
    d, o = cfg.data, cfg.optim
    total = global_images_per_step(cfg)
    if d.images_per_gpu is not None:
        if total % world_size:
            raise ConfigError(
                f"data.images_per_gpu: the global batch of {total} images does not split evenly over "
                f"{world_size} processes; leave data.images_per_gpu unset (None) or use a process count "
                f"that divides {total}"
            )
        share = total // world_size
        divisors = [n for n in range(1, share + 1) if share % n == 0]
        _check(
            share % d.images_per_gpu == 0,
            "data.images_per_gpu",
            f"a divisor of the per-process share of the global batch ({total} images over {world_size} "
            f"process(es) = {share} each): one of {divisors}",
            d.images_per_gpu,
        )
        steps = share // d.images_per_gpu
        _check(
            o.accumulate in (1, steps),
            "optim.accumulate",
            f"1 or {steps} (what data.images_per_gpu={d.images_per_gpu} gives on {world_size} process(es))",
            o.accumulate,
        )
        return steps
    if o.accumulate > 1:
        allowed = [k for k in range(1, total + 1) if total % (world_size * k) == 0]
        _check(
            total % (world_size * o.accumulate) == 0,
            "optim.accumulate",
            f"a number of micro-batches that splits the global batch ({total} images) evenly over "
            f"{world_size} process(es): one of {allowed}",
            o.accumulate,
        )
    return o.accumulate


def validate_config(cfg: Config) -> None:
    m, d, o, e = cfg.model, cfg.data, cfg.optim, cfg.eval

    # tasks and the data that feeds them
    _check(len(m.tasks) > 0, "model.tasks", f"a non-empty subset of {TASKS}", m.tasks)
    for task in m.tasks:
        _check(task in TASKS, "model.tasks", f"a subset of {TASKS}", m.tasks)
    _check(len(set(m.tasks)) == len(m.tasks), "model.tasks", "no repeated task", m.tasks)
    _check(not {"insseg", "det"} <= set(m.tasks), "model.tasks", "at most one of insseg/det", m.tasks)
    _check(d.dataset in DATASETS, "data.dataset", f"one of {DATASETS}", d.dataset)
    unsupported = set(m.tasks) - DATASET_TASKS[d.dataset]
    _check(not unsupported, "data.dataset", f"a dataset providing {sorted(m.tasks)}", d.dataset)
    if d.dataset == "joint":
        _check(
            "depth" in m.tasks and len(m.tasks) == 2, "model.tasks", "depth + insseg/det for joint", m.tasks
        )

    uses_coco = bool({"insseg", "det"} & set(m.tasks))
    _check(
        d.depth_batch >= 0 and d.insseg_batch >= 0,
        "data.depth_batch/insseg_batch",
        ">= 0",
        (d.depth_batch, d.insseg_batch),
    )
    if "depth" in m.tasks:
        _check(d.depth_batch > 0, "data.depth_batch", "> 0 for a depth task", d.depth_batch)
        _check(m.depth_tokenizer is not None, "model.depth_tokenizer", "a tokenizer for the depth task", None)
    else:
        _check(d.depth_batch == 0, "data.depth_batch", "0 without a depth task", d.depth_batch)
    if uses_coco:
        _check(d.insseg_batch > 0, "data.insseg_batch", "> 0 for an insseg/det task", d.insseg_batch)
    else:
        _check(d.insseg_batch == 0, "data.insseg_batch", "0 without an insseg/det task", d.insseg_batch)
    if "insseg" in m.tasks:
        _check(m.mask_tokenizer is not None, "model.mask_tokenizer", "a tokenizer for the insseg task", None)
    _check(d.eval_batch >= 1, "data.eval_batch", ">= 1", d.eval_batch)
    _check(d.num_workers >= 0, "data.num_workers", ">= 0", d.num_workers)
    for key, size in (("data.image_size", d.image_size), ("data.crop_size", d.crop_size)):
        _check(all(s > 0 for s in size), key, "positive (H, W)", size)
    _check(
        d.crop_size[0] <= d.image_size[0] and d.crop_size[1] <= d.image_size[1],
        "data.crop_size",
        f"at most data.image_size {d.image_size}",
        d.crop_size,
    )
    stride = _backbone_stride(m)
    if stride:  # the backbone's feature map must tile the image exactly (a named preset tells its stride)
        for key, size in (
            ("data.crop_size", d.crop_size),
            ("model.depth_size", m.depth_size),
            ("model.canvas", (m.canvas, m.canvas)),
        ):
            _check(
                all(s % stride == 0 for s in size),
                key,
                f"sides that are multiples of the backbone's stride {stride} ({m.backbone}), e.g. "
                f"{tuple(max(stride, round(s / stride) * stride) for s in size)}",
                size if key != "model.canvas" else m.canvas,
            )
    _check(0 < d.scale_range[0] <= d.scale_range[1], "data.scale_range", "0 < low <= high", d.scale_range)
    _check(d.synthetic_train_length >= 1, "data.synthetic_train_length", ">= 1", d.synthetic_train_length)
    _check(d.synthetic_val_length >= 1, "data.synthetic_val_length", ">= 1", d.synthetic_val_length)
    low, high = d.synthetic_objects
    _check(
        0 <= low <= high, "data.synthetic_objects", "(low, high) with 0 <= low <= high", d.synthetic_objects
    )
    if d.dataset == "synthetic" and uses_coco:
        # a room with more objects than the sequence holds would be trained on a random subset and scored
        # against all of them: refuse it rather than silently cap recall
        _check(
            high <= m.max_objects,
            "data.synthetic_objects",
            f"at most model.max_objects={m.max_objects} objects per room (the instance sequence holds "
            f"{m.max_objects}; raise model.max_objects or lower the range)",
            d.synthetic_objects,
        )

    if m.depth_image_size is not None:
        _check(
            m.depth_image_size[0] >= m.depth_size[0] and m.depth_image_size[1] >= m.depth_size[1],
            "model.depth_image_size",
            f"None or at least model.depth_size {m.depth_size} (images are padded to it, never cropped)",
            m.depth_image_size,
        )

    # model numbers the engine relies on
    _check(m.tau_depth > 0 and m.tau_mask > 0, "model.tau_depth/tau_mask", "> 0", (m.tau_depth, m.tau_mask))
    _check(0 < m.top_p <= 1, "model.top_p", "in (0, 1]", m.top_p)
    _check(
        m.decode_weights in DECODING_WEIGHTS,
        "model.decode_weights",
        f"one of {DECODING_WEIGHTS}",
        m.decode_weights,
    )
    _check(
        m.soft_lookup in SOFT_LOOKUP_BACKENDS,
        "model.soft_lookup",
        f"one of {SOFT_LOOKUP_BACKENDS}",
        m.soft_lookup,
    )
    _check(0 <= m.dropout < 1, "model.dropout", "in [0, 1)", m.dropout)
    _check(0 <= m.drop_path < 1, "model.drop_path", "in [0, 1)", m.drop_path)
    _check(0 <= m.backbone_drop_path < 1, "model.backbone_drop_path", "in [0, 1)", m.backbone_drop_path)
    _check(m.max_objects >= 1, "model.max_objects", ">= 1", m.max_objects)
    _check(m.object_order in OBJECT_ORDERS, "model.object_order", f"one of {OBJECT_ORDERS}", m.object_order)
    _check(
        m.duplicate_boxes in DUPLICATE_BOXES,
        "model.duplicate_boxes",
        f"one of {DUPLICATE_BOXES}",
        m.duplicate_boxes,
    )
    _check(
        m.coordinate_embedding in COORDINATE_EMBEDDINGS,
        "model.coordinate_embedding",
        f"one of {COORDINATE_EMBEDDINGS}",
        m.coordinate_embedding,
    )
    phase = cfg.curriculum.detection_iters
    _check(_is_int(phase) and phase >= 0, "curriculum.detection_iters", "an int >= 0", phase)
    if phase:
        _check(
            "insseg" in m.tasks,
            "curriculum.detection_iters",
            "0 without task insseg (nothing follows)",
            phase,
        )
        _check(
            phase < o.max_iters,
            "curriculum.detection_iters",
            f"fewer steps than optim.max_iters ({o.max_iters}): the instance phase needs some",
            phase,
        )
    for task, mode in m.decoding.items():
        _check(task in m.tasks, "model.decoding", f"keys among model.tasks {tuple(m.tasks)}", task)
        _check(mode in DECODING_MODES, f"model.decoding[{task!r}]", f"one of {DECODING_MODES}", mode)

    # losses: a negative weight would reward the error it should penalise
    for name, weight in dataclasses.asdict(cfg.loss).items():
        if name != "silog_lambda":
            expected = "a finite standard deviation >= 0 (in bins)" if name == "coord_sigma" else None
            _check(
                math.isfinite(weight) and weight >= 0,
                f"loss.{name}",
                expected or "a finite weight >= 0",
                weight,
            )
    if cfg.loss.memory_rank_weight > 0:
        # the rank is learned by the memory-box head, and only a fixed order gives an object one place
        _check(
            cfg.loss.memory_box_weight > 0,
            "loss.memory_rank_weight",
            "0 unless loss.memory_box_weight > 0 (the rank is a role of the memory boxes)",
            cfg.loss.memory_rank_weight,
        )
        _check(
            m.object_order != "random",
            "loss.memory_rank_weight",
            "0 with model.object_order=random (an object has a place in the sequence only in a fixed order: "
            "'area' or 'raster')",
            cfg.loss.memory_rank_weight,
        )
    # sqrt(mean d^2 - lambda (mean d)^2) stays real only for lambda in [0, 1]
    _check(0 <= cfg.loss.silog_lambda <= 1, "loss.silog_lambda", "in [0, 1]", cfg.loss.silog_lambda)

    # optimiser and schedule
    _check(o.lr > 0, "optim.lr", "> 0", o.lr)
    _check(o.weight_decay >= 0, "optim.weight_decay", ">= 0", o.weight_decay)
    _check(0 < o.layer_decay <= 1, "optim.layer_decay", "in (0, 1]", o.layer_decay)
    _check(all(0 <= b < 1 for b in o.betas), "optim.betas", "each in [0, 1)", o.betas)
    _check(o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip", "None or > 0", o.grad_clip)
    _check(o.max_iters >= 1, "optim.max_iters", ">= 1", o.max_iters)
    _check(
        0 <= o.warmup_iters <= o.max_iters,
        "optim.warmup_iters",
        f"in [0, max_iters={o.max_iters}]",
        o.warmup_iters,
    )
    _check(0 < o.warmup_ratio <= 1, "optim.warmup_ratio", "in (0, 1]", o.warmup_ratio)
    _check(o.schedule in SCHEDULES, "optim.schedule", f"one of {SCHEDULES}", o.schedule)
    _check(
        list(o.step_milestones) == sorted(o.step_milestones)
        and all(0 < s <= o.max_iters for s in o.step_milestones),
        "optim.step_milestones",
        f"increasing iterations in (0, max_iters={o.max_iters}]",
        o.step_milestones,
    )
    _check(o.step_gamma > 0, "optim.step_gamma", "> 0", o.step_gamma)
    _check(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", "in [0, 1]", o.min_lr_ratio)
    _check(0 <= o.ema_decay < 1, "optim.ema_decay", "in [0, 1) (0 = no weight average)", o.ema_decay)
    _check(
        _is_int(o.accumulate) and o.accumulate >= 1,
        "optim.accumulate",
        "an integer >= 1 (micro-batches per optimiser step)",
        o.accumulate,
    )
    _check(
        d.images_per_gpu is None or (_is_int(d.images_per_gpu) and d.images_per_gpu >= 1),
        "data.images_per_gpu",
        "None (the whole per-process share) or an integer >= 1",
        d.images_per_gpu,
    )
    _check(
        isinstance(m.backbone_grad_checkpointing, bool),
        "model.backbone_grad_checkpointing",
        "true or false",
        m.backbone_grad_checkpointing,
    )
    _check(
        isinstance(o.amp, bool) or o.amp in AMP_MODES,
        "optim.amp",
        f"one of {AMP_MODES} (or true/false for fp16/none)",
        o.amp,
    )

    # evaluation
    _check(
        0 <= e.min_depth < e.max_depth,
        "eval.min_depth/max_depth",
        "0 <= min < max",
        (e.min_depth, e.max_depth),
    )
    _check(e.clip_max is None or e.clip_max > 0, "eval.clip_max", "None or > 0", e.clip_max)
    _check(
        _is_int(e.instance_samples) and e.instance_samples >= 1,
        "eval.instance_samples",
        "an integer >= 1 (1 = one decode)",
        e.instance_samples,
    )
    _check(isinstance(e.instance_flip, bool), "eval.instance_flip", "true or false", e.instance_flip)
    _check(0.0 < e.instance_fusion_iou < 1.0, "eval.instance_fusion_iou", "in (0, 1)", e.instance_fusion_iou)

    # run
    _check(cfg.log_interval >= 1, "log_interval", ">= 1", cfg.log_interval)
    _check(cfg.eval_interval >= 0, "eval_interval", ">= 0 (0 = only at the end)", cfg.eval_interval)
    _check(
        cfg.checkpoint_interval >= 0,
        "checkpoint_interval",
        ">= 0 (0 = only at the end)",
        cfg.checkpoint_interval,
    )
    _check(cfg.keep_checkpoints >= 0, "keep_checkpoints", ">= 0", cfg.keep_checkpoints)
    _check(bool(cfg.work_dir), "work_dir", "a directory path", cfg.work_dir)
    _check(cfg.num_threads is None or cfg.num_threads >= 1, "num_threads", "None or >= 1", cfg.num_threads)
    # numpy's generators refuse negative seeds: say so here, not deep inside the data pipeline
    _check(cfg.seed >= 0, "seed", ">= 0", cfg.seed)
    _check(d.synthetic_seed >= 0, "data.synthetic_seed", ">= 0", d.synthetic_seed)
    # ... and torch's take 64-bit seeds: a larger one overflowed deep inside torch.manual_seed
    _check(cfg.seed < 2**63, "seed", "< 2**63", cfg.seed)
    _check(d.synthetic_seed < 2**63, "data.synthetic_seed", "< 2**63", d.synthetic_seed)
