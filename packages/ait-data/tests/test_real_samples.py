"""Readers and maskcoco on the real NYU / COCO samples in the repository's fixtures/."""

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from ait_data import CocoInstances, MaskCoco, NYUDepthV2, build_maskcoco
from ait_data.maskcoco import crop_and_resize, main, rounded_box

TINY = "annotations/instances_train2017_tinycoco6.json"
COCO8 = "annotations/instances_train2017_coco8.json"


def test_nyu_sync_frames_in_millimetres(nyu_sample, tmp_path):
    split = tmp_path / "nyu_train_sample.txt"
    split.write_text(
        "".join(
            f"/train_sync_metric3d/rgb_{i:05d}.jpg /train_sync_metric3d/sync_depth_{i:05d}.png 518.8579\n"
            for i in (0, 50, 100)
        )
    )
    ds = NYUDepthV2(nyu_sample, split, split="train")
    assert len(ds) == 3
    for i in range(3):
        s = ds[i]
        assert s["image"].shape == (480, 640, 3) and s["image"].dtype == np.uint8
        depth = s["depth"]
        assert depth.shape == (480, 640) and depth.dtype == np.float32
        valid = depth > 0
        # README: raw Kinect depth, 25-33 % invalid, range 0.71-8.27 m, stored in millimetres
        assert 0.2 < 1 - valid.mean() < 0.4
        assert 0.7 <= depth[valid].min() and depth.max() <= 8.3
        assert np.allclose(depth * 1000, np.round(depth * 1000), atol=1e-3)


def test_nyu_official_test_frames(nyu_sample, tmp_path):
    split = tmp_path / "nyu_test_sample.txt"
    split.write_text("".join(f"image_{i}.png depth_{i}.png\n" for i in range(5)))
    ds = NYUDepthV2(nyu_sample / "test_official_densedepth", split, split="test")
    first = ds[0]["depth"]
    # README: filled-in depth (no zeros), frame 0's minimum is 1.798 m, all under 10 m
    assert first.min() == pytest.approx(1.798, abs=1e-3)
    assert all((ds[i]["depth"] > 0).all() and ds[i]["depth"].max() < 10 for i in range(5))


def test_coco_tinycoco(coco_sample):
    ann_file = coco_sample / TINY
    ds = CocoInstances(coco_sample / "train2017_tinycoco", ann_file)
    raw = json.loads(ann_file.read_text())
    assert len(ds) == 6 and ds.num_classes == 80
    assert ds.label_to_category_id == sorted(c["id"] for c in raw["categories"])
    total, crowd = 0, 0
    for i in range(len(ds)):
        s = ds[i]
        n = len(s["labels"])
        total += n
        height, width = s["image"].shape[:2]
        assert s["masks"].shape == (n, height, width) and s["boxes"].shape == (n, 4)
        assert np.all((s["labels"] >= 0) & (s["labels"] < 80))
        assert np.all(s["boxes"][:, 2:] > s["boxes"][:, :2])
        for box, mask in zip(s["boxes"], s["masks"]):
            ys, xs = np.nonzero(mask)
            if len(xs) == 0:
                continue
            # polygon masks lie inside their (float) boxes up to rasterisation
            assert xs.min() >= box[0] - 1.5 and xs.max() + 1 <= box[2] + 1.5
            assert ys.min() >= box[1] - 1.5 and ys.max() + 1 <= box[3] + 1.5
        by_id = {a["id"]: a for a in raw["annotations"]}
        for ann, label in zip(ds.annotations(i), s["labels"]):
            assert ds.label_to_category_id[label] == by_id[ann["id"]]["category_id"]
    with_crowd = CocoInstances(coco_sample / "train2017_tinycoco", ann_file, skip_crowd=False)
    for i in range(len(with_crowd)):
        s = with_crowd[i]
        crowd += int(s["iscrowd"].sum())
        for mask, is_crowd in zip(s["masks"], s["iscrowd"]):
            if is_crowd:
                assert mask.any()  # decoded from RLE
    assert total == 135 and crowd == 1  # README: 136 annotations, 1 crowd


