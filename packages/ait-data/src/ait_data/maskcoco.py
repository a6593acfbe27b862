"""maskcoco: the box-cropped 64x64 binary instance masks the mask tokenizer trains on.

The original release never shipped the script that made them; this is ours. Each non-crowd instance's
mask is cropped to its box rounded to whole pixels, resized to ``size``x``size`` (bilinear, threshold 0.5)
and stored bit-packed in one ``.npz`` together with an index (image id, annotation id, category id, box).
Boxes under 2 px on a side are skipped, as the original's evaluation does.

    ait-maskcoco annotations/instances_train2017.json --out maskcoco_train2017.npz
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from ait_data.coco import load_coco

MASK_SIZE = 64
MIN_BOX = 2


def rounded_box(bbox_xywh, height: int, width: int) -> tuple[int, int, int, int]:
    """COCO xywh -> integer xyxy (rounded to the nearest pixel edge, clipped to the image)."""
    x, y, w, h = bbox_xywh
    x1, y1 = int(np.clip(round(x), 0, width)), int(np.clip(round(y), 0, height))
    x2, y2 = int(np.clip(round(x + w), 0, width)), int(np.clip(round(y + h), 0, height))
    return x1, y1, x2, y2


def crop_and_resize(mask: np.ndarray, box_xyxy, size: int = MASK_SIZE) -> np.ndarray:
    """Binary crop of ``mask`` (H,W) to the integer box, resized to (size, size): uint8 0/1."""
    x1, y1, x2, y2 = box_xyxy
    if x2 - x1 < 1 or y2 - y1 < 1:
        raise ValueError(f"box must have positive width and height, got {box_xyxy}")
    crop = Image.fromarray(mask[y1:y2, x1:x2].astype(np.uint8) * 255)
    resized = np.asarray(crop.resize((size, size), Image.BILINEAR))
    return (resized >= 128).astype(np.uint8)


def build_maskcoco(
    ann_file,
    out_path,
    size: int = MASK_SIZE,
    min_box: int = MIN_BOX,
    progress: bool = True,
) -> Path:
    """Write the .npz (keys: masks (N, size, size/8) packed bits, image_id, ann_id, category_id, box (N,4)
    xyxy int, size) and return its path."""
    if size % 8:
        raise ValueError(f"size must be a multiple of 8 (bit packing), got {size}")
    coco = load_coco(ann_file)
    anns = [a for a in sorted(coco.anns.values(), key=lambda a: a["id"]) if not a.get("iscrowd", 0)]
    masks, image_ids, ann_ids, category_ids, boxes = [], [], [], [], []
    skipped = 0
    for ann in tqdm(anns, desc="maskcoco", unit="mask", disable=not progress):
        try:
            info = coco.imgs[ann["image_id"]]
            box = rounded_box(ann["bbox"], info["height"], info["width"])
            if box[2] - box[0] < min_box or box[3] - box[1] < min_box:
                skipped += 1
                continue
            full = coco.annToMask(ann)
        except (KeyError, TypeError, IndexError) as error:
            raise ValueError(
                f"{ann_file}: annotation {ann.get('id')!r} is malformed (missing or bad {error}); "
                "every annotation needs image_id, bbox and segmentation, every image height and width"
            ) from error
        masks.append(np.packbits(crop_and_resize(full, box, size), axis=-1))
        image_ids.append(ann["image_id"])
        ann_ids.append(ann["id"])
        category_ids.append(ann["category_id"])
        boxes.append(box)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out_path,
        masks=np.asarray(masks, dtype=np.uint8).reshape(-1, size, size // 8),
        image_id=np.asarray(image_ids, dtype=np.int64),
        ann_id=np.asarray(ann_ids, dtype=np.int64),
        category_id=np.asarray(category_ids, dtype=np.int64),
        box=np.asarray(boxes, dtype=np.int64).reshape(-1, 4),
        size=np.int64(size),
        skipped=np.int64(skipped),
    )
    return out_path


class MaskCoco(Dataset):
    """The .npz written by ``build_maskcoco``. Samples: ``mask`` uint8 (size, size) in {0, 1}, ``image_id``,
    ``ann_id``, ``category_id``, ``box`` (xyxy ints of the crop in the original image)."""

    def __init__(self, npz_path):
        npz_path = Path(npz_path)
        if not npz_path.is_file():
            raise FileNotFoundError(f"maskcoco file not found: {npz_path}")
        try:  # allow_pickle stays False: an object array or a pickle in the file is refused, never run
            with np.load(npz_path, allow_pickle=False) as data:
                if not hasattr(data, "files"):
                    raise ValueError("a single array, not an .npz archive")
                missing = {"masks", "image_id", "ann_id", "category_id", "box", "size"} - set(data.files)
                if missing:
                    raise ValueError(f"missing {sorted(missing)}")
                self.size = int(data["size"])
                self.packed = data["masks"]
                self.image_id, self.ann_id = data["image_id"], data["ann_id"]
                self.category_id, self.box = data["category_id"], data["box"]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, TypeError) as error:
            # numpy's text for an object array advises allow_pickle=True, which could run code: not passed on
            reason = (
                "it holds Python objects, not only arrays; such a file is never loaded, as loading it could run code"
                if "pickle" in str(error).lower()
                else error
            )
            raise ValueError(
                f"{npz_path} is not a maskcoco file ({reason}); rebuild it with `ait-maskcoco ANN_FILE --out ...`"
            ) from error
        if self.packed.dtype != np.uint8 or self.packed.ndim != 3 or len(self.box) != len(self.packed):
            raise ValueError(
                f"{npz_path} is not a maskcoco file: masks {self.packed.dtype} {self.packed.shape} (expected "
                "uint8 (N, size, size/8) with one box per mask); rebuild it with `ait-maskcoco`"
            )

    def __len__(self) -> int:
        return len(self.packed)

    @property
    def masks(self) -> np.ndarray:
        """All masks unpacked: uint8 (N, size, size) in {0, 1}."""
        return np.unpackbits(self.packed, axis=-1, count=self.size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for MaskCoco of length {len(self)}")
        return {
            "mask": np.unpackbits(self.packed[index], axis=-1, count=self.size),
            "image_id": int(self.image_id[index]),
            "ann_id": int(self.ann_id[index]),
            "category_id": int(self.category_id[index]),
            "box": self.box[index].copy(),
        }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="ait-maskcoco", description=__doc__.splitlines()[0])
    parser.add_argument("ann_file", type=Path, help="COCO instances json (e.g. instances_train2017.json)")
    parser.add_argument("--out", type=Path, required=True, help="output .npz")
    parser.add_argument("--size", type=int, default=MASK_SIZE)
    parser.add_argument(
        "--min-box", type=int, default=MIN_BOX, help="skip boxes narrower/shorter than this (px)"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    def body() -> Path:
        out = build_maskcoco(args.ann_file, args.out, args.size, args.min_box, progress=not args.no_progress)
        print(f"wrote {len(MaskCoco(out))} masks to {out}")
        return out

    from ait_data._cli import run_command

    return run_command(body)


def cli(argv: list[str] | None = None) -> int:
    """The console script: `main`, then exit status 0 (a script's `sys.exit(main())` would turn the returned
    path into status 1); failures exit inside `main` with their one-line message."""
    main(argv)
    return 0


if __name__ == "__main__":
    main()
