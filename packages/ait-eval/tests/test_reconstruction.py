"""Tokenizer reconstruction scores."""

from __future__ import annotations

import numpy as np
import pytest

from ait_eval import DepthMetrics, depth_reconstruction_scores, mask_reconstruction_scores


def test_mask_scores_hand_computed():
    gt = np.zeros((2, 10, 10), dtype=np.uint8)
    gt[:, 2:8, 2:8] = 1
    rec = np.zeros((2, 10, 10), dtype=np.float32)
    rec[0, 2:8, 2:8] = 0.9  # pair 0: perfect after thresholding
    rec[1, 3:9, 3:9] = 0.6  # pair 1: shifted by one pixel: IoU 25/47, boundary IoU 2/38
    scores = mask_reconstruction_scores(gt, rec)
    assert scores["mean_iou"] == pytest.approx((1 + 25 / 47) / 2)
    assert scores["mean_boundary_iou"] == pytest.approx((1 + 2 / 38) / 2)
    # a threshold above 0.6 wipes out the second reconstruction
    assert mask_reconstruction_scores(gt, rec, threshold=0.7)["mean_iou"] == pytest.approx(0.5)


def test_mask_scores_empty_pairs_and_errors():
    empty = np.zeros((1, 64, 64), dtype=bool)
    assert mask_reconstruction_scores(empty, empty) == {"mean_iou": 1.0, "mean_boundary_iou": 1.0}
    with pytest.raises(ValueError, match="same shape"):
        mask_reconstruction_scores(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))
    with pytest.raises(ValueError, match="N = 0"):
        mask_reconstruction_scores(np.zeros((0, 8, 8)), np.zeros((0, 8, 8)))
    with pytest.raises(ValueError, match="non-finite"):
        mask_reconstruction_scores(np.zeros((1, 8, 8)), np.full((1, 8, 8), np.nan))


def test_depth_scores_are_the_macro_depth_metrics():
    rng = np.random.default_rng(3)
    gt = rng.uniform(0.5, 9.0, size=(3, 1, 32, 32)).astype(np.float32)
    gt[:, :, :4] = 0.0  # sensor holes
    recon = gt * rng.uniform(0.9, 1.1, size=gt.shape).astype(np.float32)
    scores = depth_reconstruction_scores(recon, gt, eigen_crop=False)
    reference = DepthMetrics(eigen_crop=False)
    reference.update(recon[:, 0], gt[:, 0])
    assert scores == reference.compute("macro")
    assert 0.0 < scores["abs_rel"] < 0.1
