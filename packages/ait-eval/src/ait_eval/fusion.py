"""Weighted box fusion: one image's detections from several decodes merged into one set (numpy only).

A sequence model samples one set of objects per decode; several decodes of the same image (nucleus samples,
the mirrored image) each find some objects and miss others. Fusion keeps what they agree on: within each
class, detections are visited best score first and join the fused box they overlap most if that overlap is
above `iou_threshold`, else start one. A fused box is the score-weighted mean of its members, its mask the
score-weighted vote of theirs, and its score the sum over the decodes of each decode's best member score,
divided by the number of decodes: an object found by every decode keeps its score, one found by a single
decode is ranked below it, and a decode that names one object twice counts once.
"""

from __future__ import annotations

import numpy as np


def box_iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box (4,) with each of boxes (N, 4); degenerate boxes have IoU 0."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def fuse_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    decode_ids: np.ndarray,
    decodes: int,
    iou_threshold: float = 0.55,
    masks: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """All decodes' detections of one image, concatenated -> the fused set, best score first.

    boxes (N, 4) xyxy, scores (N,) in [0, 1], labels (N,) int (negative labels are dropped: no object),
    decode_ids (N,) int: the decode each detection came from, in [0, decodes); decodes: how many decodes
    there were (>= 1; a decode may have found nothing); masks optional bool (N, H, W). Returns
    {"boxes" float32 (M, 4), "scores" float32 (M,) in [0, 1], "labels" int64 (M,)[, "masks" bool (M, H, W)]}.
    One decode fused alone gives its own detections back (each its own cluster unless two of the same
    class overlap by more than the threshold).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    decode_ids = np.asarray(decode_ids).reshape(-1)
    count = len(boxes)
    if len(scores) != count or len(labels) != count or len(decode_ids) != count:
        raise ValueError(
            "boxes, scores, labels and decode_ids must have one row per detection, received "
            f"{count}, {len(scores)}, {len(labels)}, {len(decode_ids)}"
        )
    if masks is not None and (masks.ndim != 3 or len(masks) != count):
        raise ValueError(f"masks must be (N, H, W) with N = {count}, received {tuple(masks.shape)}")
    if int(decodes) < 1:
        raise ValueError(f"decodes must be at least 1, received {decodes}")
    if count and (
        not np.issubdtype(decode_ids.dtype, np.integer) or decode_ids.min() < 0 or decode_ids.max() >= decodes
    ):
        raise ValueError(f"decode_ids must be integers in [0, {decodes}), received {decode_ids.tolist()}")
    if not 0.0 < iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must lie in (0, 1), received {iou_threshold}")
    if count and not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError("boxes and scores must be finite")
    if count and (scores.min() < 0 or scores.max() > 1):
        raise ValueError(f"scores must lie in [0, 1], received values in [{scores.min()}, {scores.max()}]")

    fused_boxes, fused_scores, fused_labels, fused_masks = [], [], [], []
    for label in np.unique(labels[labels >= 0]):
        members = np.nonzero(labels == label)[0]
        members = members[np.argsort(-scores[members], kind="stable")]
        clusters: list[list[int]] = []
        centres: list[np.ndarray] = []
        for index in members:
            if centres:
                overlaps = box_iou_one(boxes[index], np.stack(centres))
                best = int(overlaps.argmax())
                if overlaps[best] > iou_threshold:
                    clusters[best].append(int(index))
                    centres[best] = _weighted_mean(boxes[clusters[best]], scores[clusters[best]])
                    continue
            clusters.append([int(index)])
            centres.append(boxes[index].copy())
        for cluster, centre in zip(clusters, centres, strict=True):
            weights = scores[cluster]
            fused_boxes.append(centre)
            best_per_decode = {}
            for member in cluster:
                source = int(decode_ids[member])
                best_per_decode[source] = max(best_per_decode.get(source, 0.0), scores[member])
            fused_scores.append(sum(best_per_decode.values()) / decodes)
            fused_labels.append(label)
            if masks is not None:
                fused_masks.append(_weighted_vote(masks[cluster], weights))

    order = np.argsort(-np.asarray(fused_scores, dtype=np.float64), kind="stable")
    result = {
        "boxes": np.asarray(fused_boxes, dtype=np.float32).reshape(-1, 4)[order],
        "scores": np.asarray(fused_scores, dtype=np.float32)[order],
        "labels": np.asarray(fused_labels, dtype=np.int64)[order],
    }
    if masks is not None:
        shape = (0, *masks.shape[1:])
        stacked = np.stack(fused_masks) if fused_masks else np.zeros(shape, dtype=bool)
        result["masks"] = stacked[order]
    return result


def _weighted_mean(boxes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    total = weights.sum()
    if total <= 0:  # every member scored 0: a plain mean
        return boxes.mean(axis=0)
    return (boxes * weights[:, None]).sum(axis=0) / total


def _weighted_vote(masks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A pixel is in the fused mask when members holding at least half the cluster's score cover it."""
    total = weights.sum()
    if total <= 0:
        weights, total = np.ones_like(weights), float(len(weights))
    covered = np.tensordot(weights, masks.astype(np.float64), axes=1)
    return covered >= 0.5 * total
