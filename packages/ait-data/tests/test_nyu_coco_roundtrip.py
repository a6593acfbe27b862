import json

import h5py
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from ait_data import CocoInstances, NYUDepthV2, SyntheticRooms, to_coco_dict, write_coco, write_nyu
from ait_data.writers import depth_to_millimetres

JPEG_MEAN_ABS_ERROR = 4.0  # quality 95 on rendered rooms is typically ~1


def test_nyu_round_trip(tmp_path, small_rooms):
    split_file = write_nyu(small_rooms, tmp_path, indices=[0, 3, 5])
    lines = split_file.read_text().splitlines()
    assert lines[1].split()[:2] == ["/synthetic_rooms/rgb_00003.jpg", "/synthetic_rooms/sync_depth_00003.png"]
    depth_png = np.asarray(Image.open(tmp_path / "synthetic_rooms" / "sync_depth_00003.png"))
    assert depth_png.dtype == np.uint16
    nyu = NYUDepthV2(tmp_path, split_file, split="train")
    assert len(nyu) == 3
    for k, i in enumerate([0, 3, 5]):
        original, read = small_rooms[i], nyu[k]
        # exact in millimetres: the reader gives png / 1000
        assert read["depth"].dtype == np.float32
        assert np.array_equal(
            read["depth"], depth_to_millimetres(original["depth"]).astype(np.float32) / 1000
        )
        assert np.abs(read["depth"] - original["depth"]).max() <= 0.0005 + 1e-6
        assert np.array_equal(read["depth"] == 0, original["depth"] == 0)
        assert read["image"].shape == original["image"].shape and read["image"].dtype == np.uint8
        assert np.abs(read["image"].astype(float) - original["image"]).mean() < JPEG_MEAN_ABS_ERROR


def test_coco_round_trip(tmp_path, small_rooms):
    ann_file = write_coco(small_rooms, tmp_path, indices=range(4))
    coco = CocoInstances(tmp_path / "images", ann_file)
    assert len(coco) == 4 and coco.num_classes == small_rooms.num_classes
    assert coco.label_to_category_id == small_rooms.label_to_category_id
    for i in range(4):
        original, read = small_rooms[i], coco[i]
        assert read["image_id"] == original["image_id"] == i
        assert np.array_equal(read["masks"], original["masks"])
        assert np.array_equal(read["boxes"], original["boxes"])
        assert np.array_equal(read["labels"], original["labels"])
        assert not read["iscrowd"].any()
        assert np.abs(read["image"].astype(float) - original["image"]).mean() < JPEG_MEAN_ABS_ERROR


def test_to_coco_dict_is_valid_ground_truth(small_rooms):
    from pycocotools.coco import COCO

    gt = to_coco_dict(small_rooms, [1, 2])
    assert [im["id"] for im in gt["images"]] == [1, 2]
    assert min(a["id"] for a in gt["annotations"]) == 1  # id 0 would break COCOeval matching
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    for ann in gt["annotations"]:
        mask = coco.annToMask(ann)
        assert mask.sum() == ann["area"]
        assert np.allclose(mask_utils.toBbox(ann["segmentation"]), ann["bbox"])


def _write_pairs(root, names, size=(24, 32)):
    rng = np.random.default_rng(0)
    for rgb, depth in names:
        (root / rgb).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / rgb)
        Image.fromarray(rng.integers(0, 9000, size, dtype=np.uint16)).save(root / depth)


