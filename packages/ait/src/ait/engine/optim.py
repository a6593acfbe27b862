"""AdamW with layer-wise lr decay groups and the original's per-iteration schedules (DESIGN §4).

The schedule is a pure function of the iteration, `lr_factor(it)`: linear warm-up from `warmup_ratio` (mmcv's
"linear" warm-up, applied on top of the regular schedule), then either steps (`step_gamma` at each milestone)
or a linear decay to `min_lr_ratio` at `max_iters`. Each param group's lr is `lr * lr_scale * lr_factor(it)`,
where `lr_scale` is the layer-decay factor `ait_backbone.layer_decay_param_groups` assigns.
"""

from __future__ import annotations

import bisect

import torch
from torch import nn

from ait.config.schema import OptimConfig

__all__ = ["IterationSchedule", "build_optimizer", "build_scheduler", "lr_factor"]


def lr_factor(it: int, cfg: OptimConfig) -> float:
    """Multiplier of the base lr at (0-based) iteration `it`."""
    if cfg.schedule == "step":
        regular = cfg.step_gamma ** bisect.bisect_right(list(cfg.step_milestones), it)
    elif cfg.schedule == "linear":
        progress = min(max(it / max(cfg.max_iters, 1), 0.0), 1.0)
        regular = 1.0 - (1.0 - cfg.min_lr_ratio) * progress
    elif cfg.schedule == "constant":
        regular = 1.0
    else:
        raise ValueError(f"optim.schedule must be 'step', 'linear' or 'constant', got {cfg.schedule!r}")
    if it < cfg.warmup_iters:
        # mmcv: lr = regular * (1 - (1 - it / warmup_iters) * (1 - warmup_ratio))
        return regular * (1.0 - (1.0 - it / cfg.warmup_iters) * (1.0 - cfg.warmup_ratio))
    return regular


class IterationSchedule:
    """A picklable lr lambda for `torch.optim.lr_scheduler.LambdaLR` (stepped once per optimiser step)."""

    def __init__(self, cfg: OptimConfig):
        self.cfg = cfg

    def __call__(self, it: int) -> float:
        return lr_factor(it, self.cfg)


def _param_groups(model: nn.Module, cfg: OptimConfig, backbone_prefix: str) -> list[dict]:
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    has_backbone = any(n.startswith(backbone_prefix) for n, _ in trainable)
    if has_backbone:
        from ait_backbone import layer_decay_param_groups

        groups = layer_decay_param_groups(
            model,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            layer_decay=cfg.layer_decay,
            backbone_prefix=backbone_prefix,
        )
        frozen = {id(p) for p in model.parameters() if not p.requires_grad}
        for group in groups:  # the frozen tokenizers stay out of the optimiser
            group["params"] = [p for p in group["params"] if id(p) not in frozen]
        groups = [g for g in groups if g["params"]]
    else:
        # no backbone (small stand-ins): the same no-decay rule as the backbone's groups, scale 1 everywhere
        from ait_backbone.lr_decay import uses_weight_decay

        decay, no_decay = [], []
        for name, p in trainable:
            (decay if uses_weight_decay(name, p) else no_decay).append(p)
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
        ]
        groups = [g for g in groups if g["params"]]
    for group in groups:
        group.setdefault("lr_scale", 1.0)
        group["lr"] = cfg.lr * group["lr_scale"]
    return groups


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, backbone_prefix: str = "backbone."
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, layer-decay groups for the backbone (everything else scale 1)."""
    return torch.optim.AdamW(_param_groups(model, cfg, backbone_prefix), lr=cfg.lr, betas=tuple(cfg.betas))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration LambdaLR: group lr = its initial lr (lr * lr_scale) * lr_factor(iteration)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, IterationSchedule(cfg))
