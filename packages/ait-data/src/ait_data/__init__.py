"""ait_data: synthetic rooms, NYUv2 / COCO readers and writers, maskcoco, joint augmentation."""

from ait_data.coco import CocoInstances
from ait_data.maskcoco import MaskCoco, build_maskcoco
from ait_data.nyu import NYUDepthV2
from ait_data.synthetic import SYNTHETIC_CATEGORIES, SensorModel, SyntheticRooms, scaled_intrinsics
from ait_data.transforms import (
    COCO_MEAN,
    COCO_STD,
    DepthTransform,
    InstanceTransform,
    TransformDataset,
    collate,
)
from ait_data.writers import to_coco_dict, write_coco, write_nyu

__all__ = [
    "COCO_MEAN",
    "COCO_STD",
    "SYNTHETIC_CATEGORIES",
    "CocoInstances",
    "DepthTransform",
    "InstanceTransform",
    "MaskCoco",
    "NYUDepthV2",
    "SensorModel",
    "SyntheticRooms",
    "TransformDataset",
    "build_maskcoco",
    "collate",
    "scaled_intrinsics",
    "to_coco_dict",
    "write_coco",
    "write_nyu",
]
