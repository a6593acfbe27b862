"""Hand-worked depth-metric examples, the protocol's cropping/clipping, the aggregator and bad input."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from ait_eval import (
    DEPTH_METRIC_NAMES,
    DepthMetrics,
    clean_prediction,
    depth_metrics,
    eigen_crop_bounds,
    eigen_crop_mask,
)

NO_CROP = {"eigen_crop": False}


def test_every_metric_on_a_hand_worked_example():
    # gt 2 m everywhere; ratios max(p/g, g/p) = 1, 1.2, 4/3, 1.8; |p − g| = 0, 0.4, 0.5, 1.6
    gt = np.full((2, 2), 2.0)
    pred = np.array([[2.0, 2.4], [1.5, 3.6]])
    m = depth_metrics(pred, gt, **NO_CROP)
    assert m["d1"] == 0.5  # 1 and 1.2 are < 1.25
    assert m["d2"] == 0.75  # 4/3 < 1.5625
    assert m["d3"] == 1.0  # 1.8 < 1.953125
    assert m["abs_rel"] == pytest.approx((0 + 0.4 + 0.5 + 1.6) / 2 / 4)  # 0.3125
    assert m["sq_rel"] == pytest.approx((0 + 0.16 + 0.25 + 2.56) / 2 / 4)  # 0.37125
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 0.16 + 0.25 + 2.56) / 4))
    logs = [0.0, math.log(1.2), math.log(0.75), math.log(1.8)]
    assert m["rmse_log"] == pytest.approx(math.sqrt(sum(e * e for e in logs) / 4))
    assert m["log10"] == pytest.approx(sum(abs(e) for e in logs) / 4 / math.log(10))
    mean, mean_sq = sum(logs) / 4, sum(e * e for e in logs) / 4
    assert m["silog_ait"] == pytest.approx(math.sqrt(mean_sq - 0.5 * mean**2))
    assert m["silog_bts"] == pytest.approx(100 * math.sqrt(mean_sq - mean**2))
    assert set(m) == set(DEPTH_METRIC_NAMES)


def test_silog_conventions_on_unit_log_errors():
    gt = np.full((1, 4), 3.0)
    # e = ln(pred/gt) = +1, −1, +1, −1: mean e = 0, mean e² = 1
    m = depth_metrics(gt * np.exp([[1.0, -1.0, 1.0, -1.0]]), gt, **NO_CROP)
    assert m["silog_ait"] == pytest.approx(1.0)
    assert m["silog_bts"] == pytest.approx(100.0)
    assert m["rmse_log"] == pytest.approx(1.0)
    assert m["log10"] == pytest.approx(1 / math.log(10))
    # e = 1, 1, 1, −1: mean e = 0.5, mean e² = 1 -> AiT sqrt(1 − 0.125), BTS 100 sqrt(1 − 0.25)
    m = depth_metrics(gt * np.exp([[1.0, 1.0, 1.0, -1.0]]), gt, **NO_CROP)
    assert m["silog_ait"] == pytest.approx(math.sqrt(0.875))
    assert m["silog_bts"] == pytest.approx(100 * math.sqrt(0.75))


def test_valid_range_is_strict_and_zero_is_invalid():
    gt = np.array([[0.0, 1e-3, 0.5, 10.0, 12.0, 9.0]])
    pred = np.array([[7.0, 7.0, 0.5, 7.0, 7.0, 9.0]])  # only 0.5 and 9.0 are valid and exact
    m = depth_metrics(pred, gt, **NO_CROP)
    assert m["rmse"] == 0.0 and m["d1"] == 1.0
    agg = DepthMetrics(**NO_CROP)
    agg.update(pred, gt)
    assert agg.num_pixels == 2


def test_prediction_cleaning_order():
    pred = np.array([-np.inf, -1.0, 0.0, 5e-4, np.nan, np.inf, 20.0, 3.0])
    expected = [1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 10.0, 20.0, 3.0]
    np.testing.assert_array_equal(clean_prediction(pred), expected)  # no upper clip by default (AiT)
    np.testing.assert_array_equal(clean_prediction(pred, clip_max=10.0), [*expected[:6], 10.0, 3.0])
    assert np.isnan(pred[4])  # the input is not modified


def test_non_finite_predictions_are_scored_after_cleaning():
    gt = np.array([[2.0, 4.0, 5.0]])
    raw = depth_metrics(np.array([[np.inf, np.nan, -3.0]]), gt, **NO_CROP)
    cleaned = depth_metrics(np.array([[10.0, 1e-3, 1e-3]]), gt, **NO_CROP)
    assert raw == cleaned
    assert depth_metrics(np.array([[20.0, 4.0, 5.0]]), gt, clip_max=10.0, **NO_CROP) == depth_metrics(
        np.array([[10.0, 4.0, 5.0]]), gt, **NO_CROP
    )


def test_eigen_crop_at_480x640_ignores_the_border():
    assert eigen_crop_bounds(480, 640) == (45, 471, 41, 601)
    gt = np.full((480, 640), 5.0)
    pred = np.full((480, 640), 1.0)
    pred[45:471, 41:601] = 5.0  # exact inside the crop, wrong outside
    assert depth_metrics(pred, gt)["rmse"] == 0.0
    assert depth_metrics(pred, gt, eigen_crop=False)["rmse"] > 0.0
    agg = DepthMetrics()
    agg.update(pred, gt)
    assert agg.num_pixels == 426 * 560


def test_eigen_crop_scales_with_the_map_size():
    # 96×128 is 480×640 / 5: 45/5 = 9, 471/5 = 94.2, 41/5 = 8.2, 601/5 = 120.2
    assert eigen_crop_bounds(96, 128) == (9, 94, 8, 120)
    # 240×320 is exactly half: 22.5 -> 23 (round half up), 235.5 -> 236, 20.5 -> 21, 300.5 -> 301
    assert eigen_crop_bounds(240, 320) == (23, 236, 21, 301)
    mask = eigen_crop_mask(96, 128)
    assert mask.sum() == (94 - 9) * (120 - 8) and mask[9, 8] and not mask[8, 8] and not mask[9, 120]


def test_image_without_valid_pixels_is_nan_and_skipped():
    empty_gt = np.zeros((4, 4))
    m = depth_metrics(np.ones((4, 4)), empty_gt, **NO_CROP)
    assert all(math.isnan(v) for v in m.values())

    agg = DepthMetrics(**NO_CROP)
    agg.update(np.ones((4, 4)), empty_gt)
    assert all(math.isnan(v) for v in agg.compute("macro").values())
    assert all(math.isnan(v) for v in agg.compute("micro").values())
    good_gt = np.full((4, 4), 2.0)
    agg.update(good_gt * 1.1, good_gt)
    assert agg.num_images == 2 and agg.num_skipped == 1
    assert agg.compute("macro")["abs_rel"] == pytest.approx(0.1)  # the empty image does not drag it to 0.05
    assert math.isnan(agg.per_image()[0]["rmse"]) and agg.per_image()[1]["rmse"] == pytest.approx(0.2)


def test_macro_and_micro_on_a_hand_worked_pair():
    agg = DepthMetrics(**NO_CROP)
    # image A: one valid pixel, gt 2, pred 3 -> abs_rel 0.5, rmse 1
    agg.update(np.array([[3.0, 0.0, 0.0, 0.0, 0.0]]), np.array([[2.0, 0.0, 0.0, 0.0, 0.0]]))
    # image B: five valid pixels, all exact -> abs_rel 0, rmse 0
    agg.update(np.full((1, 5), 2.0), np.full((1, 5), 2.0))
    macro, micro = agg.compute("macro"), agg.compute("micro")
    assert macro["abs_rel"] == pytest.approx(0.25) and micro["abs_rel"] == pytest.approx(0.5 / 6)
    assert macro["rmse"] == pytest.approx(0.5) and micro["rmse"] == pytest.approx(math.sqrt(1 / 6))
    assert macro["d1"] == pytest.approx(0.5) and micro["d1"] == pytest.approx(5 / 6)
    # SILog micro pools e over all 6 pixels: e = ln 1.5 once and 0 five times
    e = math.log(1.5)
    assert micro["silog_bts"] == pytest.approx(100 * math.sqrt(e * e / 6 - (e / 6) ** 2))
    assert micro["silog_ait"] == pytest.approx(math.sqrt(e * e / 6 - 0.5 * (e / 6) ** 2))
    assert macro["silog_ait"] == pytest.approx((math.sqrt(0.5) * e + 0.0) / 2)


def test_batches_and_channel_layout_are_equivalent_to_single_images():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 8.0, size=(3, 24, 32))
    pred = gt * rng.uniform(0.8, 1.2, size=gt.shape)
    single, batched, channel = DepthMetrics(), DepthMetrics(), DepthMetrics()
    for p, g in zip(pred, gt):
        single.update(p, g)
    batched.update(pred, gt)
    channel.update(pred[:, None].astype(np.float32), gt[:, None].astype(np.float32))
    assert single.compute() == batched.compute()
    assert channel.compute() == pytest.approx(batched.compute(), rel=1e-5)
    assert single.per_image()[1] == depth_metrics(pred[1], gt[1])


def test_merge_and_state_dict_round_trip():
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.5, 8.0, size=(6, 16, 16))
    gt[2] = 0.0  # one skipped image travels with the state too
    pred = gt * rng.uniform(0.7, 1.3, size=gt.shape)
    whole = DepthMetrics(**NO_CROP)
    whole.update(pred, gt)
    rank0, rank1 = DepthMetrics(**NO_CROP), DepthMetrics(**NO_CROP)
    rank0.update(pred[:4], gt[:4])
    rank1.update(pred[4:], gt[4:])
    # what all_gather_object would carry: a pickled state dict
    restored = DepthMetrics.from_state_dict(pickle.loads(pickle.dumps(rank1.state_dict())))
    merged = DepthMetrics.from_state_dict(rank0.state_dict()).merge(restored)
    for mode in ("macro", "micro"):
        assert merged.compute(mode) == whole.compute(mode)
    assert merged.num_skipped == 1 and merged.num_images == 6


def test_bad_input_raises_clear_errors():
    gt = np.ones((4, 4))
    with pytest.raises(ValueError, match=r"same shape.*\(4, 4\).*\(4, 5\)"):
        depth_metrics(np.ones((4, 4)), np.ones((4, 5)))
    bad = gt.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="gt must be finite"):
        depth_metrics(gt, bad)
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        DepthMetrics().update(gt, bad)
    with pytest.raises(ValueError, match="one image"):
        depth_metrics(np.ones((2, 4, 4)), np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match=r"\(H, W\), \(B, H, W\)"):
        depth_metrics(np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match="real-valued"):
        depth_metrics(gt.astype(bool), gt)
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        DepthMetrics(min_depth=5.0, max_depth=1.0)
    with pytest.raises(ValueError, match="clip_max"):
        DepthMetrics(clip_max=0.0)
    with pytest.raises(ValueError, match="macro"):
        DepthMetrics().compute("weighted")
    with pytest.raises(ValueError, match="different settings"):
        DepthMetrics().merge(DepthMetrics(max_depth=80.0))
    with pytest.raises(ValueError, match="state dict"):
        DepthMetrics.from_state_dict({"stats": []})


class FakeTensor:
    """Quacks like a (CUDA) torch tensor: the package converts with detach().cpu().numpy()."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def detach(self) -> FakeTensor:
        return self

    def cpu(self) -> FakeTensor:
        return self

    def numpy(self) -> np.ndarray:
        return self._array


def test_tensor_like_inputs_are_converted():
    gt = np.full((1, 1, 8, 8), 3.0, dtype=np.float32)
    pred = gt * 1.2
    agg = DepthMetrics(**NO_CROP)
    agg.update(FakeTensor(pred), FakeTensor(gt))
    assert agg.compute() == depth_metrics(pred[0, 0], gt[0, 0], **NO_CROP)
    assert agg.compute()["abs_rel"] == pytest.approx(0.2)
