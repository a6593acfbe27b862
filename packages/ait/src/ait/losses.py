"""Losses of the task-solver (DESIGN §4 "Soft token", "Task-solver", "Joint training").

All functions compute in float32 whatever the input dtype (they may run under fp16 autocast on a GPU).

- Token cross-entropy is returned as a *weighted sum* plus the number of supervised tokens, so that a task's
  loss can be normalised by its token count (all-reduced over ranks) before tasks are summed.
- SILog is the AiT/GLPDepth convention: sqrt(mean d^2 - lambda (mean d)^2), d = ln gt - ln pred over the
  valid pixels of the whole batch, with no x10 / x100 factor.
- The instance auxiliary term is Dice + MSE between a soft-decoded mask and its binary target crop.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def token_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted cross-entropy over the whole vocabulary.

    logits (B, T, V), targets (B, T) int64, weights (B, T) float (0 = unsupervised; default all ones).
    Returns (sum over tokens of weight * CE, number of supervised tokens (weight > 0)) as 0-d float tensors.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits (B, T, V) and targets (B, T); received {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)
    if weights is None:
        return ce.sum(), torch.tensor(float(ce.numel()), device=ce.device)
    if weights.shape != targets.shape:
        raise ValueError(f"expected weights of shape {tuple(targets.shape)}, received {tuple(weights.shape)}")
    weights = weights.to(ce.dtype)
    return (ce * weights).sum(), (weights > 0).sum().to(ce.dtype)


def silog_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    lam: float = 0.5,
    min_pred: float = 1e-3,
) -> torch.Tensor:
    """sqrt(mean d^2 - lam * (mean d)^2), d = ln gt - ln max(pred, min_pred), over valid pixels of the batch.

    pred, gt: (B, 1, H, W) metres; valid defaults to gt > 0. Returns 0 (with a graph) when no pixel is valid.
    """
    if pred.shape != gt.shape:
        raise ValueError(
            f"expected pred and gt of the same shape; received {tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    pred = pred.float()
    gt = gt.float()
    if valid is None:
        valid = gt > 0
    if not bool(valid.any()):
        return pred.sum() * 0.0
    # Clamp, not max(): the gradient still flows where pred is above the floor.
    d = torch.log(gt[valid]) - torch.log(pred[valid].clamp(min=min_pred))
    mean_sq = (d * d).mean()
    sq_mean = d.mean() ** 2
    # mean d^2 - lam (mean d)^2 >= (1 - lam) mean d^2 >= 0 for lam <= 1; the floor only guards sqrt'(0).
    return torch.sqrt((mean_sq - lam * sq_mean).clamp(min=1e-12))


def dice_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Per-mask Dice loss 1 - (2 sum p t + eps) / (sum p^2 + sum t^2 + eps) (V-Net form, as mmdet's DiceLoss).

    pred, target: (N, ...) -> (N,).
    """
    p = pred.float().flatten(1)
    t = target.float().flatten(1)
    inter = (p * t).sum(1)
    return 1.0 - (2.0 * inter + eps) / ((p * p).sum(1) + (t * t).sum(1) + eps)


def mask_aux_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice + MSE of each soft-decoded mask against its binary crop: (N, 1, h, w) x2 -> (N,)."""
    if pred.shape != target.shape:
        raise ValueError(
            f"expected pred and target masks of the same shape; received {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(1)
    return dice_loss(pred, target) + mse


def token_normaliser(count: torch.Tensor) -> torch.Tensor:
    """The divisor of a task's summed loss: its supervised-token count, averaged over ranks, at least 1.

    Averaging (not summing) over ranks pairs with DistributedDataParallel's gradient averaging, so that the
    update equals a single process seeing the global batch: mean_r(sum_r) / mean_r(count_r).
    """
    count = count.detach().float().clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return count.clamp(min=1.0)
