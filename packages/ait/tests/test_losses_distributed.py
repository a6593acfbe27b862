"""The token-count normaliser under a real 2-process gloo group."""

from __future__ import annotations

from pathlib import Path

import torch

from ait.losses import token_normaliser


def _normaliser_worker(rank: int, world: int, tmp: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world)
    try:
        # rank counts (10, 20) -> mean 15; (0, 1) -> mean 0.5, clamped to 1
        results = [token_normaliser(torch.tensor(float(c))).item() for c in ((10, 20)[rank], (0, 1)[rank])]
        (Path(tmp) / f"rank{rank}.txt").write_text(" ".join(map(str, results)))
    finally:
        dist.destroy_process_group()


def test_token_normaliser_is_the_mean_count_over_ranks(tmp_path):
    import torch.multiprocessing as mp

    # fork: the children inherit the imported modules (spawn would re-import torch in each, ~10x slower)
    mp.start_processes(_normaliser_worker, args=(2, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    for rank in range(2):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "15.0 1.0"