def test_nyu_glpdepth_subfolders(tmp_path):
    _write_pairs(tmp_path / "sync", [("scene_a/rgb_00001.jpg", "scene_a/sync_depth_00001.png")])
    _write_pairs(tmp_path / "official_splits" / "test", [("bath/rgb_00045.jpg", "bath/sync_depth_00045.png")])
    (tmp_path / "train.txt").write_text("/scene_a/rgb_00001.jpg /scene_a/sync_depth_00001.png 518.8579\n\n")
    (tmp_path / "test.txt").write_text("bath/rgb_00045.jpg bath/sync_depth_00045.png 518.8579\n")
    train = NYUDepthV2(tmp_path, tmp_path / "train.txt", split="train")
    test = NYUDepthV2(tmp_path, tmp_path / "test.txt", split="test")
    assert len(train) == len(test) == 1
    raw = np.asarray(Image.open(tmp_path / "official_splits/test/bath/sync_depth_00045.png"))
    assert np.array_equal(test[0]["depth"], raw.astype(np.float32) / 1000)
    assert test[0]["image"].shape == (24, 32, 3)


def test_nyu_errors(tmp_path):
    _write_pairs(tmp_path, [("s/rgb_1.jpg", "s/d_1.png")])
    split = tmp_path / "split.txt"
    split.write_text("/s/rgb_1.jpg /s/d_1.png\n/s/rgb_2.jpg /s/d_2.png\n")
    with pytest.raises(FileNotFoundError, match=r"rgb_2\.jpg"):
        NYUDepthV2(tmp_path, split)
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        NYUDepthV2(tmp_path, tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="split must be"):
        NYUDepthV2(tmp_path, split, split="val")
    split.write_text("/s/rgb_1.jpg\n")
    with pytest.raises(ValueError, match=r"split.txt:1"):
        NYUDepthV2(tmp_path, split)

    # corrupt image / 8-bit depth: clear errors naming the file
    split.write_text("/s/rgb_1.jpg /s/d_1.png\n")
    (tmp_path / "s/rgb_1.jpg").write_bytes(b"not a jpeg at all")
    ds = NYUDepthV2(tmp_path, split)
    with pytest.raises(ValueError, match=r"rgb_1\.jpg"):
        ds[0]
    _write_pairs(tmp_path, [("s/rgb_1.jpg", "s/d_1.png")])
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(tmp_path / "s/d_1.png")
    with pytest.raises(ValueError, match="16-bit"):
        ds[0]
    _write_pairs(tmp_path, [("s/rgb_1.jpg", "s/d_1.png")], size=(24, 32))
    Image.fromarray(np.zeros((20, 32), np.uint16)).save(tmp_path / "s/d_1.png")
    with pytest.raises(ValueError, match="must match"):
        ds[0]


def test_nyu_labeled_mat_via_h5py(tmp_path):
    n, height, width = 3, 12, 16
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (n, height, width, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.0, (n, height, width))
    path = tmp_path / "nyu_depth_v2_labeled.mat"
    with h5py.File(path, "w") as f:  # MATLAB v7.3 is column-major: h5py sees (N,3,W,H) and (N,W,H)
        f["images"] = images.transpose(0, 3, 2, 1)
        f["depths"] = depths.transpose(0, 2, 1)
    ds = NYUDepthV2(path)
    assert len(ds) == n
    for i in range(n):
        assert np.array_equal(ds[i]["image"], images[i])
        assert ds[i]["depth"].dtype == np.float32
        assert np.array_equal(ds[i]["depth"], depths[i].astype(np.float32))
    (tmp_path / "test_frames.txt").write_text("3\n1\n")  # 1-based, as in splits.mat
    subset = NYUDepthV2(path, tmp_path / "test_frames.txt", split="test")
    assert len(subset) == 2 and np.array_equal(subset[0]["image"], images[2])
    with pytest.raises(ValueError, match="frame indices"):
        NYUDepthV2(path, indices=[5])
    with h5py.File(tmp_path / "bad.mat", "w") as f:
        f["images"] = images.transpose(0, 3, 2, 1)
    with pytest.raises(ValueError, match="depths"):
        NYUDepthV2(tmp_path / "bad.mat")


