"""Named configs (timm style): ``create_config(name, **overrides)``, ``list_configs()``.

One entry per config of the original release (same names, hyperparameters from DESIGN §4), plus small CPU
configs for the demo and the tests. Task-solver entries build an `ait.config.Config`; tokenizer entries
(`ait_depth_vqvae`, `ait_insseg_vqvae`, `cpu_*_vqvae`) build an `ait_tokenizer.train.TokenizerTrainConfig`.

Every call builds a fresh object, so callers may mutate what they get.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ait.config.overrides import ConfigError, apply_overrides
from ait.config.schema import (
    Config,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TokenizerRef,
)

__all__ = [
    "config_kind",
    "create_config",
    "describe_config",
    "list_configs",
    "register_config",
]


@dataclass(frozen=True)
class _Entry:
    name: str
    kind: str  # "solver" | "tokenizer"
    factory: Callable[[], Any]
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_config(name: str, kind: str = "solver", description: str = ""):
    """Decorator: register a zero-argument factory under `name`."""
    if kind not in ("solver", "tokenizer"):
        raise ValueError(f"config kind must be 'solver' or 'tokenizer', got {kind!r}")

    def decorate(factory: Callable[[], Any]) -> Callable[[], Any]:
        if name in _REGISTRY:
            raise ValueError(f"config {name!r} is already registered")
        _REGISTRY[name] = _Entry(name, kind, factory, description or (factory.__doc__ or "").strip())
        return factory

    return decorate


def list_configs(kind: str | None = None, pattern: str | None = None) -> list[str]:
    """Registered names, sorted; `kind` filters "solver"/"tokenizer", `pattern` is a substring filter."""
    names = [n for n, e in _REGISTRY.items() if kind is None or e.kind == kind]
    if pattern:
        names = [n for n in names if pattern in n]
    return sorted(names)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.4)
        hint = f"; did you mean: {', '.join(close)}" if close else f"; known: {', '.join(list_configs())}"
        raise ConfigError(f"unknown config {name!r}{hint}")
    return _REGISTRY[name]


def config_kind(name: str) -> str:
    return _entry(name).kind


def describe_config(name: str) -> str:
    return _entry(name).description


def create_config(
    name: str, overrides: Mapping[str, Any] | Iterable[str] | None = None, **kwargs: Any
) -> Any:
    """A fresh config `name` with overrides applied and validated.

    `overrides` is a mapping of dotted keys (`{"optim.lr": 1e-3}`) or `--cfg-options` strings
    (`["optim.lr=1e-3"]`); keyword arguments are top-level or dotted keys written with `__`
    (`create_config(name, seed=1, optim__lr=1e-3)`).
    """
    entry = _entry(name)
    cfg = entry.factory()
    apply_overrides(cfg, overrides)
    apply_overrides(cfg, {key.replace("__", "."): value for key, value in kwargs.items()})
    if isinstance(cfg, Config):
        cfg.validate()
    return cfg


# ==========================================================================================================
# Task-solver configs of the original release (DESIGN §4)

_PAPER_DEPTH_TOKENIZER = "depth-paper"
_PAPER_MASK_TOKENIZER = "mask-paper"


def _nyu_depth(
    backbone: str, lr: float, weight_decay: float, *, parallel: bool, soft: bool, name: str
) -> Config:
    """NYUv2 depth-only at 480 px: batch 24, 25,250 iterations, 500 warm-up from 0.1x, x0.1 at 18,180."""
    return Config(
        name=name,
        model=ModelConfig(
            backbone=backbone,
            backbone_drop_path=0.1,
            tasks=("depth",),
            parallel=parallel,
            soft_token=soft,
            # AiT feeds the soft mixture back as the next input; AiT-P and the w/o-soft ablation use hard ones
            soft_input=soft and not parallel,
            tau_depth=0.8,
            reserved_tokens=0,  # depth-only vocabulary stops at 2339
            depth_size=(480, 480),
            depth_tokenizer=TokenizerRef(preset=_PAPER_DEPTH_TOKENIZER),
        ),
        loss=LossConfig(depth_aux_weight=1.0 if soft else 0.0, silog_lambda=0.5),
        data=DataConfig(
            dataset="nyu",
            image_size=(480, 640),
            crop_size=(480, 480),
            depth_batch=24,
            eval_batch=2,  # samples_per_gpu=2 of the original's NYU val loader
            num_workers=4,
        ),
        optim=OptimConfig(
            lr=lr,
            weight_decay=weight_decay,
            layer_decay=0.9,
            grad_clip=10.0,
            max_iters=25250,
            warmup_iters=500,
            warmup_ratio=0.1,
            schedule="step",
            step_milestones=(18180,),
            step_gamma=0.1,
            amp="fp16",  # fp16 = dict(loss_scale='dynamic')
        ),
        eval=EvalConfig(sliding_window=True, flip=True),
        work_dir=f"work_dirs/{name}",
        checkpoint_interval=1000,
        eval_interval=5000,
    )


def _coco_optim(lr: float, max_iters: int, warmup: int, clip: float, amp: str = "fp16") -> OptimConfig:
    return OptimConfig(
        lr=lr,
        weight_decay=0.05,
        layer_decay=0.85,
        grad_clip=clip,
        max_iters=max_iters,
        warmup_iters=warmup,
        warmup_ratio=0.1,
        schedule="linear",
        step_milestones=(),
        min_lr_ratio=0.01,
        amp=amp,
    )


def _coco_model(tasks: tuple[str, ...], *, soft: bool, reserved: int, top_p: float = 0.3) -> ModelConfig:
    return ModelConfig(
        backbone="swinv2-b-640",
        backbone_drop_path=0.3,
        tasks=tasks,
        parallel=False,
        soft_token=soft,
        soft_input=soft,
        tau_mask=1.0,
        tau_depth=1.0,
        top_p=top_p,
        max_objects=100,
        canvas=640,
        reserved_tokens=reserved,
        # joint: the NYU image is zero-padded to the 640 canvas (the original's padto=640), the depth ground
        # truth stays a 480x480 crop -> 15x15 = 225 tokens, no padding tokens (DESIGN §4 "Joint training")
        depth_size=(480, 480),
        depth_image_size=(640, 640),
        mask_tokenizer=TokenizerRef(preset=_PAPER_MASK_TOKENIZER) if "insseg" in tasks else None,
        depth_tokenizer=TokenizerRef(preset=_PAPER_DEPTH_TOKENIZER) if "depth" in tasks else None,
    )


def _coco_data(
    insseg_batch: int, depth_batch: int = 0, dataset: str = "coco", eval_batch: int = 8
) -> DataConfig:
    return DataConfig(
        dataset=dataset,
        image_size=(640, 640),
        crop_size=(480, 480),
        scale_range=(0.1, 3.0),
        insseg_batch=insseg_batch,
        depth_batch=depth_batch,
        eval_batch=eval_batch,  # the original's COCO val loaders: samples_per_gpu=8 (detection: 20)
        num_workers=4,
    )


def _insseg(name: str, soft: bool) -> Config:
    return Config(
        name=name,
        model=_coco_model(("insseg",), soft=soft, reserved=128),
        loss=LossConfig(
            box_weight=1.0, class_weight=1.0, mask_weight=0.2, mask_aux_weight=5.0 if soft else 0.0
        ),
        data=_coco_data(insseg_batch=16),
        optim=_coco_optim(lr=1e-4, max_iters=366500, warmup=14660, clip=50.0),
        eval=EvalConfig(sliding_window=False, flip=False),
        # the original starts instance segmentation from the detection-only model (README: load_from=...)
        load_from="ait_det_swinv2b_wodec.pth",
        work_dir=f"work_dirs/{name}",
        checkpoint_interval=5000,
        eval_interval=20000,
    )


@register_config("swinv2b_480reso_depthonly", description="AiT SwinV2-B, NYUv2 depth (RMSE 0.305)")
def _swinv2b_480reso_depthonly() -> Config:
    return _nyu_depth("swinv2-b-480", 2e-4, 0.05, parallel=False, soft=True, name="swinv2b_480reso_depthonly")


@register_config("swinv2b_480reso_parallel_depthonly", description="AiT-P SwinV2-B, NYUv2 depth (RMSE 0.301)")
def _swinv2b_480reso_parallel_depthonly() -> Config:
    return _nyu_depth(
        "swinv2-b-480", 2e-4, 0.05, parallel=True, soft=True, name="swinv2b_480reso_parallel_depthonly"
    )


@register_config("swinv2l_480reso_depthonly", description="AiT SwinV2-L, NYUv2 depth (RMSE 0.284)")
def _swinv2l_480reso_depthonly() -> Config:
    return _nyu_depth(
        "swinv2-l-480", 1e-4, 0.075, parallel=False, soft=True, name="swinv2l_480reso_depthonly"
    )


@register_config("swinv2l_480reso_parallel_depthonly", description="AiT-P SwinV2-L, NYUv2 depth (RMSE 0.275)")
def _swinv2l_480reso_parallel_depthonly() -> Config:
    return _nyu_depth(
        "swinv2-l-480", 1e-4, 0.075, parallel=True, soft=True, name="swinv2l_480reso_parallel_depthonly"
    )


@register_config(
    "swinv2b_480reso_depthonly_wosoft", description="AiT SwinV2-B w/o soft token, NYUv2 depth (RMSE 0.318)"
)
def _swinv2b_480reso_depthonly_wosoft() -> Config:
    return _nyu_depth(
        "swinv2-b-480", 2e-4, 0.05, parallel=False, soft=False, name="swinv2b_480reso_depthonly_wosoft"
    )


@register_config(
    "swinv2b_640reso_detonly", description="AiT SwinV2-B detection only, COCO (init for insseg/joint)"
)
def _swinv2b_640reso_detonly() -> Config:
    return Config(
        name="swinv2b_640reso_detonly",
        # no top_p in the original's config: its ARTransformer default, 0.4
        model=_coco_model(("det",), soft=False, reserved=0, top_p=0.4),
        loss=LossConfig(box_weight=1.0, class_weight=1.0, depth_aux_weight=0.0, mask_aux_weight=0.0),
        data=_coco_data(insseg_batch=128, eval_batch=20),
        # the original's detection config has no fp16 entry: it trains in fp32
        optim=_coco_optim(lr=1e-3, max_iters=183300, warmup=18330, clip=1.0, amp="none"),
        eval=EvalConfig(sliding_window=False, flip=False),
        work_dir="work_dirs/swinv2b_640reso_detonly",
        checkpoint_interval=5000,
        eval_interval=20000,
    )


@register_config(
    "swinv2b_640reso_inssegonly", description="AiT SwinV2-B, COCO instance seg (box 43.3 / mask 34.2)"
)
def _swinv2b_640reso_inssegonly() -> Config:
    return _insseg("swinv2b_640reso_inssegonly", soft=True)


@register_config(
    "swinv2b_640reso_inssegonly_wosoft",
    description="AiT SwinV2-B w/o soft token, COCO instance seg (box 43.6 / mask 31.1)",
)
def _swinv2b_640reso_inssegonly_wosoft() -> Config:
    return _insseg("swinv2b_640reso_inssegonly_wosoft", soft=False)


@register_config("swinv2b_640reso_joint", description="AiT SwinV2-B joint COCO + NYUv2 (42.2 / 34.1 / 0.310)")
def _swinv2b_640reso_joint() -> Config:
    return Config(
        name="swinv2b_640reso_joint",
        model=_coco_model(("depth", "insseg"), soft=True, reserved=128),
        # depth loss weight 0.2 in joint training; tau 1.0 (set in _coco_model)
        loss=LossConfig(depth_task_weight=0.2, depth_aux_weight=1.0, mask_weight=0.2, mask_aux_weight=5.0),
        data=_coco_data(insseg_batch=60, depth_batch=4, dataset="joint"),
        optim=_coco_optim(lr=8e-4, max_iters=302875, warmup=12115, clip=10.0),
        eval=EvalConfig(sliding_window=True, flip=True),
        load_from="ait_det_swinv2b_wodec.pth",
        work_dir="work_dirs/swinv2b_640reso_joint",
        checkpoint_interval=5000,
        eval_interval=20000,
    )


# ==========================================================================================================
# CPU configs: tiny backbone, small tokenizers, small synthetic rooms, short schedules

# rooms rendered at 64x64: the tiny backbone gives a 2x2 map, depth-small 8x8 = 64 depth tokens
_CPU_SIZE = (64, 64)


def _cpu_model(tasks: tuple[str, ...], **overrides: Any) -> ModelConfig:
    model = ModelConfig(
        backbone="swinv2-tiny-cpu",
        backbone_drop_path=0.0,
        d_model=64,
        nhead=4,
        num_encoder_layers=1,
        num_decoder_layers=2,
        dim_feedforward=128,
        dropout=0.0,
        drop_path=0.0,
        backbone_overrides={"img_size": _CPU_SIZE[0]},
        num_bins=64,  # coordinate bins of the 64 px canvas: one per pixel
        num_classes=8,  # the synthetic rooms' categories
        reserved_tokens=0,
        tasks=tasks,
        parallel=False,
        soft_token=True,
        soft_input=True,
        tau_depth=1.0,
        tau_mask=1.0,
        top_p=0.3,
        max_objects=4,
        canvas=_CPU_SIZE[0],
        depth_size=_CPU_SIZE,
        depth_tokenizer=TokenizerRef(preset="depth-small") if "depth" in tasks else None,
        mask_tokenizer=TokenizerRef(preset="mask-small") if "insseg" in tasks else None,
    )
    return dataclasses.replace(model, **overrides)


def _untrained_tokenizers(model: ModelConfig) -> ModelConfig:
    """The tiny test configs train over untrained tokenizers, and say so (otherwise training refuses)."""
    for ref in (model.depth_tokenizer, model.mask_tokenizer):
        if ref is not None:
            ref.checkpoint = "untrained"
    return model


def _cpu_data(
    depth_batch: int, insseg_batch: int, dataset: str = "synthetic", **overrides: Any
) -> DataConfig:
    data = DataConfig(
        dataset=dataset,
        image_size=_CPU_SIZE,
        crop_size=_CPU_SIZE,
        scale_range=(0.75, 1.25),
        depth_batch=depth_batch,
        insseg_batch=insseg_batch,
        eval_batch=8,
        synthetic_train_length=64,
        synthetic_val_length=8,
        cache=True,
        num_workers=0,
    )
    return dataclasses.replace(data, **overrides)


def _cpu_optim(max_iters: int, lr: float = 1e-3, **overrides: Any) -> OptimConfig:
    optim = OptimConfig(
        lr=lr,
        weight_decay=0.05,
        layer_decay=0.9,
        grad_clip=10.0,
        max_iters=max_iters,
        warmup_iters=max(1, max_iters // 20),
        warmup_ratio=0.1,
        schedule="linear",
        step_milestones=(),
        min_lr_ratio=0.01,
        amp="none",
    )
    return dataclasses.replace(optim, **overrides)


@register_config(
    "cpu_depth_tiny", description="CPU: depth-only, tiny everything (tests; untrained tokenizers)"
)
def _cpu_depth_tiny() -> Config:
    return Config(
        name="cpu_depth_tiny",
        model=_untrained_tokenizers(_cpu_model(("depth",))),
        data=_cpu_data(depth_batch=4, insseg_batch=0),
        optim=_cpu_optim(max_iters=20),
        eval=EvalConfig(sliding_window=False, flip=False, eigen_crop=False),
        work_dir="runs/cpu_depth_tiny",
        log_interval=5,
        checkpoint_interval=10,
        progress=False,
        num_threads=1,
    )


@register_config(
    "cpu_insseg_tiny",
    description="CPU: instance segmentation only, tiny everything (tests; untrained tokenizers)",
)
def _cpu_insseg_tiny() -> Config:
    return Config(
        name="cpu_insseg_tiny",
        model=_untrained_tokenizers(_cpu_model(("insseg",))),
        # rooms of at most 4 objects: every object fits the 4-object sequence (data.synthetic_objects)
        data=_cpu_data(depth_batch=0, insseg_batch=4, synthetic_objects=(1, 4)),
        optim=_cpu_optim(max_iters=20),
        eval=EvalConfig(sliding_window=False, flip=False, eigen_crop=False),
        work_dir="runs/cpu_insseg_tiny",
        log_interval=5,
        checkpoint_interval=10,
        progress=False,
        num_threads=1,
    )


@register_config(
    "cpu_joint_tiny", description="CPU: joint depth + insseg, tiny everything (tests; untrained tokenizers)"
)
def _cpu_joint_tiny() -> Config:
    return Config(
        name="cpu_joint_tiny",
        model=_untrained_tokenizers(_cpu_model(("depth", "insseg"))),
        loss=LossConfig(depth_task_weight=1.0),
        data=_cpu_data(depth_batch=2, insseg_batch=2, synthetic_objects=(1, 4)),
        optim=_cpu_optim(max_iters=20),
        eval=EvalConfig(sliding_window=False, flip=False, eigen_crop=False),
        work_dir="runs/cpu_joint_tiny",
        log_interval=5,
        checkpoint_interval=10,
        progress=False,
        num_threads=1,
    )


@register_config(
    "cpu_joint_demo", description="CPU: the demo's joint depth + insseg solver on synthetic rooms"
)
def _cpu_joint_demo() -> Config:
    return Config(
        name="cpu_joint_demo",
        model=_cpu_model(
            ("depth", "insseg"),
            # trained from scratch in minutes: the conv-stem preset learns RGB -> depth where the
            # patch-embedding tiny SwinV2 only learned the mean room (RMSE 1.02-1.04 vs 0.90-0.98 here,
            # same 800 steps; runs with lr 5e-4/2e-3, no layer decay, aux x3, 1200 steps were no better)
            backbone="swinv2-convstem-cpu",
            backbone_overrides={},
            d_model=96,
            nhead=4,
            num_encoder_layers=2,
            num_decoder_layers=2,
            dim_feedforward=256,
            # every object of a room (3-8 objects) fits the sequence (data.synthetic_objects is checked)
            max_objects=8,
            # depth: AiT-P, one masked pass (a model this small and this briefly trained suffers from
            # exposure bias when decoding depth autoregressively). Instances: autoregressive, as the
            # original's instance and joint models; a parallel pass cannot agree on which object goes in
            # which slot (objects come in random order), so its boxes mix corners of different objects
            parallel=True,
            decoding={"depth": "parallel", "insseg": "autoregressive"},
            soft_input=False,
            # objects largest first: the first object of a sequence is then no longer a random pick, and
            # the largest is the easiest to place (benchmarks/README.md, "Instance levers")
            object_order="area",
        ),
        # the paper's joint weighting (depth loss x 0.2): over seeds 0, 1, 2 depth RMSE median 0.775 m (0.747-0.840)
        # and box AP 0.5 % (0.4-0.6) against 0.826 m (0.807-0.888) and 0.1 % (0.1-0.2) at weight 1.0. With the
        # depth loss at full weight the shared backbone and decoder follow depth, and the instance decoder stays
        # blind to the image longer (benchmarks/instance_probe.py). The memory boxes (a dense loss that has each
        # memory cell name its object's corners) with the area order then gave, over seeds 0, 1, 2, box AP 2.6 %
        # (2.0-3.1) and mask AP 1.7 % (0.8-1.7) against 0.5 % and 0.2 %, at some cost to depth: 0.834 m (0.791-0.839).
        # Box and class tokens weighted 2 (the paper: 1), with the peak lr below and scale jitter 0.75-1.25: box AP
        # 3.6 % (2.7-3.9) and depth 0.796 m (0.766-0.817) over the same seeds; box and class are what the young
        # decoder must get first. Mask tokens weighted 0.4 (the paper: 0.2), with the instance images at their own
        # scale: over seeds 0, 1, 2 mask AP 3.8 % (2.6-4.0) against 2.9 % (2.1-3.0), higher on every seed, box AP
        # 7.0 % (5.8-7.3) against 5.8 % (4.6-7.5), depth 0.854 m (0.829-0.882) against 0.837 m (0.808-0.853)
        loss=LossConfig(
            depth_task_weight=0.2, memory_box_weight=0.5, box_weight=2.0, class_weight=2.0, mask_weight=0.4
        ),
        # 2000 steps of 8 + 8 images (about 8 minutes on two idle cores): depth RMSE 0.78 m against 1.01 m
        # after 800 steps of 12 + 4 (same tokenizers); instances need every image they can get
        data=_cpu_data(
            depth_batch=8,
            insseg_batch=8,
            eval_batch=16,
            synthetic_train_length=2000,
            synthetic_val_length=64,
            # the instance images at their own scale (the other CPU configs: jitter 0.75-1.25): over seeds 0, 1, 2
            # box AP 5.8 % (4.6-7.5) and mask AP 2.9 % (2.1-3.0) against 3.6 % and 1.9 %, at some cost to depth,
            # 0.837 m (0.808-0.853) against 0.796 m (0.766-0.817). The depth images keep their augmentation
            scale_range=(1.0, 1.0),
        ),
        # peak lr 2e-3: with the memory boxes, higher box and mask AP on every seed than 1e-3 and a lower depth
        # median (box AP 3.3 %, 3.3-3.8, against 2.6 %, 2.0-3.1; depth 0.811 m, 0.809-0.828, against 0.834 m,
        # 0.791-0.839). Without the memory boxes, at depth weight 1.0, 2e-3 had lost a quarter of the depth
        # (benchmarks/README.md, "Instance levers")
        optim=_cpu_optim(max_iters=2000, lr=2e-3),
        # instances from 16 decodes per room (8 nucleus samples of the room and 8 of its mirror image), fused
        # by weighted box fusion: over seeds 0, 1, 2 box AP 10.5 % (10.5-11.1) and mask AP 5.6 % (5.0-6.7)
        # against 7.0 % and 3.8 % from one decode of the same weights (benchmarks/README.md, "Fused instance
        # decoding")
        eval=EvalConfig(
            sliding_window=False, flip=True, eigen_crop=False, instance_samples=8, instance_flip=True
        ),
        work_dir="demo_output/solver",
        log_interval=100,
        checkpoint_interval=500,
        # both cores: 71 images/s with two threads against ~55 with one on an idle machine (measured)
        num_threads=2,
    )


# ==========================================================================================================
# Tokenizer training configs (ait_tokenizer.train.TokenizerTrainConfig)


def _tokenizer_train_config(preset: str) -> Any:
    """ait_tokenizer's named training config (the paper's recipes live with the tokenizer package)."""
    from ait_tokenizer.train import train_config

    return train_config(preset)


@register_config(
    "ait_depth_vqvae",
    kind="tokenizer",
    description="Depth VQ-VAE of the paper (NYUv2, Adam 3e-4, 20 epochs, batch 8)",
)
def _ait_depth_vqvae() -> Any:
    return _tokenizer_train_config("depth-paper")


@register_config(
    "ait_insseg_vqvae",
    kind="tokenizer",
    description="Instance-mask VQ-VAE of the paper (maskcoco, AdamW 3e-4, warm-up 500 + cosine, batch 512)",
)
def _ait_insseg_vqvae() -> Any:
    return _tokenizer_train_config("mask-paper")


@register_config(
    "cpu_depth_vqvae", kind="tokenizer", description="CPU: small depth tokenizer on synthetic rooms"
)
def _cpu_depth_vqvae() -> Any:
    return _tokenizer_train_config("depth-small")


@register_config(
    "cpu_insseg_vqvae", kind="tokenizer", description="CPU: small mask tokenizer on synthetic rooms"
)
def _cpu_insseg_vqvae() -> Any:
    return _tokenizer_train_config("mask-small")
