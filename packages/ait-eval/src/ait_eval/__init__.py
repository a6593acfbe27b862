"""ait_eval: depth metrics, COCO bbox/segm/boundary AP and tokenizer reconstruction scores.

numpy + pycocotools only; importing this package never imports torch.
"""

from ait_eval.boundary import boundary_iou, boundary_width, erode_square, mask_iou, mask_to_boundary
from ait_eval.coco import COCO_METRIC_NAMES, IOU_TYPES, detections_from_arrays, evaluate_coco
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
from ait_eval.reconstruction import depth_reconstruction_scores, mask_reconstruction_scores

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
    "mask_iou",
    "mask_reconstruction_scores",
    "mask_to_boundary",
    "valid_mask",
]
