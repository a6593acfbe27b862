"""COCO instance evaluation (bbox, segm and boundary AP) through pycocotools.

``evaluate_coco`` validates its inputs before handing them to pycocotools, whose own failures on bad input
are bare ``assert``/``KeyError``s or, worse, silently wrong numbers.  Notable rules:

* ground-truth annotation ids must be unique positive integers: COCOeval stores the matched ground-truth
  id of each detection and reads 0 as "unmatched", so an annotation with id 0 could never be matched;
* a missing ``iscrowd`` defaults to 0 and a missing ``area`` to the segmentation's pixel area (or the box
  area when there is no segmentation); ``area`` decides the small / medium / large split;
* for ``segm`` and ``boundary`` the detections' boxes are dropped before evaluation, so a detection's area
  (used to ignore unmatched detections outside an area range) is its mask area, as in detectron2;
* a metric that is undefined (no ground truth in that area range, pycocotools' ``-1``) is reported as NaN.

``boundary`` is Boundary AP (Cheng et al. 2021, boundary-iou-api): COCO AP where the detection/ground-truth
overlap is ``min(mask IoU, boundary IoU)`` for ordinary objects and plain mask IoU against crowd regions.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ait_eval._arrays import to_numpy
from ait_eval.boundary import DEFAULT_DILATION_RATIO, mask_to_boundary

IOU_TYPES: tuple[str, ...] = ("bbox", "segm", "boundary")
COCO_METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")


# ---------------------------------------------------------------------------------------------- detections
def _encode_mask(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    # bytes -> str so the detections can be written with json.dump
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def detections_from_arrays(
    image_id: int,
    boxes_xyxy: Any,
    scores: Any,
    category_ids: Any,
    masks: Any = None,
) -> list[dict[str, Any]]:
    """COCO result dicts for the detections of one image.

    ``boxes_xyxy`` ``(N, 4)`` in pixels of the original image, ``scores`` ``(N,)``, ``category_ids`` ``(N,)``
    COCO category ids (not contiguous labels), ``masks`` optional ``(N, H, W)`` bool (or 0/1 integer) masks
    at the original image size, encoded to compressed RLE.  Each dict has ``image_id``, ``category_id``,
    ``bbox`` (xywh), ``score`` and, with masks, ``segmentation``; all plain Python types (JSON-ready).
    """
    boxes = to_numpy(boxes_xyxy).astype(np.float64)
    scores_arr = to_numpy(scores).astype(np.float64)
    cats = to_numpy(category_ids)
    if boxes.ndim == 1 and boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes_xyxy must be (N, 4), got shape {boxes.shape}")
    n = boxes.shape[0]
    if scores_arr.shape != (n,) or cats.shape != (n,):
        raise ValueError(
            f"scores and category_ids must be ({n},) to match boxes, got {scores_arr.shape} and {cats.shape}"
        )
    if n and not np.issubdtype(cats.dtype, np.integer):
        raise ValueError(f"category_ids must be integers (COCO category ids), got dtype {cats.dtype}")
    if not (np.isfinite(boxes).all() and np.isfinite(scores_arr).all()):
        raise ValueError("boxes_xyxy and scores must be finite")
    if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise ValueError("boxes_xyxy must have x2 >= x1 and y2 >= y1")
    mask_arr = None
    if masks is not None:
        mask_arr = to_numpy(masks)
        if mask_arr.ndim != 3 or mask_arr.shape[0] != n:
            raise ValueError(f"masks must be ({n}, H, W) to match boxes, got shape {mask_arr.shape}")
        if mask_arr.dtype != bool:
            if not np.issubdtype(mask_arr.dtype, np.integer) or not np.isin(mask_arr, (0, 1)).all():
                raise ValueError(
                    f"masks must be bool or 0/1 integers (threshold probabilities first), got dtype {mask_arr.dtype}"
                )
            mask_arr = mask_arr.astype(bool)
    detections = []
    for i in range(n):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        det: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": int(cats[i]),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(scores_arr[i]),
        }
        if mask_arr is not None:
            det["segmentation"] = _encode_mask(mask_arr[i])
        detections.append(det)
    return detections


# ---------------------------------------------------------------------------------------------- validation
def _is_int(x: Any) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _check_bbox(bbox: Any, where: str) -> list[float]:
    if not isinstance(bbox, Sequence) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise ValueError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(f"{where}: bbox width and height must be >= 0, got {bbox!r}")
    return [float(v) for v in bbox]


def _check_segmentation(segm: Any, height: int, width: int, where: str, allow_polygons: bool) -> Any:
    """Return the segmentation in a form pycocotools accepts (uncompressed RLE counts are compressed)."""
    if isinstance(segm, Mapping):
        if "size" not in segm or "counts" not in segm:
            raise ValueError(f"{where}: RLE segmentation needs 'size' and 'counts', got keys {sorted(segm)}")
        size = list(segm["size"])
        if size != [height, width]:
            raise ValueError(f"{where}: RLE size must be the image size [{height}, {width}], got {size}")
        counts = segm["counts"]
        if isinstance(counts, list):
            if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != height * width:
                raise ValueError(f"{where}: uncompressed RLE counts must be non-negative ints summing to H*W")
            return mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
        if not isinstance(counts, (str, bytes)):
            raise ValueError(
                f"{where}: RLE counts must be str, bytes or a list of ints, got {type(counts).__name__}"
            )
        return {"size": size, "counts": counts}
    if allow_polygons and isinstance(segm, list):
        if not segm:
            raise ValueError(f"{where}: segmentation is an empty list of polygons")
        for poly in segm:
            if (
                not isinstance(poly, Sequence)
                or len(poly) < 6
                or len(poly) % 2
                or not all(_is_number(v) for v in poly)
            ):
                raise ValueError(
                    f"{where}: a polygon must be an even list of >= 6 finite numbers, got {poly!r}"
                )
        return segm
    kinds = "an RLE dict or a list of polygons" if allow_polygons else "an RLE dict"
    raise ValueError(f"{where}: segmentation must be {kinds}, got {type(segm).__name__}")


def _validated_ground_truth(gt: Any, need_masks: bool) -> dict[str, Any]:
    """A validated, defaults-filled copy of a COCO ground-truth dict (the caller's dict is not modified)."""
    if isinstance(gt, (str, Path)):
        path = Path(gt)
        if not path.is_file():
            raise FileNotFoundError(f"COCO ground-truth file not found: {path}")
        with path.open() as f:
            try:
                gt = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(gt, Mapping):
        raise ValueError(
            f"ground truth must be a COCO dict or a path to a COCO json, got {type(gt).__name__}"
        )
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(gt.get(k), list)]
    if missing:
        raise ValueError(
            f"COCO ground truth needs lists 'images', 'annotations', 'categories'; missing or not a list: {missing}"
        )

    images: dict[int, dict[str, Any]] = {}
    for i, img in enumerate(gt["images"]):
        where = f"images[{i}]"
        if not isinstance(img, Mapping) or not all(_is_int(img.get(k)) for k in ("id", "height", "width")):
            raise ValueError(f"{where} needs integer 'id', 'height', 'width', got {img!r}"[:300])
        if img["height"] <= 0 or img["width"] <= 0:
            raise ValueError(
                f"{where}: height and width must be positive, got {img['height']}x{img['width']}"
            )
        if img["id"] in images:
            raise ValueError(f"{where}: duplicate image id {img['id']}")
        images[int(img["id"])] = {
            **img,
            "id": int(img["id"]),
            "height": int(img["height"]),
            "width": int(img["width"]),
        }

    categories: dict[int, dict[str, Any]] = {}
    for i, cat in enumerate(gt["categories"]):
        if not isinstance(cat, Mapping) or not _is_int(cat.get("id")):
            raise ValueError(f"categories[{i}] needs an integer 'id', got {cat!r}"[:300])
        if cat["id"] in categories:
            raise ValueError(f"categories[{i}]: duplicate category id {cat['id']}")
        categories[int(cat["id"])] = {**cat, "id": int(cat["id"])}

    annotations = []
    seen_ids: set[int] = set()
    for i, ann in enumerate(gt["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, Mapping):
            raise ValueError(f"{where} must be a dict, got {type(ann).__name__}")
        for key in ("id", "image_id", "category_id"):
            if not _is_int(ann.get(key)):
                raise ValueError(f"{where} needs an integer {key!r}, got {ann.get(key)!r}")
        if ann["id"] <= 0 or ann["id"] in seen_ids:
            raise ValueError(
                f"{where}: annotation ids must be unique positive integers (pycocotools reads id 0 as "
                f"'unmatched'), got {ann['id']}"
            )
        seen_ids.add(int(ann["id"]))
        if ann["image_id"] not in images:
            raise ValueError(f"{where}: image_id {ann['image_id']} is not in 'images'")
        if ann["category_id"] not in categories:
            raise ValueError(f"{where}: category_id {ann['category_id']} is not in 'categories'")
        out = dict(ann)
        out.update(id=int(ann["id"]), image_id=int(ann["image_id"]), category_id=int(ann["category_id"]))
        out["bbox"] = _check_bbox(ann.get("bbox"), where)
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1):
            raise ValueError(f"{where}: iscrowd must be 0 or 1, got {iscrowd!r}")
        out["iscrowd"] = int(iscrowd)
        img = images[out["image_id"]]
        if "segmentation" in ann:
            out["segmentation"] = _check_segmentation(
                ann["segmentation"], img["height"], img["width"], where, allow_polygons=True
            )
        elif need_masks:
            raise ValueError(f"{where} has no 'segmentation', needed for segm/boundary evaluation")
        if "area" in ann:
            if not _is_number(ann["area"]) or ann["area"] < 0:
                raise ValueError(f"{where}: area must be a finite number >= 0, got {ann['area']!r}")
            out["area"] = float(ann["area"])
        elif "segmentation" in out:
            rle = _ann_rle(out["segmentation"], img["height"], img["width"])
            out["area"] = float(mask_utils.area(rle))
        else:
            out["area"] = out["bbox"][2] * out["bbox"][3]
        annotations.append(out)

    return {
        "info": dict(gt["info"]) if isinstance(gt.get("info"), Mapping) else {},
        "images": list(images.values()),
        "annotations": annotations,
        "categories": list(categories.values()),
    }


def _ann_rle(segm: Any, height: int, width: int) -> dict[str, Any]:
    if isinstance(segm, list):  # polygons
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    return segm


def _validated_detections(
    detections: Any, gt: dict[str, Any], need_masks: bool, need_boxes: bool
) -> list[dict[str, Any]]:
    if not isinstance(detections, Sequence) or isinstance(detections, (str, bytes)):
        raise ValueError(f"detections must be a list of dicts, got {type(detections).__name__}")
    images = {img["id"]: img for img in gt["images"]}
    category_ids = {cat["id"] for cat in gt["categories"]}
    out = []
    for i, det in enumerate(detections):
        where = f"detections[{i}]"
        if not isinstance(det, Mapping):
            raise ValueError(f"{where} must be a dict, got {type(det).__name__}")
        for key in ("image_id", "category_id"):
            if not _is_int(det.get(key)):
                raise ValueError(f"{where} needs an integer {key!r}, got {det.get(key)!r}")
        if det["image_id"] not in images:
            raise ValueError(f"{where}: image_id {det['image_id']} is not in the ground truth's images")
        if det["category_id"] not in category_ids:
            raise ValueError(
                f"{where}: category_id {det['category_id']} is not in the ground truth's categories"
            )
        if not _is_number(det.get("score")):
            raise ValueError(f"{where} needs a finite 'score', got {det.get('score')!r}")
        clean: dict[str, Any] = {
            "image_id": int(det["image_id"]),
            "category_id": int(det["category_id"]),
            "score": float(det["score"]),
        }
        if need_boxes:
            if "bbox" not in det:
                raise ValueError(f"{where} has no 'bbox', needed for bbox evaluation")
            clean["bbox"] = _check_bbox(det["bbox"], where)
        if need_masks:
            if "segmentation" not in det:
                raise ValueError(f"{where} has no 'segmentation', needed for segm/boundary evaluation")
            img = images[clean["image_id"]]
            clean["segmentation"] = _check_segmentation(
                det["segmentation"], img["height"], img["width"], where, allow_polygons=False
            )
        out.append(clean)
    return out


# ---------------------------------------------------------------------------------------------- evaluation
def _decode(rle: dict[str, Any]) -> np.ndarray:
    # pycocotools' Cython decode trips numpy 2's __array__(copy=...) deprecation on every call; the
    # warning is about pycocotools internals, not the caller, so keep it out of their logs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


def _coco_from_dict(dataset: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _results_for(iou_type: str, detections: list[dict[str, Any]], gt: dict[str, Any]) -> dict[str, Any]:
    """A COCO results dataset for one IoU type, built as ``COCO.loadRes`` would (which fails on [])."""
    anns = []
    for i, det in enumerate(detections, start=1):
        ann = {
            "id": i,
            "image_id": det["image_id"],
            "category_id": det["category_id"],
            "score": det["score"],
            "iscrowd": 0,
        }
        if iou_type == "bbox":
            ann["bbox"] = list(det["bbox"])
            ann["area"] = det["bbox"][2] * det["bbox"][3]
        else:  # mask area and box from the mask, not the predicted box (see module docstring)
            ann["segmentation"] = dict(det["segmentation"])
            ann["area"] = float(mask_utils.area(ann["segmentation"]))
            ann["bbox"] = [float(v) for v in mask_utils.toBbox(ann["segmentation"])]
        anns.append(ann)
    return {"images": gt["images"], "categories": gt["categories"], "annotations": anns}


class _BoundaryCOCOeval(COCOeval):
    """COCOeval whose overlap is min(mask IoU, boundary IoU) (mask IoU alone for crowd ground truth)."""

    def __init__(self, coco_gt: COCO, coco_dt: COCO, dilation_ratio: float) -> None:
        super().__init__(coco_gt, coco_dt, iouType="segm")
        self.dilation_ratio = dilation_ratio

    def _boundary_rle(self, ann: dict[str, Any]) -> dict[str, Any]:
        # annotations are our own copies, so caching on them is safe; each is needed once per evaluation
        if "_boundary_rle" not in ann:
            boundary = mask_to_boundary(_decode(ann["segmentation"]).astype(bool), self.dilation_ratio)
            ann["_boundary_rle"] = mask_utils.encode(np.asfortranarray(boundary.astype(np.uint8)))
        return ann["_boundary_rle"]

    def computeIoU(self, imgId: int, catId: int) -> Any:
        p = self.params
        if p.useCats:
            gt = self._gts[imgId, catId]
            dt = self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 and len(dt) == 0:
            return []
        # same detection order and truncation as COCOeval.computeIoU, which evaluateImg relies on
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        iscrowd = [int(g["iscrowd"]) for g in gt]
        mask_ious = mask_utils.iou([d["segmentation"] for d in dt], [g["segmentation"] for g in gt], iscrowd)
        if len(gt) == 0 or len(dt) == 0:
            return mask_ious
        crowd = np.asarray(iscrowd, dtype=bool)
        ious = np.asarray(mask_ious, dtype=np.float64)
        if (~crowd).any():
            regular = [g for g, c in zip(gt, crowd) if not c]
            boundary_ious = np.asarray(
                mask_utils.iou(
                    [self._boundary_rle(d) for d in dt],
                    [self._boundary_rle(g) for g in regular],
                    [0] * len(regular),
                ),
                dtype=np.float64,
            )
            ious[:, ~crowd] = np.minimum(ious[:, ~crowd], boundary_ious)
        return ious


def evaluate_coco(
    gt: str | Path | Mapping[str, Any],
    detections: Sequence[Mapping[str, Any]],
    iou_types: Sequence[str] = ("bbox", "segm"),
    dilation_ratio: float = DEFAULT_DILATION_RATIO,
    verbose: bool = False,
) -> dict[str, dict[str, float]]:
    """COCO AP of ``detections`` against ``gt`` for each of ``iou_types`` ("bbox", "segm", "boundary").

    ``gt``: a COCO instances json path or an in-memory COCO dict.  ``detections``: result dicts as made by
    ``detections_from_arrays`` (``image_id``, ``category_id``, ``score``, ``bbox`` xywh for bbox, RLE
    ``segmentation`` for segm/boundary).  Returns ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl"}}``
    with values in [0, 1] (NaN where undefined, see the module docstring).  No detections give AP 0.
    pycocotools' progress output is shown only with ``verbose=True``.
    """
    if isinstance(iou_types, str):
        iou_types = (iou_types,)
    unknown = [t for t in iou_types if t not in IOU_TYPES]
    if unknown or not iou_types:
        raise ValueError(f"iou_types must be a non-empty subset of {IOU_TYPES}, got {tuple(iou_types)}")
    need_masks = any(t in ("segm", "boundary") for t in iou_types)
    gt_dataset = _validated_ground_truth(gt, need_masks)
    dets = _validated_detections(
        detections, gt_dataset, need_masks=need_masks, need_boxes="bbox" in iou_types
    )

    results: dict[str, dict[str, float]] = {}
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        for iou_type in iou_types:
            # fresh COCO objects per type: COCOeval rewrites annotation fields in place
            coco_gt = _coco_from_dict(
                {**gt_dataset, "annotations": [dict(a) for a in gt_dataset["annotations"]]}
            )
            coco_dt = _coco_from_dict(_results_for(iou_type, dets, gt_dataset))
            if iou_type == "boundary":
                evaluator: COCOeval = _BoundaryCOCOeval(coco_gt, coco_dt, dilation_ratio)
            else:
                evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
            if verbose:
                print(f"[ait_eval] {iou_type} evaluation")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            stats = evaluator.stats[: len(COCO_METRIC_NAMES)]
            results[iou_type] = {
                name: (float(v) if v >= 0 else math.nan) for name, v in zip(COCO_METRIC_NAMES, stats)
            }
    return results
