"""The dataset wrappers of `ait.data` keep their transform when the DataLoader fetches a whole batch."""

from __future__ import annotations

import torch

from ait.config import create_config
from ait.data import CachedDataset, TransformedDataset, _collate, _transform, build_raw_dataset


def test_a_transformed_subset_is_transformed_when_a_loader_fetches_it():
    # torch's Subset has __getitems__; delegating it made DataLoader fetch the raw (untransformed) samples
    cfg = create_config("cpu_depth_tiny", {"data.synthetic_train_length": 4})
    raw = build_raw_dataset(cfg, "depth", "train")
    assert isinstance(raw, CachedDataset)
    dataset = TransformedDataset(
        torch.utils.data.Subset(raw, [0, 2, 3]), _transform(cfg, "depth", False), 0, "depth"
    )
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=_collate)))
    by_hand = _collate([dataset[i] for i in range(3)])
    assert batch["depth"].shape == by_hand["depth"].shape == (3, 1, 64, 64)
    torch.testing.assert_close(batch["image"], by_hand["image"], rtol=0, atol=0)
    # attribute delegation still works for the dataset's own fields
    assert dataset.dataset is raw and CachedDataset(raw.base).num_classes == raw.num_classes
    assert not hasattr(dataset, "__getitems__") and not hasattr(CachedDataset(dataset), "__getitems__")


def test_a_rank_without_a_tasks_images_gets_none_of_it_with_loader_workers():
    """Joint recipe on many ranks: 1 depth image per step over 2 ranks leaves rank 0 without depth. With
    DataLoader workers the loader used to hand `collate` an empty list ("collate needs at least one
    sample"); the rank must instead skip the task and see the same instance images as without workers."""
    from ait.data import build_task_streams

    cfg = create_config(
        "cpu_joint_tiny",
        {"data.depth_batch": 1, "data.insseg_batch": 2, "data.synthetic_train_length": 4},
    )
    cfg.data.num_workers = 1
    with_workers = build_task_streams(cfg, rank=0, world_size=2)
    cfg.data.num_workers = 0
    without = build_task_streams(cfg, rank=0, world_size=2)
    for _ in range(3):  # past the end of the 4-image epoch
        a, b = with_workers.next_batch(), without.next_batch()
        assert set(a) == set(b) == {"insseg"}
        assert a["insseg"]["image_id"].tolist() == b["insseg"]["image_id"].tolist()
        torch.testing.assert_close(a["insseg"]["image"], b["insseg"]["image"], rtol=0, atol=0)
    assert with_workers.state_dict() == without.state_dict() == {"depth": 3, "insseg": 6}
    # rank 1 holds the depth image of every step
    rank1 = build_task_streams(cfg, rank=1, world_size=2)
    cfg.data.num_workers = 1
    rank1_workers = build_task_streams(cfg, rank=1, world_size=2)
    a, b = rank1_workers.next_batch(), rank1.next_batch()
    assert set(a) == set(b) == {"depth", "insseg"}
    torch.testing.assert_close(a["depth"]["depth"], b["depth"]["depth"], rtol=0, atol=0)


def test_coco_training_drops_images_without_annotations_or_under_32_px_as_mmdet(tmp_path):
    """mmdet's CocoDataset (filter_empty_gt=True, min_size=32) trains on 117,266 of COCO's 118,287 train
    images; evaluation keeps every image."""
    import json

    from ait_data import SyntheticRooms, write_coco

    rooms = SyntheticRooms(length=5, height=64, width=64, seed=3, split="train", num_objects=(1, 3))
    ann_file = write_coco(rooms, tmp_path, range(5))
    coco = json.loads(ann_file.read_text())
    ids = [image["id"] for image in coco["images"]]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != ids[1]]  # no annotation
    for annotation in coco["annotations"]:  # an image with crowd regions only is kept
        annotation["iscrowd"] = int(annotation["image_id"] == ids[2])
    coco["images"][3]["width"] = 31  # too small (never read: it is dropped)
    from PIL import Image

    Image.new("RGB", (31, 64)).save(tmp_path / "images" / coco["images"][3]["file_name"])
    ann_file.write_text(json.dumps(coco))
    cfg = create_config(
        "cpu_insseg_tiny",
        {
            "data.dataset": "coco",
            "data.coco_root": str(tmp_path),
            "data.coco_train_images": "images",
            "data.coco_train_ann": str(ann_file.relative_to(tmp_path)),
            "data.coco_val_images": "images",
            "data.coco_val_ann": str(ann_file.relative_to(tmp_path)),
        },
    )
    train = build_raw_dataset(cfg, "insseg", "train")
    assert [train[i]["image_id"] for i in range(len(train))] == [ids[0], ids[2], ids[4]]
    assert len(build_raw_dataset(cfg, "insseg", "val")) == 5
