"""ait_eval: depth metrics, COCO bbox/segm/boundary AP, tokenizer reconstruction scores, box fusion.

The core needs numpy only; COCO AP (``evaluate_coco``, ``detections_from_arrays``) needs the ``coco`` extra
(pycocotools) and is imported on first use. Importing this package never imports torch.
"""

from importlib import import_module

from ait_eval.boundary import boundary_iou, boundary_width, erode_square, mask_iou, mask_to_boundary
from ait_eval.depth import (
    DEPTH_METRIC_NAMES,
    DepthMetrics,
    EIGEN_CROP_480x640,
    clean_prediction,
    depth_metrics,
    eigen_crop_bounds,
    eigen_crop_mask,
    valid_mask,
)
from ait_eval.fusion import fuse_detections
from ait_eval.reconstruction import depth_reconstruction_scores, mask_reconstruction_scores

_COCO_NAMES = ("COCO_METRIC_NAMES", "IOU_TYPES", "detections_from_arrays", "evaluate_coco")


def __getattr__(name: str):
    if name not in _COCO_NAMES:
        raise AttributeError(f"module 'ait_eval' has no attribute {name!r}")
    try:
        value = getattr(import_module("ait_eval.coco"), name)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"ait_eval.{name} needs {exc.name}, which is not installed: "
            "pip install './packages/ait-eval[coco]' (from a clone of the repository)",
            name=exc.name,
        ) from exc
    globals()[name] = value
    return value


__all__ = [
    "COCO_METRIC_NAMES",
    "DEPTH_METRIC_NAMES",
    "IOU_TYPES",
    "DepthMetrics",
    "EIGEN_CROP_480x640",
    "boundary_iou",
    "boundary_width",
    "clean_prediction",
    "depth_metrics",
    "depth_reconstruction_scores",
    "detections_from_arrays",
    "eigen_crop_bounds",
    "eigen_crop_mask",
    "erode_square",
    "evaluate_coco",
    "fuse_detections",
    "mask_iou",
    "mask_reconstruction_scores",
    "mask_to_boundary",
    "valid_mask",
]
