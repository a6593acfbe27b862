"""Losses against float64 hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ait.losses import dice_loss, mask_aux_loss, silog_loss, token_cross_entropy, token_normaliser


def silog_reference(pred: np.ndarray, gt: np.ndarray, lam: float = 0.5) -> float:
    """The AiT convention written out in float64: sqrt(mean d^2 - lam (mean d)^2) over gt > 0."""
    valid = gt > 0
    d = np.log(gt[valid].astype(np.float64)) - np.log(np.maximum(pred[valid].astype(np.float64), 1e-3))
    return math.sqrt(np.mean(d * d) - lam * np.mean(d) ** 2)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), lam=st.sampled_from([0.0, 0.5, 0.85]))
def test_silog_matches_float64_reference(seed, lam):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0.5, 10.0, size=(2, 1, 5, 6)).astype(np.float32)
    gt[rng.random(gt.shape) < 0.3] = 0.0  # sensor holes are ignored
    gt[0, 0, 0, 0] = 2.0  # at least one valid pixel
    pred = rng.uniform(-0.5, 10.0, size=gt.shape).astype(np.float32)  # some below the 1e-3 floor
    got = silog_loss(torch.from_numpy(pred), torch.from_numpy(gt), lam=lam)
    assert got.item() == pytest.approx(silog_reference(pred, gt, lam), rel=1e-5, abs=1e-6)


def test_silog_hand_example_and_gradient():
    # d = ln 2 - ln 1 = ln 2 at one pixel, d = 0 at the other; the third pixel is invalid.
    gt = torch.tensor([2.0, 1.0, 0.0]).view(1, 1, 1, 3)
    pred = torch.tensor([1.0, 1.0, 5.0]).view(1, 1, 1, 3).requires_grad_()
    loss = silog_loss(pred, gt)
    d = math.log(2.0)
    assert loss.item() == pytest.approx(math.sqrt(d * d / 2 - 0.5 * (d / 2) ** 2), rel=1e-6)
    loss.backward()
    assert pred.grad[0, 0, 0, 2] == 0  # invalid pixel gets no gradient
    assert pred.grad[0, 0, 0, 0] < 0  # raising the too-small prediction lowers the loss


def test_silog_no_valid_pixel_is_zero_with_graph():
    pred = torch.ones(1, 1, 2, 2, requires_grad=True)
    loss = silog_loss(pred, torch.zeros(1, 1, 2, 2))
    assert loss.item() == 0.0
    loss.backward()


def test_silog_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        silog_loss(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 3))


def test_dice_and_mse_hand_example():
    pred = torch.tensor([[1.0, 0.5], [0.0, 0.0]]).view(1, 1, 2, 2)
    target = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    # the original's form: inter = 1.5; sum p = 1.5; sum t = 2; dice = 1 - (3 + 1) / (3.5 + 1)
    dice = 1 - 4.0 / 4.5
    mse = 0.25 / 4
    assert dice_loss(pred, target).item() == pytest.approx(dice, rel=1e-6)
    assert mask_aux_loss(pred, target).item() == pytest.approx(dice + mse, rel=1e-6)
    assert mask_aux_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)


def original_dice_mse(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The original's formulas per mask, float64: Dice with p clipped to [0, 1] + MSE of the raw p."""
    p = pred.astype(np.float64).reshape(len(pred), -1)
    t = target.astype(np.float64).reshape(len(target), -1)
    clipped = np.clip(p, 0.0, 1.0)
    dice = 1 - (2 * (clipped * t).sum(-1) + 1) / (clipped.sum(-1) + t.sum(-1) + 1)
    return dice + ((p - t) ** 2).mean(-1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), objects=st.integers(1, 4), side=st.sampled_from([4, 8, 64]))
def test_mask_aux_matches_the_originals_formulas_in_float64(seed, objects, side):
    rng = np.random.default_rng(seed)
    # soft-decoded masks overshoot [0, 1] on both sides; targets are binary crops
    pred = rng.uniform(-0.4, 1.4, size=(objects, 1, side, side)).astype(np.float32)
    target = (rng.random((objects, 1, side, side)) < 0.4).astype(np.float32)
    got = mask_aux_loss(torch.from_numpy(pred), torch.from_numpy(target))
    np.testing.assert_allclose(got.double().numpy(), original_dice_mse(pred, target), rtol=1e-5, atol=1e-6)


def test_mask_mse_keeps_its_gradient_where_the_prediction_overshoots():
    pred = torch.tensor([1.5, -0.5, 0.5, 1.0]).view(1, 1, 2, 2).requires_grad_()
    target = torch.tensor([1.0, 0.0, 1.0, 1.0]).view(1, 1, 2, 2)
    mask_aux_loss(pred, target).sum().backward()
    # overshooting pixels: no Dice gradient (clipped) but the MSE's 2 (p - t) / 4 = +-0.25
    assert pred.grad.flatten()[:2].tolist() == pytest.approx([0.25, -0.25], abs=1e-6)


def test_token_cross_entropy_weighted_sum_and_count():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    targets = torch.tensor([[0, 1, 2]])
    weights = torch.tensor([[1.0, 0.2, 0.0]])
    ce = [math.log(math.exp(2) + 2) - 2, math.log(math.e + 2) - 1, math.log(3)]
    total, count = token_cross_entropy(logits, targets, weights)
    assert total.item() == pytest.approx(ce[0] + 0.2 * ce[1], rel=1e-6)
    assert count.item() == 2  # supervised tokens, whatever their weight
    total, count = token_cross_entropy(logits, targets)
    assert total.item() == pytest.approx(sum(ce), rel=1e-6) and count.item() == 3
    with pytest.raises(ValueError, match="targets"):
        token_cross_entropy(logits, targets[:, :2])


def test_token_normaliser_clamps_to_one_without_distributed():
    assert token_normaliser(torch.tensor(0.0)).item() == 1.0
    assert token_normaliser(torch.tensor(37.0)).item() == 37.0
