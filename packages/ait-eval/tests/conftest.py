"""Shared fixtures: the real data samples (the repository's fixtures/ folder) and a small COCO set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest

# tests -> ait-eval -> packages -> repo root; the real samples are committed in fixtures/
REPO_ROOT = Path(__file__).resolve().parents[3]
FIXTURES = REPO_ROOT / "fixtures"


def _real_sample(path: Path) -> Path:
    """`path`, which every clone has: a missing one is an error, never a skip."""
    if not path.exists():
        pytest.fail(f"real data fixture missing at {path.resolve()} (fixtures/ is part of the repository)")
    return path


@pytest.fixture(scope="session")
def nyu_sample_dir() -> Path:
    return _real_sample(FIXTURES / "nyu_sample")


@pytest.fixture(scope="session")
def tinycoco_json() -> Path:
    return _real_sample(FIXTURES / "coco_sample" / "annotations" / "instances_train2017_tinycoco6.json")


def square_mask(height: int, width: int, top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def make_synthetic_coco() -> tuple[dict, dict[int, np.ndarray]]:
    """Two 200×200 images, two categories, one small (20²), medium (50²) and large (120²) object each.

    Segmentations mix compressed RLE, uncompressed RLE and polygons, the three forms COCO files use.
    Returns the COCO dict and each annotation's mask (by annotation id).
    """
    height = width = 200
    objects = [  # (image_id, category_id, top, left, size, segmentation form)
        (1, 1, 10, 10, 20, "rle"),
        (1, 2, 40, 60, 50, "polygon"),
        (1, 1, 70, 70, 120, "rle"),
        (2, 2, 150, 150, 20, "uncompressed"),
        (2, 1, 10, 100, 50, "rle"),
        (2, 2, 60, 5, 120, "polygon"),
    ]
    annotations, masks = [], {}
    for ann_id, (image_id, category_id, top, left, size, form) in enumerate(objects, start=1):
        mask = square_mask(height, width, top, left, size)
        if form == "polygon":
            # polygon on pixel corners; pycocotools rasterises it to exactly the size×size square
            x0, y0, x1, y1 = left, top, left + size, top + size
            segmentation = [[x0, y0, x1, y0, x1, y1, x0, y1]]
            mask = mask_utils.decode(
                mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
            ).astype(bool)
        elif form == "uncompressed":
            flat = mask.flatten(order="F").astype(np.int64)
            change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
            segmentation = {
                "size": [height, width],
                "counts": np.diff(np.concatenate([[0], change])).tolist(),
            }
        else:
            segmentation = _rle(mask)
        ys, xs = np.nonzero(mask)
        annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": category_id,
                "bbox": [
                    float(xs.min()),
                    float(ys.min()),
                    float(xs.max() - xs.min() + 1),
                    float(ys.max() - ys.min() + 1),
                ],
                "area": float(mask.sum()),
                "iscrowd": 0,
                "segmentation": segmentation,
            }
        )
        masks[ann_id] = mask
    coco = {
        "images": [{"id": i, "height": height, "width": width, "file_name": f"{i}.jpg"} for i in (1, 2)],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "ball"}],
    }
    return coco, masks


@pytest.fixture
def synthetic_coco() -> tuple[dict, dict[int, np.ndarray]]:
    return make_synthetic_coco()
