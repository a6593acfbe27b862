"""Hypothesis properties of the depth metrics and the aggregator (float64 references)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ait_eval import DEPTH_METRIC_NAMES, DepthMetrics, depth_metrics

NO_CROP = {"eigen_crop": False}
SETTINGS = settings(max_examples=40, deadline=None)

shapes = st.tuples(st.integers(1, 6), st.integers(1, 7))


@st.composite
def depth_maps(draw, shape=None, min_valid=1):
    """A gt map in (0.05, 9.9) metres with some invalid (0) pixels, at least ``min_valid`` valid ones."""
    shape = shape or draw(shapes)
    gt = draw(arrays(np.float64, shape, elements=st.floats(0.05, 9.9)))
    invalid = draw(arrays(bool, shape))
    gt = np.where(invalid, 0.0, gt)
    assume(np.count_nonzero(gt) >= min_valid)
    return gt


@SETTINGS
@given(depth_maps())
def test_perfect_prediction(gt):
    m = depth_metrics(gt.copy(), gt, **NO_CROP)
    assert m["d1"] == m["d2"] == m["d3"] == 1.0
    for name in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog_ait", "silog_bts"):
        assert m[name] == 0.0


@SETTINGS
@given(depth_maps(), st.data())
def test_invariant_to_predictions_at_invalid_pixels(gt, data):
    pred = gt * data.draw(arrays(np.float64, gt.shape, elements=st.floats(0.5, 2.0)))
    garbage = data.draw(
        arrays(np.float64, gt.shape, elements=st.floats(allow_nan=True, allow_infinity=True, width=64))
    )
    changed = np.where(gt == 0, garbage, pred)
    assert depth_metrics(changed, gt, **NO_CROP) == depth_metrics(pred, gt, **NO_CROP)


@SETTINGS
@given(depth_maps(), st.floats(0.2, 5.0))
def test_pure_scale_error(gt, scale):
    """pred = s·gt: e = ln s at every pixel, so each metric has a closed form in s."""
    pred = scale * gt
    m = depth_metrics(pred, gt, **NO_CROP)
    g = gt[gt > 0]
    log_s = abs(math.log(scale))
    assert math.isclose(m["abs_rel"], abs(scale - 1), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(m["sq_rel"], (scale - 1) ** 2 * g.mean(), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(m["rmse"], abs(scale - 1) * math.sqrt(np.mean(g**2)), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(m["rmse_log"], log_s, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(m["log10"], log_s / math.log(10), rel_tol=1e-9, abs_tol=1e-12)
    # scale-invariant: BTS SILog vanishes, AiT's λ = 0.5 keeps sqrt(1 − 0.5)·|ln s|
    assert m["silog_bts"] < 1e-5
    assert math.isclose(m["silog_ait"], math.sqrt(0.5) * log_s, rel_tol=1e-7, abs_tol=1e-9)
    ratio = max(scale, 1 / scale)
    for k, name in enumerate(("d1", "d2", "d3"), start=1):
        assume(abs(ratio - 1.25**k) > 1e-9)  # right at a threshold, rounding decides
        assert m[name] == (1.0 if ratio < 1.25**k else 0.0)


@SETTINGS
@given(depth_maps(), st.data())
def test_metric_ranges_and_symmetries(gt, data):
    pred = gt * data.draw(arrays(np.float64, gt.shape, elements=st.floats(0.3, 3.0)))
    m = depth_metrics(pred, gt, **NO_CROP)
    assert 0 <= m["d1"] <= m["d2"] <= m["d3"] <= 1
    assert all(m[name] >= 0 for name in DEPTH_METRIC_NAMES)
    # mean e² − (mean e)² <= mean e² − 0.5 (mean e)² <= mean e²
    assert m["silog_bts"] / 100 <= m["silog_ait"] + 1e-12 <= m["rmse_log"] + 2e-12
    # swapping pred and gt keeps every metric that is symmetric in ln pred − ln gt
    assume(np.all(pred[gt > 0] < 9.9))  # the swapped gt must stay inside the valid range
    reverse = depth_metrics(np.where(gt > 0, gt, 1.0), np.where(gt > 0, pred, 0.0), **NO_CROP)
    for name in ("d1", "d2", "d3", "rmse_log", "log10", "silog_ait", "silog_bts"):
        assert math.isclose(reverse[name], m[name], rel_tol=1e-9, abs_tol=1e-12)


@SETTINGS
@given(st.lists(depth_maps(shape=(3, 4), min_valid=0), min_size=1, max_size=6), st.data())
def test_merge_in_any_split_and_order_equals_one_aggregator(gts, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    preds = [g * rng.uniform(0.5, 2.0, size=g.shape) for g in gts]
    whole = DepthMetrics(**NO_CROP)
    for p, g in zip(preds, gts):
        whole.update(p, g)
    split = data.draw(st.integers(0, len(gts)))
    first, second = DepthMetrics(**NO_CROP), DepthMetrics(**NO_CROP)
    for p, g in zip(preds[:split], gts[:split]):
        first.update(p, g)
    for p, g in zip(preds[split:], gts[split:]):
        second.update(p, g)
    merged = second.merge(first)  # other order than "whole": sums are exact-rounded, so no difference
    for mode in ("macro", "micro"):
        a, b = merged.compute(mode), whole.compute(mode)
        assert all((math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in DEPTH_METRIC_NAMES)
    assert merged.num_skipped == sum(1 for g in gts if not np.any(g > 0))


@SETTINGS
@given(st.lists(depth_maps(shape=(3, 4)), min_size=1, max_size=5), st.data())
def test_micro_equals_one_image_made_of_all_pixels(gts, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    preds = [g * rng.uniform(0.5, 2.0, size=g.shape) for g in gts]
    agg = DepthMetrics(**NO_CROP)
    agg.update(np.stack(preds), np.stack(gts))
    pooled = depth_metrics(np.concatenate(preds, axis=1), np.concatenate(gts, axis=1), **NO_CROP)
    micro = agg.compute("micro")
    for name in DEPTH_METRIC_NAMES:
        assert math.isclose(micro[name], pooled[name], rel_tol=1e-9, abs_tol=1e-9)
    # and macro is the plain mean of the per-image metrics
    per_image = [depth_metrics(p, g, **NO_CROP) for p, g in zip(preds, gts)]
    for name in DEPTH_METRIC_NAMES:
        assert math.isclose(
            agg.compute("macro")[name], np.mean([m[name] for m in per_image]), rel_tol=1e-12, abs_tol=1e-12
        )
