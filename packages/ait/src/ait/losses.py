"""Losses of the task-solver (DESIGN §4 "Soft token", "Task-solver", "Joint training").

All functions compute in float32 whatever the input dtype (they may run under fp16 autocast on a GPU).

- Token cross-entropy is returned as a *weighted sum* plus the number of supervised tokens, so that a task's
  loss can be normalised by its token count (all-reduced over ranks) before tasks are summed.
- SILog is the AiT/GLPDepth convention: sqrt(mean d^2 - lambda (mean d)^2), d = ln gt - ln pred over the
  valid pixels of the whole batch, with no x10 / x100 factor.
- The instance auxiliary term is Dice + MSE between a soft-decoded mask and its binary target crop, as the
  original: Dice 1 - (2 sum p t + 1) / (sum p + sum t + 1) with p clipped to [0, 1], MSE on the unclamped mask.
- The depth SILog enters a task's summed loss multiplied by the local supervised-token count, before the
  division by the all-reduced mean count (the original's ``loss2``): `depth_local_sum`.
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


def dice_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask Dice loss as the original's ``dice_loss``: 1 - (2 sum p t + 1) / (sum p + sum t + 1).

    p is the prediction clipped to [0, 1] (for this term only; the gradient is zero where it is clipped);
    plain sums, smoothing 1. pred, target: (N, ...) -> (N,) (the original takes the mean over masks).
    """
    p = pred.float().clamp(0.0, 1.0).flatten(1)
    t = target.float().flatten(1)
    return 1.0 - (2.0 * (p * t).sum(1) + 1.0) / (p.sum(1) + t.sum(1) + 1.0)


def mask_aux_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice + MSE of each soft-decoded mask against its binary crop: (N, 1, h, w) x2 -> (N,).

    `pred` is the *unclamped* soft-decoded mask (``decode_soft(..., clamp=False)``): the Dice term clips it
    to [0, 1], the MSE (mean over the mask's pixels) does not, so an overshoot is still pulled back. The
    original computes ``dice.mean() + mse.mean()`` over an image's real objects and multiplies by the
    image's supervised mask-token count; with the same pixel count per mask that is the sum over objects of
    (tokens of the object) x (dice + mse) of this function, which the instance head computes.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"expected pred and target masks of the same shape; received {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(1)
    return dice_loss(pred, target) + mse


def depth_local_sum(
    ce_sum: torch.Tensor, count: torch.Tensor, silog: torch.Tensor, aux_weight: float
) -> torch.Tensor:
    """A rank's summed depth loss: CE sum + aux_weight x SILog x (local supervised-token count).

    Divided by `token_normaliser(count)` this is the original's depth loss (`depth_head.py` ``loss2`` then
    ``AiT.forward_train``): in one process (CE sum / n) + aux_weight x SILog; under DDP each rank's SILog
    weighs with its share of the depth tokens, and a rank without depth images adds nothing.
    """
    return ce_sum + aux_weight * silog * count


def token_normaliser(count: torch.Tensor) -> torch.Tensor:
    """The divisor of a task's summed loss: its supervised-token count, averaged over ranks, at least 1.

    Averaging (not summing) over ranks pairs with DistributedDataParallel's gradient averaging, so that the
    update equals a single process seeing the global batch: mean_r(sum_r) / mean_r(count_r).

    `count` may be a vector (one count per task, as the solver passes it): one all-reduce for all tasks.
    Under torch.distributed this is a collective: every rank must call it, in the same order, with the same
    shape, whatever its local batch holds (a rank without images of a task passes 0 for it).
    """
    count = count.detach().float().clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return count.clamp(min=1.0)
