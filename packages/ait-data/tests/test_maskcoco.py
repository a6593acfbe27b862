import numpy as np
import pytest

from ait_data import MaskCoco, SyntheticRooms, build_maskcoco, write_coco
from ait_data.maskcoco import crop_and_resize, rounded_box


def test_crop_and_resize_by_hand():
    mask = np.zeros((10, 12), bool)
    mask[2:6, 3:11] = True  # a 4x8 rectangle
    out = crop_and_resize(mask, (3, 2, 11, 6), size=8)
    assert out.dtype == np.uint8 and out.shape == (8, 8) and out.all()
    # left half of the box filled -> left half of the crop filled
    half = np.zeros((10, 12), bool)
    half[2:6, 3:7] = True
    out = crop_and_resize(half, (3, 2, 11, 6), size=8)
    assert out[:, :4].all() and not out[:, 4:].any()
    with pytest.raises(ValueError, match="positive width"):
        crop_and_resize(mask, (3, 2, 3, 6))


def test_rounded_box():
    assert rounded_box([1.4, 2.6, 3.2, 0.8], 10, 10) == (1, 3, 5, 3)
    assert rounded_box([-2.0, 5.0, 30.0, 10.0], 10, 20) == (0, 5, 20, 10)


def test_maskcoco_on_synthetic_export(tmp_path):
    rooms = SyntheticRooms(length=3, height=64, width=80, seed=4)
    ann = write_coco(rooms, tmp_path, range(3))
    ds = MaskCoco(build_maskcoco(ann, tmp_path / "m.npz", size=16, min_box=2, progress=False))
    expected = [(i, k) for i in range(3) for k in range(len(rooms[i]["labels"]))]
    boxes = [rooms[i]["boxes"][k] for i, k in expected]
    kept = [(i, k) for (i, k), b in zip(expected, boxes) if b[2] - b[0] >= 2 and b[3] - b[1] >= 2]
    assert len(ds) == len(kept) and ds.masks.shape == (len(kept), 16, 16)
    for j, (i, k) in enumerate(kept):
        s = ds[j]
        assert s["image_id"] == i and s["category_id"] == rooms.label_to_category_id[rooms[i]["labels"][k]]
        assert np.array_equal(s["box"], rooms[i]["boxes"][k].astype(int))
        assert np.array_equal(s["mask"], crop_and_resize(rooms[i]["masks"][k], tuple(s["box"]), 16))


def test_maskcoco_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.npz"):
        MaskCoco(tmp_path / "nothing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a maskcoco file"):
        MaskCoco(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="multiple of 8"):
        build_maskcoco(tmp_path / "a.json", tmp_path / "o.npz", size=60)
