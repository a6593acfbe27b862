"""Weighted box fusion: hand-computed merges and properties over random detection sets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ait_eval import fuse_detections
from ait_eval.fusion import box_iou_one


def random_detections(seed: int, count: int, classes: int = 3, size: int = 32):
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, size, size=(count, 2, 2))
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1) + 1.0], axis=1)
    scores = rng.uniform(0.01, 1.0, size=count)
    labels = rng.integers(0, classes, size=count)
    masks = rng.random((count, 8, 8)) < 0.5
    return boxes, scores, labels, masks


def test_two_decodes_that_agree_give_the_mean_box_at_the_mean_score():
    boxes = np.array([[10.0, 10.0, 20.0, 20.0], [12.0, 10.0, 22.0, 20.0]])
    fused = fuse_detections(boxes, np.array([0.8, 0.2]), np.array([1, 1]), np.array([0, 1]), decodes=2)
    # IoU 8*10 / (2*100 - 80) = 0.67 > 0.55: one cluster, weighted 0.8 / 0.2
    np.testing.assert_allclose(fused["boxes"], [[10.4, 10.0, 20.4, 20.0]], rtol=1e-6)
    np.testing.assert_allclose(fused["scores"], [0.5])
    assert fused["labels"].tolist() == [1]


def test_an_object_one_decode_missed_is_ranked_below_one_every_decode_found():
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [30.0, 30.0, 40.0, 40.0]])
    fused = fuse_detections(
        boxes, np.array([0.6, 0.6, 0.9]), np.array([0, 0, 0]), np.array([0, 1, 1]), decodes=2
    )
    np.testing.assert_allclose(fused["scores"], [0.6, 0.45])
    np.testing.assert_allclose(fused["boxes"][0], [0, 0, 10, 10])


def test_other_classes_and_distant_boxes_stay_apart_and_negative_labels_are_dropped():
    boxes = np.array(
        [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0], [0, 0, 10, 10]]
    )
    fused = fuse_detections(
        boxes, np.array([0.5, 0.4, 0.3, 0.9]), np.array([0, 1, 0, -1]), np.zeros(4, int), decodes=1
    )
    assert sorted(fused["labels"].tolist()) == [0, 0, 1]
    np.testing.assert_allclose(np.sort(fused["scores"]), [0.3, 0.4, 0.5])


def test_masks_are_the_score_weighted_vote():
    boxes = np.tile([[0.0, 0.0, 4.0, 4.0]], (3, 1))
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[0, :2] = True  # score 0.5: alone, exactly half of the cluster's 1.0
    masks[1, :, :2] = True  # 0.3
    masks[2, :, :2] = True  # 0.2
    fused = fuse_detections(
        boxes, np.array([0.5, 0.3, 0.2]), np.zeros(3, int), np.arange(3), decodes=3, masks=masks
    )
    expected = np.zeros((4, 4), dtype=bool)
    expected[:2] = True  # 0.5 >= 0.5
    expected[:, :2] = True  # 0.3 + 0.2 (+ 0.5 in the top rows)
    np.testing.assert_array_equal(fused["masks"][0], expected)


def test_a_decode_that_names_one_object_twice_counts_once():
    # decode 0 names the object twice at 0.6, decode 1 once at 0.6; another object, once per decode at 0.9
    boxes = np.array([[0.0, 0.0, 10.0, 10.0]] * 3 + [[30.0, 30.0, 40.0, 40.0]] * 2)
    scores = np.array([0.6, 0.6, 0.6, 0.9, 0.9])
    fused = fuse_detections(boxes, scores, np.zeros(5, int), np.array([0, 0, 1, 0, 1]), decodes=2)
    np.testing.assert_allclose(fused["scores"], [0.9, 0.6])
    np.testing.assert_allclose(fused["boxes"][0], [30, 30, 40, 40])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), count=st.integers(0, 24), decodes=st.integers(1, 6))
def test_fusion_keeps_scores_in_range_boxes_inside_their_members_and_classes_present(seed, count, decodes):
    boxes, scores, labels, masks = random_detections(seed, count)
    decode_ids = np.random.default_rng(seed).integers(0, decodes, size=count)
    fused = fuse_detections(boxes, scores, labels, decode_ids, decodes=decodes, masks=masks)
    m = len(fused["scores"])
    assert m <= count and fused["boxes"].shape == (m, 4) and fused["masks"].shape == (m, 8, 8)
    assert np.all((fused["scores"] > 0) & (fused["scores"] <= 1.0))
    assert np.all(np.diff(fused["scores"]) <= 0)  # best first
    assert set(fused["labels"].tolist()) == set(labels.tolist())
    # each decode's score counts at most once per fused box: the total is at most the input's, and with one
    # detection per decode (nothing for a decode to count twice) it is exactly the input's
    assert fused["scores"].sum() * decodes <= scores.sum() + 1e-5
    if count and len(np.unique(decode_ids)) == count:
        assert np.isclose(fused["scores"].sum() * decodes, scores.sum(), rtol=1e-5)
    for box, label in zip(fused["boxes"], fused["labels"], strict=True):
        same = boxes[labels == label]
        assert np.all(box[:2] >= same[:, :2].min(axis=0) - 1e-4)
        assert np.all(box[2:] <= same[:, 2:].max(axis=0) + 1e-4)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), count=st.integers(1, 12), copies=st.integers(1, 5))
def test_identical_decodes_fuse_to_one_of_them(seed, count, copies):
    boxes, scores, labels, _ = random_detections(seed, count, classes=count, size=64)
    labels = np.arange(count)  # one object per class: no two of one decode can merge
    fused = fuse_detections(
        np.tile(boxes, (copies, 1)),
        np.tile(scores, copies),
        np.tile(labels, copies),
        np.repeat(np.arange(copies), count),
        decodes=copies,
    )
    order = np.argsort(-scores, kind="stable")
    np.testing.assert_allclose(fused["scores"], scores[order], rtol=1e-6)
    np.testing.assert_allclose(fused["boxes"], boxes[order], rtol=1e-5)
    np.testing.assert_array_equal(fused["labels"], labels[order])


@given(seed=st.integers(0, 2**31 - 1), count=st.integers(1, 16))
@settings(max_examples=30, deadline=None)
def test_box_iou_one_is_symmetric_and_one_on_itself(seed, count):
    boxes, *_ = random_detections(seed, count)
    for i in range(count):
        row = box_iou_one(boxes[i], boxes)
        assert np.isclose(row[i], 1.0) and np.all((row >= 0) & (row <= 1 + 1e-12))
        for j in range(count):
            assert np.isclose(row[j], box_iou_one(boxes[j], boxes[i : i + 1])[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decodes": 0}, "decodes must be at least 1"),
        ({"iou_threshold": 1.0}, "iou_threshold must lie in"),
        ({"scores": np.array([np.nan])}, "finite"),
        ({"scores": np.array([1.5])}, r"scores must lie in \[0, 1\]"),
        ({"labels": np.array([0, 1])}, "one row per detection"),
        ({"decode_ids": np.array([1])}, r"decode_ids must be integers in \[0, 1\)"),
        ({"decode_ids": np.array([0.0])}, "decode_ids must be integers"),
        ({"masks": np.zeros((2, 4, 4), dtype=bool)}, "masks must be"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    args = {
        "boxes": np.array([[0.0, 0.0, 1.0, 1.0]]),
        "scores": np.array([0.5]),
        "labels": np.array([0]),
        "decode_ids": np.array([0]),
        "decodes": 1,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fuse_detections(**args)
