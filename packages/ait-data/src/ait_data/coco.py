"""COCO instance segmentation reader (pycocotools)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from ait_data.io import read_rgb


def load_coco(ann_file) -> COCO:
    """pycocotools COCO from a path, without its progress prints."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return COCO(str(ann_file))
        except (ValueError, KeyError, TypeError, AssertionError) as err:
            raise ValueError(f"{ann_file} is not a valid COCO instances file: {err!r}") from err


class CocoInstances(Dataset):
    """COCO images with their instances. Samples: ``image`` uint8 (H,W,3), ``boxes`` float32 (N,4) xyxy,
    ``labels`` int64 (N,) contiguous 0..C-1 (categories in id order), ``masks`` bool (N,H,W),
    ``iscrowd`` bool (N,), ``image_id`` int.

    Crowd regions are skipped by default; with ``skip_crowd=False`` they are kept and flagged in ``iscrowd``.
    Boxes with no width or height are dropped. Images without annotations are kept (N = 0).
    ``label_to_category_id[label]`` gives the COCO category id back; ``category_id_to_label`` the reverse.
    """

    def __init__(self, image_dir, ann_file, skip_crowd: bool = True):
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder not found: {self.image_dir}")
        self.coco = load_coco(ann_file)
        self.skip_crowd = skip_crowd
        self.image_ids = sorted(self.coco.imgs)
        self.categories = [self.coco.cats[c] for c in sorted(self.coco.cats)]
        self.label_to_category_id = [int(c["id"]) for c in self.categories]
        self.category_id_to_label = {c: i for i, c in enumerate(self.label_to_category_id)}
        self.num_classes = len(self.categories)

    def __len__(self) -> int:
        return len(self.image_ids)

    def annotations(self, index: int) -> list[dict[str, Any]]:
        """The annotations of one image that the sample will contain, in id order."""
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[self.image_ids[index]]))
        keep = []
        for ann in sorted(anns, key=lambda a: a["id"]):
            if self.skip_crowd and ann.get("iscrowd", 0):
                continue
            _, _, w, h = ann["bbox"]
            if w <= 0 or h <= 0:
                continue
            keep.append(ann)
        return keep

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for CocoInstances of length {len(self)}")
        info = self.coco.imgs[self.image_ids[index]]
        path = self.image_dir / info["file_name"]
        image = read_rgb(path)
        if image.shape[:2] != (info["height"], info["width"]):
            raise ValueError(
                f"{path} is {image.shape[0]}x{image.shape[1]} but the annotation file says "
                f"{info['height']}x{info['width']}"
            )
        anns = self.annotations(index)
        height, width = image.shape[:2]
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        labels = np.array([self.category_id_to_label[a["category_id"]] for a in anns], dtype=np.int64)
        masks = np.zeros((len(anns), height, width), dtype=bool)
        for k, ann in enumerate(anns):
            masks[k] = self.coco.annToMask(ann).astype(bool)  # polygons, RLE and uncompressed RLE
        iscrowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        return {
            "image": image,
            "boxes": boxes,
            "labels": labels,
            "masks": masks,
            "iscrowd": iscrowd,
            "image_id": int(info["id"]),
        }
