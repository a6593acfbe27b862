"""The evaluator on real NYUv2 frames, cross-checked against a literal re-statement of the protocol."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ait_eval import DEPTH_METRIC_NAMES, DepthMetrics, depth_metrics


def load_depth_m(path: Path) -> np.ndarray:
    """uint16 millimetre PNG -> float metres (0 stays 0 = invalid)."""
    with Image.open(path) as img:
        raw = np.array(img)
    assert raw.dtype == np.uint16 or raw.dtype == np.int32, (
        raw.dtype
    )  # PIL reads I;16 as uint16 (or I as int32)
    return raw.astype(np.float64) / 1000.0


def perturbed(gt: np.ndarray, seed: int) -> np.ndarray:
    """A plausible bad prediction: 10 % too far plus 5 cm Gaussian noise (seeded)."""
    rng = np.random.default_rng(seed)
    return gt * 1.1 + rng.normal(0.0, 0.05, size=gt.shape)


def reference_errors(pred: np.ndarray, gt: np.ndarray, min_depth=1e-3, max_depth=10.0) -> dict[str, float]:
    """GLPDepth/BTS-style evaluation written out step by step (Eigen crop at 480×640, float64)."""
    pred = pred.copy()
    pred[pred < min_depth] = min_depth
    pred[np.isinf(pred)] = max_depth
    pred[np.isnan(pred)] = min_depth
    crop = np.zeros(gt.shape, dtype=bool)
    crop[45:471, 41:601] = True
    valid = (gt > min_depth) & (gt < max_depth) & crop
    p, g = pred[valid], gt[valid]
    thresh = np.maximum(g / p, p / g)
    err = np.log(p) - np.log(g)
    return {
        "d1": np.mean(thresh < 1.25),
        "d2": np.mean(thresh < 1.25**2),
        "d3": np.mean(thresh < 1.25**3),
        "abs_rel": np.mean(np.abs(g - p) / g),
        "sq_rel": np.mean((g - p) ** 2 / g),
        "rmse": np.sqrt(np.mean((g - p) ** 2)),
        "rmse_log": np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)),
        "log10": np.mean(np.abs(np.log10(g) - np.log10(p))),
        "silog_ait": np.sqrt(np.mean(err**2) - 0.5 * np.mean(err) ** 2),
        "silog_bts": np.sqrt(np.mean(err**2) - np.mean(err) ** 2) * 100,
    }


def test_official_test_frames_match_the_reference(nyu_sample_dir):
    paths = sorted((nyu_sample_dir / "test_official_densedepth").glob("depth_*.png"))
    assert len(paths) == 5
    agg = DepthMetrics()  # NYU defaults: 1e-3..10 m, Eigen crop
    for i, path in enumerate(paths):
        gt = load_depth_m(path)
        assert gt.shape == (480, 640)
        pred = perturbed(gt, seed=i)
        mine, ref = depth_metrics(pred, gt), reference_errors(pred, gt)
        for name in DEPTH_METRIC_NAMES:
            assert math.isclose(mine[name], ref[name], rel_tol=1e-9, abs_tol=1e-12), name
        agg.update(pred, gt)
    macro = agg.compute("macro")
    # ×1.1 dominates: AbsRel close to 0.1, every pixel's ratio near 1.1 < 1.25, log error near ln 1.1
    assert 0.09 < macro["abs_rel"] < 0.11
    assert macro["d1"] > 0.97 and macro["d3"] == pytest.approx(1.0)
    assert macro["silog_bts"] < 5.0 < 100 * macro["silog_ait"]  # scale-invariant vs not
    assert agg.num_skipped == 0 and agg.num_images == 5


def test_raw_frames_with_holes(nyu_sample_dir):
    paths = sorted((nyu_sample_dir / "train_sync_metric3d").glob("sync_depth_*.png"))
    assert len(paths) == 3
    for i, path in enumerate(paths):
        gt = load_depth_m(path)
        assert (gt == 0).mean() > 0.2  # raw Kinect holes
        pred = perturbed(gt, seed=10 + i)
        pred[gt == 0] = np.nan  # whatever a model says at holes must not matter
        mine, ref = depth_metrics(pred, gt), reference_errors(pred, gt)
        for name in DEPTH_METRIC_NAMES:
            assert math.isclose(mine[name], ref[name], rel_tol=1e-9, abs_tol=1e-12), name
