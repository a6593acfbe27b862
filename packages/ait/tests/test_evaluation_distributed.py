"""Depth metrics gathered over a real 2-process gloo group equal the single-process metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ait.config.schema import EvalConfig
from ait.evaluation import mean_depth_baseline

CFG = EvalConfig(eigen_crop=False)


def _images() -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    return [{"depth": torch.rand(1, 1, 4, 5, generator=gen) * 3 + 0.5} for _ in range(2)]


def _worker(rank: int, world: int, tmp: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world)
    try:
        shard = _images()[rank : rank + 1]  # each rank evaluates one image
        result = mean_depth_baseline(2.0, shard, CFG)
        (Path(tmp) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_depth_metrics_are_merged_across_ranks(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_worker, args=(2, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    single = mean_depth_baseline(2.0, _images(), CFG)
    for rank in range(2):
        merged = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert merged["num_images"] == 2
        for key in ("rmse", "abs_rel", "d1", "log10"):
            assert merged[key] == pytest.approx(single[key], rel=1e-12)


# ------------------------------------------------------------------------------------------------------
# COCO evaluation: detections are gathered to rank 0, which alone runs COCOeval; every rank returns its AP.

_GT = {
    "images": [{"id": i, "width": 40, "height": 30} for i in (1, 2)],
    "categories": [{"id": 7, "name": "thing"}],
    "annotations": [
        {
            "id": i,
            "image_id": i,
            "category_id": 7,
            "bbox": [5.0, 4.0, 20.0, 10.0],
            "area": 200.0,
            "iscrowd": 0,
        }
        for i in (1, 2)
    ],
}


class _FixedDetector(torch.nn.Module):
    """Predicts the ground-truth box of every image (and one miss on image 2), whatever the pixels."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.instance_head = type("Head", (), {"task": "det"})()

    def predict_instances(self, images, scale=1.0, orig_size=None, generator=None):
        box = torch.tensor([[5.0, 4.0, 25.0, 14.0], [0.0, 0.0, 3.0, 3.0]])
        return [
            {"boxes": box, "labels": torch.tensor([0, 0]), "scores": torch.tensor([0.9, 0.1])}
            for _ in range(images.shape[0])
        ]


def _coco_batches(image_ids) -> list[dict]:
    return [{"image": torch.zeros(1, 3, 8, 8), "image_id": torch.tensor([i])} for i in image_ids]


def _coco_worker(rank: int, world: int, tmp: str) -> None:
    import torch.distributed as dist

    import ait.evaluation as evaluation

    calls = []
    original = evaluation.evaluate_coco
    evaluation.evaluate_coco = lambda *a, **k: calls.append(len(a[1])) or original(*a, **k)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world)
    try:
        result = evaluation.evaluate_instances(
            _FixedDetector(), _coco_batches([rank + 1]), _GT, label_to_category_id=[7]
        )
        (Path(tmp) / f"coco{rank}.json").write_text(json.dumps({"result": result, "calls": calls}))
    finally:
        dist.destroy_process_group()


def test_coco_evaluation_runs_on_rank_zero_only_and_every_rank_gets_the_result(tmp_path):
    import torch.multiprocessing as mp

    from ait.evaluation import evaluate_instances

    mp.start_processes(_coco_worker, args=(2, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    single = evaluate_instances(_FixedDetector(), _coco_batches([1, 2]), _GT, label_to_category_id=[7])
    reports = [json.loads((tmp_path / f"coco{rank}.json").read_text()) for rank in range(2)]
    assert reports[0]["calls"] == [4] and reports[1]["calls"] == []  # both ranks' 2 detections, once
    assert reports[0]["result"] == reports[1]["result"] == json.loads(json.dumps(single))
    assert single["bbox"]["AP"] == pytest.approx(1.0)
