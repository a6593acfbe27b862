"""Boundary IoU: hand-computed cases and the erosion against a literal re-statement of the reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ait_eval import boundary_iou, boundary_width, erode_square, mask_iou, mask_to_boundary


def square_mask(height: int, width: int, top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def reference_erosion(mask: np.ndarray, radius: int) -> np.ndarray:
    """boundary-iou-api's recipe, spelled out: pad one ring of background, apply a 3×3 min ``radius`` times.

    Pixels beyond the padded ring do not exist for the 3×3 min (border value = "no effect"), exactly as
    OpenCV's ``erode`` treats them.
    """
    padded = np.pad(mask.astype(bool), 1, constant_values=False)
    for _ in range(radius):
        big = np.pad(padded, 1, constant_values=True)  # outside the padded image: no effect on a min
        out = np.ones_like(padded)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                out &= big[dy : dy + padded.shape[0], dx : dx + padded.shape[1]]
        padded = out
    return padded[1:-1, 1:-1]


def test_boundary_width_follows_the_image_diagonal():
    assert boundary_width(10, 10) == 1  # 0.02 · 14.1 = 0.28 -> 0, floored at 1
    assert boundary_width(64, 64) == 2  # 0.02 · 90.5 = 1.81
    assert boundary_width(480, 640) == 16  # 0.02 · 800
    assert boundary_width(480, 640, dilation_ratio=0.005) == 4


def test_full_square_boundary_is_its_outer_ring():
    mask = np.ones((5, 5), dtype=bool)
    expected = np.ones((5, 5), dtype=bool)
    expected[1:4, 1:4] = False  # d = 1: the 3×3 interior survives erosion
    np.testing.assert_array_equal(mask_to_boundary(mask), expected)
    # a mask cut by the image border has a boundary along the border too
    assert mask_to_boundary(np.ones((10, 10), dtype=bool)).sum() == 36


def test_shifted_squares_hand_computed():
    # 6×6 squares at (2,2) and (3,3) in 10×10, d = 1: each boundary is its 20-pixel ring.  The rings
    # cross at (7, 3) and (3, 7) only -> intersection 2, union 38.
    gt = square_mask(10, 10, 2, 2, 6)
    pred = square_mask(10, 10, 3, 3, 6)
    assert mask_to_boundary(gt).sum() == 20
    assert boundary_iou(gt, pred) == pytest.approx(2 / 38)
    assert mask_iou(gt, pred) == pytest.approx(25 / 47)


def test_one_column_wider_hand_computed():
    # 64×64 image, d = 2.  gt: 20×20 square (boundary 400 − 16·16 = 144); pred: the same plus one column,
    # 20×21 (boundary 420 − 16·17 = 148).  Shared boundary: gt minus pred's 16×17 interior = 400 − 272 =
    # 128; union 144 + 148 − 128 = 164.
    gt = np.zeros((64, 64), dtype=bool)
    gt[10:30, 10:30] = True
    pred = gt.copy()
    pred[10:30, 30] = True
    assert mask_to_boundary(gt).sum() == 144 and mask_to_boundary(pred).sum() == 148
    assert boundary_iou(gt, pred) == pytest.approx(128 / 164)
    assert mask_iou(gt, pred) == pytest.approx(400 / 420)


def test_degenerate_masks():
    empty = np.zeros((8, 8), dtype=bool)
    some = square_mask(8, 8, 2, 2, 3)
    assert boundary_iou(empty, empty) == 1.0  # identical (empty) masks agree
    assert boundary_iou(empty, some) == 0.0 and boundary_iou(some, empty) == 0.0
    assert boundary_iou(some, some) == 1.0
    assert boundary_iou(some.astype(np.uint8), some.astype(np.float32)) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        boundary_iou(some, some[:, :7])
    with pytest.raises(ValueError, match="dtype"):
        boundary_iou(some.astype(object), some)


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))), st.integers(0, 7))
def test_erosion_matches_the_reference_recipe(mask, radius):
    np.testing.assert_array_equal(erode_square(mask, radius), reference_erosion(mask, radius))


@settings(max_examples=20, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 4), st.integers(2, 9), st.integers(2, 9))))
def test_batched_boundaries_equal_one_at_a_time(masks):
    batched = mask_to_boundary(masks)
    for one, expected in zip(masks, batched):
        np.testing.assert_array_equal(mask_to_boundary(one), expected)


@settings(max_examples=30, deadline=None)
@given(arrays(bool, (12, 12)), arrays(bool, (12, 12)))
def test_boundary_iou_is_symmetric_and_bounded(a, b):
    value = boundary_iou(a, b)
    assert 0.0 <= value <= 1.0
    assert value == boundary_iou(b, a)
    assert (value == 1.0) == (mask_to_boundary(a) == mask_to_boundary(b)).all()


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 14), st.integers(1, 14))), st.floats(0.0, 0.4))
def test_boundary_matches_the_reference_recipe(mask, dilation_ratio):
    # mask_to_boundary erodes only the masks' bounding box; the result must equal eroding the whole image
    radius = boundary_width(*mask.shape, dilation_ratio=dilation_ratio)
    expected = mask & ~reference_erosion(mask, radius)
    np.testing.assert_array_equal(mask_to_boundary(mask, dilation_ratio), expected)
