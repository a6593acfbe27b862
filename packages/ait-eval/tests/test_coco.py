"""COCO bbox / segm / boundary AP through pycocotools, on a synthetic set and on the real tinycoco6 sample."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ait_eval import COCO_METRIC_NAMES, detections_from_arrays, evaluate_coco

ALL_TYPES = ("bbox", "segm", "boundary")

# pycocotools' mask decoding trips a numpy 2 deprecation inside pycocotools itself (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def detections_for(
    coco: dict, masks: dict[int, np.ndarray], shift: int = 0, drop: tuple[int, ...] = ()
) -> list:
    """Detections that copy the ground truth, optionally shifted right by ``shift`` px or missing some ids."""
    dets = []
    for image in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"] and a["id"] not in drop]
        if not anns:
            continue
        boxes = np.array(
            [
                [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                for a in anns
            ]
        )
        boxes[:, [0, 2]] += shift
        stacked = np.stack([np.roll(masks[a["id"]], shift, axis=1) for a in anns])
        scores = np.linspace(0.9, 0.5, len(anns))
        cats = np.array([a["category_id"] for a in anns])
        dets += detections_from_arrays(image["id"], boxes, scores, cats, stacked)
    return dets


def test_detections_equal_to_ground_truth_score_one(synthetic_coco):
    coco, masks = synthetic_coco
    result = evaluate_coco(coco, detections_for(coco, masks), iou_types=ALL_TYPES)
    assert set(result) == set(ALL_TYPES)
    for iou_type in ALL_TYPES:
        # pycocotools averages 101-point precision curves, so "1.0" may come out as 0.9999999999999998
        assert result[iou_type] == pytest.approx(dict.fromkeys(COCO_METRIC_NAMES, 1.0), abs=1e-12)


def test_perturbed_detections_score_lower(synthetic_coco):
    coco, masks = synthetic_coco
    shifted = evaluate_coco(coco, detections_for(coco, masks, shift=3), iou_types=ALL_TYPES)
    for iou_type in ALL_TYPES:
        assert 0.0 < shifted[iou_type]["AP"] < 1.0
    for iou_type in ("bbox", "segm"):
        assert shifted[iou_type]["APs"] < shifted[iou_type]["APl"]  # 3 px hurts a 20 px square most
    # Boundary AP is the strictest (min(mask IoU, boundary IoU) <= mask IoU) and, the point of boundary IoU,
    # does not forgive large objects: a 3 px shift of a 6 px boundary band costs the same at any size.
    assert shifted["boundary"]["AP"] < shifted["segm"]["AP"]
    assert shifted["boundary"]["APl"] < shifted["segm"]["APl"]
    assert shifted["boundary"]["APs"] == pytest.approx(shifted["boundary"]["APl"])
    missing = evaluate_coco(coco, detections_for(coco, masks, drop=(2,)), iou_types=("bbox",))
    assert missing["bbox"]["AP"] < 1.0 and missing["bbox"]["APm"] < 1.0  # the medium object 2 is lost
    assert missing["bbox"]["APs"] == pytest.approx(1.0) and missing["bbox"]["APl"] == pytest.approx(1.0)


def test_boundary_ap_hand_computed():
    # One 20×20 object in a 64×64 image (d = 2), detected one column too wide: mask IoU 400/420 = 0.952,
    # boundary IoU 128/164 = 0.780.  segm matches at all 10 thresholds 0.50..0.95; boundary at 0.50..0.75,
    # i.e. 6 of 10 -> AP 0.6.  The object is small, so APm and APl are undefined (NaN).
    gt_mask = np.zeros((64, 64), dtype=bool)
    gt_mask[10:30, 10:30] = True
    det_mask = gt_mask.copy()
    det_mask[10:30, 30] = True
    rle = mask_utils.encode(np.asfortranarray(gt_mask.astype(np.uint8)))
    coco = {
        "images": [{"id": 7, "height": 64, "width": 64}],
        "categories": [{"id": 3}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 20, 20], "segmentation": rle}
        ],
    }
    dets = detections_from_arrays(7, [[10, 10, 31, 30]], [0.8], [3], det_mask[None])
    result = evaluate_coco(coco, dets, iou_types=("segm", "boundary"))
    assert result["segm"]["AP"] == pytest.approx(1.0)
    assert result["boundary"]["AP"] == pytest.approx(0.6)
    assert result["boundary"]["AP50"] == pytest.approx(1.0) and result["boundary"]["AP75"] == pytest.approx(
        1.0
    )
    assert result["boundary"]["APs"] == pytest.approx(0.6)
    assert math.isnan(result["boundary"]["APm"]) and math.isnan(result["boundary"]["APl"])


def test_no_detections_give_zero_not_a_crash(synthetic_coco):
    coco, _ = synthetic_coco
    result = evaluate_coco(coco, [], iou_types=ALL_TYPES)
    for iou_type in ALL_TYPES:
        assert result[iou_type] == dict.fromkeys(COCO_METRIC_NAMES, 0.0)


def test_json_path_and_dict_agree_and_inputs_are_untouched(synthetic_coco, tmp_path, capsys):
    coco, masks = synthetic_coco
    dets = detections_for(coco, masks, shift=2)
    coco_before, dets_before = copy.deepcopy(coco), copy.deepcopy(dets)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    from_dict = evaluate_coco(coco, dets, iou_types=ALL_TYPES)
    from_file = evaluate_coco(str(path), json.loads(json.dumps(dets)), iou_types=ALL_TYPES)
    assert from_dict == from_file
    assert coco == coco_before and dets == dets_before
    assert capsys.readouterr().out == ""  # pycocotools' prints are swallowed unless verbose=True
    evaluate_coco(coco, dets, iou_types=("bbox",), verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_detections_from_arrays_round_trip():
    masks = np.zeros((2, 6, 8), dtype=bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 4:, :] = True
    dets = detections_from_arrays(
        5, np.array([[2.0, 1.0, 5.0, 3.0], [0, 4, 8, 6]]), [0.9, 0.1], np.array([1, 2]), masks
    )
    assert (
        dets[0]["bbox"] == [2.0, 1.0, 3.0, 2.0] and dets[1]["category_id"] == 2 and dets[0]["image_id"] == 5
    )
    for det, mask in zip(dets, masks):
        np.testing.assert_array_equal(mask_utils.decode(det["segmentation"]).astype(bool), mask)
    json.dumps(dets)  # plain Python types only
    assert detections_from_arrays(1, np.zeros((0, 4)), [], np.zeros(0, dtype=int)) == []
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        detections_from_arrays(1, np.zeros((2, 3)), [1, 1], [1, 1])
    with pytest.raises(ValueError, match=r"\(2,\)"):
        detections_from_arrays(1, np.zeros((2, 4)), [1], [1, 1])
    with pytest.raises(ValueError, match="threshold"):
        detections_from_arrays(1, np.zeros((2, 4)), [1, 1], [1, 1], masks.astype(np.float32) * 0.7)
    with pytest.raises(ValueError, match="x2 >= x1"):
        detections_from_arrays(1, [[5, 0, 1, 1]], [1], [1])


def _break(coco: dict, how: str) -> dict:
    bad = copy.deepcopy(coco)
    if how == "no images":
        del bad["images"]
    elif how == "ann id 0":
        bad["annotations"][0]["id"] = 0
    elif how == "duplicate ann id":
        bad["annotations"][1]["id"] = bad["annotations"][0]["id"]
    elif how == "unknown image":
        bad["annotations"][0]["image_id"] = 99
    elif how == "unknown category":
        bad["annotations"][0]["category_id"] = 99
    elif how == "bad bbox":
        bad["annotations"][0]["bbox"] = [0, 0, -1, 5]
    elif how == "rle size":
        bad["annotations"][0]["segmentation"]["size"] = [10, 10]
    elif how == "short polygon":
        bad["annotations"][1]["segmentation"] = [[1, 2, 3, 4]]
    elif how == "empty polygons":
        bad["annotations"][1]["segmentation"] = []
    elif how == "image size":
        bad["images"][0]["height"] = 0
    return bad


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("no images", "'images'"),
        ("ann id 0", "unique positive"),
        ("duplicate ann id", "unique positive"),
        ("unknown image", "image_id 99"),
        ("unknown category", "category_id 99"),
        ("bad bbox", "width and height"),
        ("rle size", r"image size \[200, 200\]"),
        ("short polygon", "polygon"),
        ("empty polygons", "empty list"),
        ("image size", "positive"),
    ],
)
def test_malformed_ground_truth_is_rejected(synthetic_coco, how, message):
    coco, masks = synthetic_coco
    dets = detections_for(coco, masks)
    with pytest.raises(ValueError, match=message):
        evaluate_coco(_break(coco, how), dets, iou_types=("bbox", "segm"))


def test_malformed_detections_and_arguments_are_rejected(synthetic_coco, tmp_path):
    coco, masks = synthetic_coco
    good = detections_for(coco, masks)
    with pytest.raises(ValueError, match="not in the ground truth's images"):
        evaluate_coco(coco, [{**good[0], "image_id": 42}])
    with pytest.raises(ValueError, match="no 'segmentation'"):
        evaluate_coco(coco, [{k: v for k, v in good[0].items() if k != "segmentation"}], iou_types=("segm",))
    assert evaluate_coco(
        coco, [{k: v for k, v in good[0].items() if k != "segmentation"}], iou_types=("bbox",)
    )
    with pytest.raises(ValueError, match="score"):
        evaluate_coco(coco, [{**good[0], "score": float("nan")}])
    with pytest.raises(ValueError, match="iou_types"):
        evaluate_coco(coco, good, iou_types=("keypoints",))
    with pytest.raises(ValueError, match="list of dicts"):
        evaluate_coco(coco, "detections.json")
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        evaluate_coco(tmp_path / "missing.json", good)


def test_area_defaults_from_the_mask_when_missing(synthetic_coco):
    coco, masks = synthetic_coco
    no_area = copy.deepcopy(coco)
    for ann in no_area["annotations"]:
        del ann["area"], ann["iscrowd"]
    dets = detections_for(coco, masks, shift=3)
    assert evaluate_coco(no_area, dets, iou_types=ALL_TYPES) == evaluate_coco(coco, dets, iou_types=ALL_TYPES)


# ------------------------------------------------------------------------------------------ real sample
def _tinycoco_detections(coco: COCO, jitter: float = 0.0, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    dets = []
    for image_id in coco.getImgIds():
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a["iscrowd"]]
        if not anns:
            continue
        boxes = np.array(
            [
                [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                for a in anns
            ]
        )
        masks = np.stack([coco.annToMask(a).astype(bool) for a in anns])
        if jitter:
            sizes = np.maximum(boxes[:, 2:] - boxes[:, :2], 1.0)
            boxes = boxes + rng.normal(0, jitter, size=boxes.shape) * np.tile(sizes, 2)
            boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
            masks = np.roll(masks, shift=2, axis=2)
        scores = rng.uniform(0.1, 1.0, size=len(anns))
        dets += detections_from_arrays(
            image_id, boxes, scores, np.array([a["category_id"] for a in anns]), masks
        )
    return dets


def test_real_tinycoco_perfect_and_perturbed(tinycoco_json):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tinycoco_json))
    perfect = evaluate_coco(tinycoco_json, _tinycoco_detections(coco), iou_types=ALL_TYPES)
    for iou_type in ALL_TYPES:
        assert perfect[iou_type] == pytest.approx(dict.fromkeys(COCO_METRIC_NAMES, 1.0), abs=1e-12)

    dets = _tinycoco_detections(coco, jitter=0.05, seed=1)
    perturbed = evaluate_coco(tinycoco_json, dets, iou_types=ALL_TYPES)
    for iou_type in ALL_TYPES:
        assert 0.0 < perturbed[iou_type]["AP"] < 1.0
    assert perturbed["boundary"]["AP"] < perturbed["segm"]["AP"]

    # cross-check against pycocotools driven the standard way (loadRes; boxes dropped for segm, as we do)
    with contextlib.redirect_stdout(io.StringIO()):
        results = coco.loadRes([{k: v for k, v in d.items() if k != "bbox"} for d in copy.deepcopy(dets)])
        evaluator = COCOeval(coco, results, iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert [perturbed["segm"][k] for k in COCO_METRIC_NAMES] == pytest.approx(list(evaluator.stats[:6]))
