"""Monocular depth metrics (NYUv2 protocol of BTS / GLPDepth / AiT).

Protocol (DESIGN.md §4, "Evaluation protocol"):

* valid pixels: ``min_depth < gt < max_depth`` (strict, as in the originals), optionally inside the Eigen
  crop (rows 45:471, cols 41:601 of a 480×640 map);
* prediction cleaning, in this order: values below ``min_depth`` (including ``-inf``) become ``min_depth``,
  ``+inf`` becomes ``max_depth``, NaN becomes ``min_depth``, then, only if ``clip_max`` is given, values
  above ``clip_max`` become ``clip_max`` (the AiT/GLPDepth code has no upper clip; BTS clips at 10);
* metrics per image, then averaged over images ("macro"), or pooled over all valid pixels ("micro").

With ``e = ln(pred) − ln(gt)`` over the valid pixels of one image (the sign does not matter for any metric
below, each uses ``e²``, ``|e|`` or ``(mean e)²``):

=============  =============================================================
``d1/d2/d3``   fraction of pixels with ``max(pred/gt, gt/pred) < 1.25**k``
``abs_rel``    ``mean(|pred − gt| / gt)``
``sq_rel``     ``mean((pred − gt)² / gt)``
``rmse``       ``sqrt(mean((pred − gt)²))``
``rmse_log``   ``sqrt(mean(e²))``
``log10``      ``mean(|log10 pred − log10 gt|)``
``silog_ait``  ``sqrt(mean(e²) − 0.5·mean(e)²)``       (AiT / GLPDepth, no ×100)
``silog_bts``  ``100·sqrt(mean(e²) − mean(e)²)``       (BTS / ZoeDepth)
=============  =============================================================

Both SILog variants are computed from the centred variance of ``e`` (``mean(e²) − mean(e)² = var(e)``),
which cannot go negative through cancellation, so a pure scale error gives ``silog_bts`` = 0 up to rounding
rather than NaN.

An image without a single valid pixel has NaN metrics (``depth_metrics``); the aggregator leaves such
images out of the macro mean and counts them in ``DepthMetrics.num_skipped``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ait_eval._arrays import to_numpy

DEPTH_METRIC_NAMES: tuple[str, ...] = (
    "d1",
    "d2",
    "d3",
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "log10",
    "silog_ait",
    "silog_bts",
)

# Eigen et al.'s crop of the NYUv2 480×640 frame: (row_start, row_stop, col_start, col_stop), stop exclusive.
EIGEN_CROP_480x640: tuple[int, int, int, int] = (45, 471, 41, 601)
_EIGEN_REFERENCE_SIZE = (480, 640)

# Per-image sufficient statistics, one row per image.  Everything a metric needs is a sum over pixels, so
# pooling images ("micro") and merging aggregators are exact; the SILog variance is kept centred (M2) and
# pooled with the parallel-variance formula for the same reason.
_STAT_FIELDS: tuple[str, ...] = (
    "count",  # valid pixels
    "n_d1",
    "n_d2",
    "n_d3",
    "sum_abs_rel",
    "sum_sq_rel",
    "sum_sq_err",
    "sum_log_sq",  # Σ e²
    "sum_abs_log10",
    "sum_log",  # Σ e
    "m2_log",  # Σ (e − mean e)²
)
_COL = {name: i for i, name in enumerate(_STAT_FIELDS)}
_STATE_FORMAT = 1


def eigen_crop_bounds(height: int, width: int) -> tuple[int, int, int, int]:
    """Eigen crop ``(row_start, row_stop, col_start, col_stop)`` for a ``height × width`` map.

    Exactly (45, 471, 41, 601) at 480×640.  Other sizes get the same crop scaled proportionally (each bound
    ``floor(bound · size / reference + 0.5)``), e.g. (9, 94, 8, 120) at 96×128, so a resized NYU prediction
    and ground truth drop the same border.  For maps that are not resized NYU frames pass
    ``eigen_crop=False``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"eigen crop needs a positive size, got {height}x{width}")
    ref_h, ref_w = _EIGEN_REFERENCE_SIZE
    r0, r1, c0, c1 = EIGEN_CROP_480x640

    def scale(bound: int, size: int, ref: int) -> int:
        return math.floor(bound * size / ref + 0.5)

    return (
        scale(r0, height, ref_h),
        scale(r1, height, ref_h),
        scale(c0, width, ref_w),
        scale(c1, width, ref_w),
    )


