"""Tokenizer reconstruction scores: how well a VQ tokenizer's decode(encode(x)) reproduces x."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ait_eval.boundary import DEFAULT_DILATION_RATIO, _as_masks, _iou, mask_to_boundary
from ait_eval.depth import DepthMetrics


def depth_reconstruction_scores(recon: Any, gt: Any, **depth_kwargs: Any) -> dict[str, float]:
    """Depth metrics (macro over images) of reconstructed maps ``recon`` against ``gt``, both ``(B, H, W)``.

    ``(H, W)`` and ``(B, 1, H, W)`` are accepted too.  ``depth_kwargs`` go to ``DepthMetrics``
    (``min_depth``, ``max_depth``, ``eigen_crop`` (default True: pass False for square training crops),
    ``clip_max``).
    """
    metrics = DepthMetrics(**depth_kwargs)
    metrics.update(recon, gt)
    return metrics.compute("macro")


def mask_reconstruction_scores(
    gt_masks: Any,
    rec_masks: Any,
    threshold: float = 0.5,
    dilation_ratio: float = DEFAULT_DILATION_RATIO,
) -> dict[str, float]:
    """Mean IoU and mean boundary IoU between ``(N, h, w)`` ground-truth and reconstructed masks.

    Float or integer masks are binarised with ``> threshold`` (bool masks are used as they are), so
    ``rec_masks`` can be the tokenizer's [0, 1] output.  A pair of empty masks scores 1.0 on both (they
    agree); the boundary width comes from the ``h × w`` crop (2 px at 64×64 with the default ratio).
    """
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    gt = _as_masks(gt_masks, "gt_masks", threshold)
    rec = _as_masks(rec_masks, "rec_masks", threshold)
    if gt.ndim != 3 or gt.shape != rec.shape:
        raise ValueError(f"need (N, h, w) masks of the same shape, got gt {gt.shape} and rec {rec.shape}")
    if gt.shape[0] == 0:
        raise ValueError("need at least one mask pair, got N = 0")
    ious = _iou(gt, rec, 1.0)
    boundary_ious = _iou(mask_to_boundary(gt, dilation_ratio), mask_to_boundary(rec, dilation_ratio), 1.0)
    return {"mean_iou": float(np.mean(ious)), "mean_boundary_iou": float(np.mean(boundary_ious))}
