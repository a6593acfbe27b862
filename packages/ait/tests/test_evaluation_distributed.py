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
