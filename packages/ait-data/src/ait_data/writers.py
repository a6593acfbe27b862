"""Export a dataset (e.g. SyntheticRooms) to the real on-disk formats, so the real readers can be run on it.

- NYU (BTS / GLPDepth split-file layout): ``<out>/<scene>/rgb_00000.jpg`` + ``<out>/<scene>/sync_depth_00000.png``
  (uint16 millimetres, 0 = invalid) and a split file whose lines are
  ``/<scene>/rgb_00000.jpg /<scene>/sync_depth_00000.png <focal>``.
- COCO: ``<out>/images/<image_id:012d>.jpg`` + ``<out>/annotations/instances_<split>.json`` with compressed-RLE
  segmentations.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

JPEG_QUALITY = 95
NYU_SCENE = "synthetic_rooms"


def _indices(dataset, indices: Iterable[int] | None) -> list[int]:
    return list(range(len(dataset))) if indices is None else [int(i) for i in indices]


def _split(dataset) -> str:
    return str(getattr(dataset, "split", "train"))


def depth_to_millimetres(depth: np.ndarray) -> np.ndarray:
    """Metres (float) -> uint16 millimetres, rounded; raises on values that do not fit."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    if not np.isfinite(depth).all() or depth.min(initial=0) < 0 or depth.max(initial=0) > 65.535:
        raise ValueError(
            f"depth must be finite metres in [0, 65.535] to fit uint16 millimetres, "
            f"got range [{np.nanmin(depth)}, {np.nanmax(depth)}]"
        )
    return np.round(depth.astype(np.float64) * 1000.0).astype(np.uint16)


def write_nyu(dataset, out_dir, indices: Iterable[int] | None = None, scene: str = NYU_SCENE) -> Path:
    """Write samples in the BTS/GLPDepth NYU layout and return the split file (``nyu_<split>.txt``).

    The sensor depth (``sample["depth"]``, holes = 0) becomes ``sync_depth_*.png``. Read it back with
    ``NYUDepthV2(out_dir, split_file)``.
    """
    out_dir = Path(out_dir)
    (out_dir / scene).mkdir(parents=True, exist_ok=True)
    focal = float(getattr(dataset, "intrinsics", np.array([[518.8579]]))[0, 0])
    lines = []
    for i in _indices(dataset, indices):
        sample = dataset[i]
        rgb = f"/{scene}/rgb_{i:05d}.jpg"
        depth = f"/{scene}/sync_depth_{i:05d}.png"
        Image.fromarray(sample["image"]).save(out_dir / rgb[1:], quality=JPEG_QUALITY)
        Image.fromarray(depth_to_millimetres(sample["depth"])).save(out_dir / depth[1:])
        lines.append(f"{rgb} {depth} {focal:.4f}")
    split_file = out_dir / f"nyu_{_split(dataset)}.txt"
    split_file.write_text("\n".join(lines) + "\n")
    return split_file


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """bool (H,W) -> COCO compressed RLE with a JSON-friendly str ``counts``."""
    from pycocotools import mask as mask_utils  # the `coco` extra; write_nyu works without it

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _coco_records(dataset, indices, image_dir: Path | None) -> dict[str, Any]:
    images, annotations = [], []
    next_ann_id = 1  # pycocotools treats annotation id 0 as "unmatched": start at 1
    for i in _indices(dataset, indices):
        sample = dataset[i]
        image_id = int(sample.get("image_id", i))
        height, width = sample["image"].shape[:2]
        file_name = f"{image_id:012d}.jpg"
        if image_dir is not None:
            Image.fromarray(sample["image"]).save(image_dir / file_name, quality=JPEG_QUALITY)
        images.append({"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)})
        for box, label, mask in zip(sample["boxes"], sample["labels"], sample["masks"]):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    "id": next_ann_id,
                    "image_id": image_id,
                    "category_id": int(dataset.label_to_category_id[int(label)]),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": float(mask.sum()),
                    "segmentation": encode_mask(mask),
                    "iscrowd": 0,
                }
            )
            next_ann_id += 1
    return {
        "info": {"description": f"{type(dataset).__name__} exported by ait_data"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in dataset.categories],
    }


def to_coco_dict(dataset, indices: Iterable[int] | None = None) -> dict[str, Any]:
    """In-memory COCO ground truth (e.g. for ``ait_eval.evaluate_coco``); nothing is written."""
    return _coco_records(dataset, indices, image_dir=None)


def write_coco(dataset, out_dir, indices: Iterable[int] | None = None) -> Path:
    """Write ``images/*.jpg`` and ``annotations/instances_<split>.json``; return the annotation file.

    Read it back with ``CocoInstances(out_dir / "images", ann_file)``.
    """
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    coco = _coco_records(dataset, indices, image_dir=image_dir)
    ann_file = out_dir / "annotations" / f"instances_{_split(dataset)}.json"
    ann_file.write_text(json.dumps(coco))
    return ann_file