def eigen_crop_mask(height: int, width: int) -> np.ndarray:
    """Boolean ``(height, width)`` mask that is True inside the (scaled) Eigen crop."""
    r0, r1, c0, c1 = eigen_crop_bounds(height, width)
    mask = np.zeros((height, width), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def _check_range(min_depth: float, max_depth: float, clip_max: float | None) -> None:
    if not (math.isfinite(min_depth) and math.isfinite(max_depth) and 0.0 <= min_depth < max_depth):
        raise ValueError(
            f"need finite 0 <= min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}"
        )
    if clip_max is not None and not (math.isfinite(clip_max) and clip_max > min_depth):
        raise ValueError(f"clip_max must be None or a finite value > min_depth={min_depth}, got {clip_max}")


def clean_prediction(
    pred: np.ndarray, min_depth: float = 1e-3, max_depth: float = 10.0, clip_max: float | None = None
) -> np.ndarray:
    """Apply the protocol's prediction clipping (see module docstring) and return a new float64 array."""
    out = np.array(pred, dtype=np.float64)  # copy: the caller's array is never modified
    with np.errstate(invalid="ignore"):
        out[out < min_depth] = min_depth  # also catches -inf
    out[np.isposinf(out)] = max_depth
    out[np.isnan(out)] = min_depth
    if clip_max is not None:
        out[out > clip_max] = clip_max
    return out


def valid_mask(
    gt: np.ndarray, min_depth: float = 1e-3, max_depth: float = 10.0, eigen_crop: bool = True
) -> np.ndarray:
    """Pixels that count: ``min_depth < gt < max_depth``, inside the Eigen crop if asked; gt ``(..., H, W)``."""
    gt = np.asarray(gt)
    mask = (gt > min_depth) & (gt < max_depth)
    if eigen_crop:
        mask &= eigen_crop_mask(gt.shape[-2], gt.shape[-1])
    return mask


def _as_float_array(x: Any, name: str) -> np.ndarray:
    arr = to_numpy(x)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"{name} must be a real-valued (integer or float) array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _as_batch(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and bring ``pred``/``gt`` to float64 ``(B, H, W)``.

    Accepts ``(H, W)``, ``(B, H, W)`` or ``(B, 1, H, W)`` (the batched torch layout); numpy arrays or
    tensors (converted with ``detach().cpu().numpy()``).
    """
    pred_arr = _as_float_array(pred, "pred")
    gt_arr = _as_float_array(gt, "gt")
    if pred_arr.shape != gt_arr.shape:
        raise ValueError(
            f"pred and gt must have the same shape, got pred {pred_arr.shape} and gt {gt_arr.shape}"
        )
    shape = gt_arr.shape
    if gt_arr.ndim == 2:
        pred_arr, gt_arr = pred_arr[None], gt_arr[None]
    elif gt_arr.ndim == 4 and shape[1] == 1:
        pred_arr, gt_arr = pred_arr[:, 0], gt_arr[:, 0]
    elif gt_arr.ndim != 3:
        raise ValueError(f"depth maps must be (H, W), (B, H, W) or (B, 1, H, W), got shape {shape}")
    if gt_arr.shape[-1] == 0 or gt_arr.shape[-2] == 0:
        raise ValueError(f"depth maps must have a non-empty spatial size, got shape {shape}")
    finite = np.isfinite(gt_arr)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise ValueError(
            f"gt must be finite (use 0 for invalid pixels), found {int((~finite).sum())} non-finite "
            f"value(s), first at batch/row/col {tuple(int(i) for i in bad)}: {gt_arr[tuple(bad)]}"
        )
    return pred_arr, gt_arr


def _image_stats(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sufficient statistics (one ``_STAT_FIELDS`` row) of one cleaned image over its valid pixels."""
    stats = np.zeros(len(_STAT_FIELDS), dtype=np.float64)
    p = pred[mask]
    g = gt[mask]
    n = p.size
    if n == 0:
        return stats
    ratio = np.maximum(p / g, g / p)
    diff = p - g
    log_err = np.log(p) - np.log(g)
    mean_log = log_err.mean()
    stats[_COL["count"]] = n
    stats[_COL["n_d1"]] = np.count_nonzero(ratio < 1.25)
    stats[_COL["n_d2"]] = np.count_nonzero(ratio < 1.25**2)
    stats[_COL["n_d3"]] = np.count_nonzero(ratio < 1.25**3)
    stats[_COL["sum_abs_rel"]] = np.sum(np.abs(diff) / g)
    stats[_COL["sum_sq_rel"]] = np.sum(diff**2 / g)
    stats[_COL["sum_sq_err"]] = np.sum(diff**2)
    stats[_COL["sum_log_sq"]] = np.sum(log_err**2)
    stats[_COL["sum_abs_log10"]] = np.sum(np.abs(np.log10(p) - np.log10(g)))
    stats[_COL["sum_log"]] = np.sum(log_err)
    stats[_COL["m2_log"]] = np.sum((log_err - mean_log) ** 2)
    return stats


def _metrics_from_totals(
    count: float, sums: dict[str, float], mean_log: float, m2_log: float
) -> dict[str, float]:
    if count == 0:
        return dict.fromkeys(DEPTH_METRIC_NAMES, math.nan)
    variance = max(m2_log / count, 0.0)
    return {
        "d1": sums["n_d1"] / count,
        "d2": sums["n_d2"] / count,
        "d3": sums["n_d3"] / count,
        "abs_rel": sums["sum_abs_rel"] / count,
        "sq_rel": sums["sum_sq_rel"] / count,
        "rmse": math.sqrt(sums["sum_sq_err"] / count),
        "rmse_log": math.sqrt(sums["sum_log_sq"] / count),
        "log10": sums["sum_abs_log10"] / count,
        # mean e² − λ(mean e)² = var(e) + (1 − λ)(mean e)²
        "silog_ait": math.sqrt(variance + 0.5 * mean_log**2),
        "silog_bts": 100.0 * math.sqrt(variance),
    }


def _metrics_from_row(row: np.ndarray) -> dict[str, float]:
    count = float(row[_COL["count"]])
    sums = {name: float(row[i]) for i, name in enumerate(_STAT_FIELDS)}
    mean_log = sums["sum_log"] / count if count else math.nan
    return _metrics_from_totals(count, sums, mean_log, sums["m2_log"])


def depth_metrics(
    pred: Any,
    gt: Any,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    eigen_crop: bool = True,
    clip_max: float | None = None,
) -> dict[str, float]:
    """Depth metrics of one image: ``pred`` and ``gt`` in metres, ``(H, W)`` (or ``(1, H, W)``).

    Returns a dict over ``DEPTH_METRIC_NAMES`` (Python floats, all NaN if no pixel is valid).  ``gt == 0``
    (or anything outside ``(min_depth, max_depth)``) is invalid; non-finite ``gt`` or a shape mismatch raise
    ``ValueError``.  See the module docstring for the protocol.
    """
    _check_range(min_depth, max_depth, clip_max)
    pred_b, gt_b = _as_batch(pred, gt)
    if pred_b.shape[0] != 1:
        raise ValueError(
            f"depth_metrics scores one image (H, W); got a batch of {pred_b.shape[0]}: use DepthMetrics"
        )
    pred_clean = clean_prediction(pred_b[0], min_depth, max_depth, clip_max)
    mask = valid_mask(gt_b[0], min_depth, max_depth, eigen_crop)
    return _metrics_from_row(_image_stats(pred_clean, gt_b[0], mask))


class DepthMetrics:
    """Running depth-metric aggregator over images.

    ``update`` takes one image or a batch; ``compute("macro")`` averages per-image metrics over the images
    that have at least one valid pixel (the NYUv2 convention), ``compute("micro")`` pools all valid pixels
    of all images as if they were one image.  Images with no valid pixel are kept (``per_image`` shows them
    as NaN) but left out of the macro mean; ``num_skipped`` counts them.

    Sums are exact-rounded (``math.fsum``), so the result does not depend on the order in which images or
    aggregators were combined: merging per-rank aggregators gives bit-identical numbers to a single one.
    """

    def __init__(
        self,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        eigen_crop: bool = True,
        clip_max: float | None = None,
    ) -> None:
        _check_range(min_depth, max_depth, clip_max)
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.eigen_crop = bool(eigen_crop)
        self.clip_max = None if clip_max is None else float(clip_max)
        self._rows: list[np.ndarray] = []

    # ------------------------------------------------------------------ accumulate
    def update(self, pred: Any, gt: Any) -> None:
        """Add one image ``(H, W)`` or a batch ``(B, H, W)`` / ``(B, 1, H, W)`` (metres)."""
        pred_b, gt_b = _as_batch(pred, gt)
        masks = valid_mask(gt_b, self.min_depth, self.max_depth, self.eigen_crop)
        for p, g, m in zip(pred_b, gt_b, masks):
            p_clean = clean_prediction(p, self.min_depth, self.max_depth, self.clip_max)
            self._rows.append(_image_stats(p_clean, g, m))

    def merge(self, other: DepthMetrics) -> DepthMetrics:
        """Append ``other``'s images (e.g. another rank's aggregator); returns ``self``."""
        if not isinstance(other, DepthMetrics):
            raise ValueError(f"can only merge another DepthMetrics, got {type(other).__name__}")
        if other.config() != self.config():
            raise ValueError(
                f"cannot merge aggregators with different settings: {self.config()} vs {other.config()}"
            )
        self._rows.extend(row.copy() for row in other._rows)
        return self

    def reset(self) -> None:
        self._rows.clear()

    # ------------------------------------------------------------------ results
    def _stats(self) -> np.ndarray:
        if not self._rows:
            return np.zeros((0, len(_STAT_FIELDS)), dtype=np.float64)
        return np.stack(self._rows)

    @property
    def num_images(self) -> int:
        """Images added so far, including skipped ones."""
        return len(self._rows)

    @property
    def num_skipped(self) -> int:
        """Images without a single valid pixel (NaN per image, excluded from the macro mean)."""
        return sum(1 for row in self._rows if row[_COL["count"]] == 0)

    @property
    def num_pixels(self) -> int:
        """Valid pixels over all images."""
        return int(math.fsum(row[_COL["count"]] for row in self._rows))

    def per_image(self) -> list[dict[str, float]]:
        """Metrics of every image in the order they were added (NaN for skipped images)."""
        return [_metrics_from_row(row) for row in self._rows]

    def compute(self, mode: str = "macro") -> dict[str, float]:
        """Metric dict over ``DEPTH_METRIC_NAMES``; NaN everywhere if no image has a valid pixel."""
        if mode == "macro":
            per_image = [m for m in self.per_image() if not math.isnan(m["d1"])]
            if not per_image:
                return dict.fromkeys(DEPTH_METRIC_NAMES, math.nan)
            return {
                name: math.fsum(m[name] for m in per_image) / len(per_image) for name in DEPTH_METRIC_NAMES
            }
        if mode == "micro":
            stats = self._stats()
            stats = stats[stats[:, _COL["count"]] > 0]
            count = math.fsum(stats[:, _COL["count"]])
            if count == 0:
                return dict.fromkeys(DEPTH_METRIC_NAMES, math.nan)
            sums = {name: math.fsum(stats[:, i]) for i, name in enumerate(_STAT_FIELDS)}
            mean_log = sums["sum_log"] / count
            # Pooled M2 = Σ M2_i + Σ n_i (mean_i − mean)²  (Chan et al.), order independent with fsum.
            image_means = stats[:, _COL["sum_log"]] / stats[:, _COL["count"]]
            m2 = sums["m2_log"] + math.fsum(stats[:, _COL["count"]] * (image_means - mean_log) ** 2)
            return _metrics_from_totals(count, sums, mean_log, m2)
        raise ValueError(f'mode must be "macro" or "micro", got {mode!r}')

    # ------------------------------------------------------------------ (de)serialisation
    def config(self) -> dict[str, Any]:
        return {
            "min_depth": self.min_depth,
            "max_depth": self.max_depth,
            "eigen_crop": self.eigen_crop,
            "clip_max": self.clip_max,
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain Python/numpy state (picklable, e.g. for ``torch.distributed.all_gather_object``)."""
        return {
            "format": _STATE_FORMAT,
            "config": self.config(),
            "fields": list(_STAT_FIELDS),
            "stats": self._stats(),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> DepthMetrics:
        if not isinstance(state, dict) or not {"format", "config", "fields", "stats"} <= set(state):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"not a DepthMetrics state dict (need format, config, fields, stats), got {got}")
        if state["format"] != _STATE_FORMAT or list(state["fields"]) != list(_STAT_FIELDS):
            raise ValueError(
                f"incompatible DepthMetrics state: format {state['format']} with fields {state['fields']}, "
                f"expected format {_STATE_FORMAT} with fields {list(_STAT_FIELDS)}"
            )
        stats = np.asarray(state["stats"], dtype=np.float64)
        if stats.ndim != 2 or stats.shape[1] != len(_STAT_FIELDS):
            raise ValueError(f"state stats must be (num_images, {len(_STAT_FIELDS)}), got {stats.shape}")
        agg = cls(**state["config"])
        agg._rows = [row.copy() for row in stats]
        return agg

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"DepthMetrics({cfg}; images={self.num_images}, skipped={self.num_skipped})"
