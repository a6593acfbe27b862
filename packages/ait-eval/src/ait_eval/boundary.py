"""Boundary IoU (Cheng, Girshick, Dollár, Berg, Kirillov, CVPR 2021), numpy only.

The boundary of a mask ``G`` is ``G_d ∩ G``: the mask pixels within distance ``d`` of the mask's contour,
``d = max(1, round(dilation_ratio · image diagonal))``.  As in the authors' reference implementation
(boundary-iou-api, ``mask_to_boundary``) the distance is the chessboard distance: the boundary is the
mask minus its erosion by a ``(2d+1) × (2d+1)`` square, and pixels outside the image count as background,
so a mask cut by the image border has a boundary along that border too.

    boundary IoU = |(G_d ∩ G) ∩ (P_d ∩ P)| / |(G_d ∩ G) ∪ (P_d ∩ P)|

The square erosion is separable (a row pass, then a column pass); each pass counts background pixels in
a sliding window with a cumulative sum, so the cost is O(H·W) whatever ``d`` is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ait_eval._arrays import to_numpy

DEFAULT_DILATION_RATIO = 0.02


def boundary_width(height: int, width: int, dilation_ratio: float = DEFAULT_DILATION_RATIO) -> int:
    """``d`` in pixels: ``max(1, round(dilation_ratio · sqrt(H² + W²)))`` (Python rounding, as the reference)."""
    if not (math.isfinite(dilation_ratio) and dilation_ratio >= 0):
        raise ValueError(f"dilation_ratio must be a finite value >= 0, got {dilation_ratio}")
    return max(1, round(dilation_ratio * math.hypot(height, width)))


def _erode_along(mask: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Keep a pixel iff every pixel within ``radius`` along ``axis`` is foreground (outside = background)."""
    background = (~mask).astype(np.int32)
    pad = [(0, 0)] * mask.ndim
    pad[axis] = (radius + 1, radius)  # +1: a leading zero-count slot for the window differences below
    padded = np.pad(background, pad, constant_values=1)
    padded[(slice(None),) * (axis % mask.ndim) + (0,)] = 0
    cumulative = np.cumsum(padded, axis=axis)
    length = mask.shape[axis]
    upper = np.take(cumulative, np.arange(2 * radius + 1, 2 * radius + 1 + length), axis=axis)
    lower = np.take(cumulative, np.arange(0, length), axis=axis)
    return mask & (upper - lower == 0)


def erode_square(mask: Any, radius: int) -> np.ndarray:
    """Binary erosion of ``(..., H, W)`` masks by a ``(2·radius+1)²`` square; outside the image is background."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim < 2:
        raise ValueError(f"masks must be (..., H, W), got shape {mask.shape}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if radius == 0:
        return mask.copy()
    return _erode_along(_erode_along(mask, radius, axis=-1), radius, axis=-2)


def _as_masks(mask: Any, name: str, threshold: float = 0.5) -> np.ndarray:
    """Binary masks from bool, 0/1 integer or probability arrays (the latter thresholded: ``> threshold``)."""
    arr = to_numpy(mask)
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating):
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise ValueError(f"{name} contains non-finite values")
        return arr > threshold
    raise ValueError(f"{name} must be a bool, integer or float array, got dtype {arr.dtype}")


def mask_to_boundary(mask: Any, dilation_ratio: float = DEFAULT_DILATION_RATIO) -> np.ndarray:
    """Boundary region ``G_d ∩ G`` of binary ``(..., H, W)`` masks (bool array of the same shape).

    ``d`` comes from the last two axes (the image the masks live in).  Non-bool input is binarised with
    ``> 0.5``.
    """
    mask = _as_masks(mask, "mask")
    if mask.ndim < 2:
        raise ValueError(f"masks must be (..., H, W), got shape {mask.shape}")
    radius = boundary_width(mask.shape[-2], mask.shape[-1], dilation_ratio)
    boundary = np.zeros_like(mask)
    flat = mask.reshape(-1, *mask.shape[-2:])
    rows = np.flatnonzero(flat.any(axis=(0, 2)))
    cols = np.flatnonzero(flat.any(axis=(0, 1)))
    if rows.size == 0:
        return boundary
    # Everything outside the masks' bounding box is background, which is what the erosion assumes beyond
    # its input, so eroding the box alone is exact, and much cheaper for COCO objects in large images.
    box = (..., slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    boundary[box] = mask[box] & ~erode_square(mask[box], radius)
    return boundary


def _iou(a: np.ndarray, b: np.ndarray, empty: float) -> np.ndarray:
    """IoU over the last two axes; ``empty`` where both are empty (the union is 0)."""
    inter = np.count_nonzero(a & b, axis=(-2, -1))
    union = np.count_nonzero(a | b, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), empty)


def boundary_iou(gt_mask: Any, pred_mask: Any, dilation_ratio: float = DEFAULT_DILATION_RATIO) -> float:
    """Boundary IoU of two binary ``(H, W)`` masks.

    Two empty masks agree perfectly and score 1.0; one empty mask against a non-empty one scores 0.0.
    (A non-empty mask always has a non-empty boundary, so the union is empty only when both masks are.)
    """
    gt = _as_masks(gt_mask, "gt_mask")
    pred = _as_masks(pred_mask, "pred_mask")
    if gt.ndim != 2 or gt.shape != pred.shape:
        raise ValueError(f"need two (H, W) masks of the same shape, got gt {gt.shape} and pred {pred.shape}")
    return float(_iou(mask_to_boundary(gt, dilation_ratio), mask_to_boundary(pred, dilation_ratio), 1.0))


def mask_iou(gt_mask: Any, pred_mask: Any) -> float:
    """Plain IoU of two binary ``(H, W)`` masks (1.0 when both are empty)."""
    gt = _as_masks(gt_mask, "gt_mask")
    pred = _as_masks(pred_mask, "pred_mask")
    if gt.ndim != 2 or gt.shape != pred.shape:
        raise ValueError(f"need two (H, W) masks of the same shape, got gt {gt.shape} and pred {pred.shape}")
    return float(_iou(gt, pred, 1.0))