def test_coco8_label_mapping(coco_sample):
    ds = CocoInstances(coco_sample / "train2017_coco8", coco_sample / COCO8)
    assert len(ds) == 8
    assert ds.label_to_category_id[0] == 1 and ds.label_to_category_id[79] == 90
    assert all(ds.category_id_to_label[c] == i for i, c in enumerate(ds.label_to_category_id))
    s = ds[0]
    assert s["image"].dtype == np.uint8 and s["masks"].dtype == np.bool_


def test_maskcoco_on_real_coco(coco_sample, tmp_path):
    ann_file = coco_sample / TINY
    out = build_maskcoco(ann_file, tmp_path / "maskcoco.npz", progress=False)
    ds = MaskCoco(out)
    coco = COCO(str(ann_file))
    expected = []
    for ann in sorted(coco.anns.values(), key=lambda a: a["id"]):
        info = coco.imgs[ann["image_id"]]
        x1, y1, x2, y2 = rounded_box(ann["bbox"], info["height"], info["width"])
        if not ann["iscrowd"] and x2 - x1 >= 2 and y2 - y1 >= 2:
            expected.append(ann)
    assert len(ds) == len(expected) > 100
    assert ds.masks.shape == (len(ds), 64, 64) and ds.masks.dtype == np.uint8
    assert set(np.unique(ds.masks)) <= {0, 1}
    for k in (0, 17, len(ds) - 1):
        s, ann = ds[k], expected[k]
        assert (s["image_id"], s["ann_id"], s["category_id"]) == (
            ann["image_id"],
            ann["id"],
            ann["category_id"],
        )
        box = rounded_box(
            ann["bbox"], coco.imgs[ann["image_id"]]["height"], coco.imgs[ann["image_id"]]["width"]
        )
        assert tuple(s["box"]) == box
        assert np.array_equal(s["mask"], crop_and_resize(coco.annToMask(ann), box))
    # a box-cropped mask fills its box about as much as the instance fills the box
    big = [k for k, a in enumerate(expected) if a["bbox"][2] > 40 and a["bbox"][3] > 40]
    for k in big:
        a = expected[k]
        fill = a["area"] / (a["bbox"][2] * a["bbox"][3])
        assert abs(ds[k]["mask"].mean() - fill) < 0.08


def test_maskcoco_command(coco_sample, tmp_path, capsys):
    out = main([str(coco_sample / TINY), "--out", str(tmp_path / "m.npz")])
    captured = capsys.readouterr()
    assert "maskcoco" in captured.err and "100%" in captured.err  # tqdm progress bar
    assert f"wrote {len(MaskCoco(out))} masks" in captured.out


def test_transforms_on_real_samples(coco_sample, nyu_sample, tmp_path):
    import torch

    from ait_data import DepthTransform, InstanceTransform, collate

    coco = CocoInstances(coco_sample / "train2017_tinycoco", coco_sample / TINY)
    s = coco[0]
    height, width = s["image"].shape[:2]
    out = InstanceTransform(train=False, canvas=640)(s)
    assert out["scale"] == pytest.approx(640 / max(height, width)) and out["orig_size"] == (height, width)
    assert out["image"].shape == (3, 640, 640) and out["masks"].shape == (len(s["labels"]), 640, 640)
    assert torch.allclose(out["boxes"] / out["scale"], torch.from_numpy(s["boxes"]), atol=0.5)
    train = InstanceTransform(train=True, canvas=320, seed=0)
    batch = collate([train(coco[i]) for i in range(3)])
    assert batch["image"].shape == (3, 3, 320, 320)

    split = tmp_path / "split.txt"
    split.write_text("/train_sync_metric3d/rgb_00000.jpg /train_sync_metric3d/sync_depth_00000.png\n")
    frame = NYUDepthV2(nyu_sample, split)[0]
    out = DepthTransform(train=True, crop=(480, 480), seed=0)(frame)
    assert out["image"].shape == (3, 480, 480) and out["depth"].shape == (1, 480, 480)
    assert 0 <= out["image"].min() and out["image"].max() <= 1
