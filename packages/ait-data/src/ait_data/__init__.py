"""ait_data: synthetic rooms, NYUv2 / COCO readers and writers, maskcoco, joint augmentation.

The core (synthetic rooms, NYUv2, image reading, ``write_nyu``) needs numpy, pillow and torch. COCO reading and
writing and maskcoco need the ``coco`` extra (pycocotools), the joint augmentation the ``augment`` extra
(torchvision): their names are imported on first use, so ``import ait_data`` works without them.
"""

from importlib import import_module

from ait_data.nyu import NYUDepthV2
from ait_data.synthetic import SYNTHETIC_CATEGORIES, SensorModel, SyntheticRooms, scaled_intrinsics
from ait_data.writers import write_nyu

# name -> (module, extra that brings its third-party dependency)
_LAZY = {
    "CocoInstances": ("ait_data.coco", "coco"),
    "MaskCoco": ("ait_data.maskcoco", "coco"),
    "build_maskcoco": ("ait_data.maskcoco", "coco"),
    "to_coco_dict": ("ait_data.writers", "coco"),
    "write_coco": ("ait_data.writers", "coco"),
    "COCO_MEAN": ("ait_data.transforms", "augment"),
    "COCO_STD": ("ait_data.transforms", "augment"),
    "DepthTransform": ("ait_data.transforms", "augment"),
    "InstanceTransform": ("ait_data.transforms", "augment"),
    "TransformDataset": ("ait_data.transforms", "augment"),
    "collate": ("ait_data.transforms", "augment"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ait_data' has no attribute {name!r}")
    module, extra = _LAZY[name]
    try:
        value = getattr(import_module(module), name)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"ait_data.{name} needs {exc.name}, which is not installed: "
            f"pip install './packages/ait-data[{extra}]' (from a clone of the repository)",
            name=exc.name,
        ) from exc
    globals()[name] = value
    return value


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