def _polygon_coco(tmp_path):
    image_dir = tmp_path / "img"
    image_dir.mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(image_dir / name)
    crowd = np.zeros((20, 30), bool)
    crowd[10:20, 20:30] = True
    # uncompressed RLE as COCO stores crowds: run lengths over the column-major pixels, zeros first
    flat = crowd.flatten(order="F").astype(int)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    gt = {
        "images": [
            {"id": 7, "file_name": "a.jpg", "height": 20, "width": 30},
            {"id": 9, "file_name": "b.jpg", "height": 20, "width": 30},  # no annotations
        ],
        "annotations": [
            # a square polygon 2..8 x 3..9 -> pixels [2, 8) x [3, 9) are inside
            {
                "id": 1,
                "image_id": 7,
                "category_id": 18,
                "bbox": [2, 3, 6, 6],
                "area": 36,
                "segmentation": [[2, 3, 8, 3, 8, 9, 2, 9]],
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 7,
                "category_id": 1,
                "bbox": [20, 10, 10, 10],
                "area": 100,
                "segmentation": {"size": [20, 30], "counts": counts},
                "iscrowd": 1,
            },
            {
                "id": 3,
                "image_id": 7,
                "category_id": 1,
                "bbox": [0, 0, 0, 4],
                "area": 0,
                "segmentation": [[0, 0, 0, 4, 0, 4]],
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
    }
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(gt))
    return image_dir, ann


def test_coco_polygons_rle_crowd_and_empty_images(tmp_path):
    image_dir, ann = _polygon_coco(tmp_path)
    ds = CocoInstances(image_dir, ann)
    assert ds.label_to_category_id == [1, 18] and ds.category_id_to_label == {1: 0, 18: 1}
    s = ds[0]
    assert s["image_id"] == 7 and s["labels"].tolist() == [1]
    assert s["boxes"].tolist() == [[2, 3, 8, 9]]
    assert s["masks"].shape == (1, 20, 30) and s["masks"][0].sum() == 36
    assert s["masks"][0, 3:9, 2:8].all()
    empty = ds[1]
    assert (
        empty["boxes"].shape == (0, 4)
        and empty["masks"].shape == (0, 20, 30)
        and empty["labels"].shape == (0,)
    )

    with_crowd = CocoInstances(image_dir, ann, skip_crowd=False)[0]
    assert with_crowd["iscrowd"].tolist() == [False, True]
    assert with_crowd["masks"][1].sum() == 100 and with_crowd["masks"][1, 10:, 20:].all()


def test_coco_errors(tmp_path):
    image_dir, ann = _polygon_coco(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        CocoInstances(image_dir, tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="nodir"):
        CocoInstances(tmp_path / "nodir", ann)
    (image_dir / "a.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"a\.jpg"):
        CocoInstances(image_dir, ann)[0]
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(image_dir / "a.jpg")
    with pytest.raises(ValueError, match="10x10 but the annotation file says 20x30"):
        CocoInstances(image_dir, ann)[0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1}], "annotations": [{"image_id": 1}]}))
    with pytest.raises(ValueError, match="not a valid COCO"):
        CocoInstances(image_dir, bad)


def test_depth_to_millimetres_rejects_bad_depth():
    with pytest.raises(ValueError, match="uint16"):
        depth_to_millimetres(np.full((2, 2), 70.0))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        depth_to_millimetres(np.zeros((1, 2, 2)))
    assert depth_to_millimetres(np.array([[1.2346, 0.0004, 0.0]])).tolist() == [[1235, 0, 0]]


def test_writers_accept_a_plain_dataset(tmp_path):
    # Any dataset of samples with the same keys can be exported (e.g. a subset of real data).
    rooms = SyntheticRooms(length=2, height=64, width=64, seed=2)
    samples = [rooms[0], rooms[1]]

    class Plain:
        categories = rooms.categories
        label_to_category_id = rooms.label_to_category_id

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return samples[i]

    split = write_nyu(Plain(), tmp_path / "nyu")
    assert split.name == "nyu_train.txt" and len(NYUDepthV2(tmp_path / "nyu", split)) == 2
    ann = write_coco(Plain(), tmp_path / "coco")
    assert len(CocoInstances(tmp_path / "coco" / "images", ann)) == 2
