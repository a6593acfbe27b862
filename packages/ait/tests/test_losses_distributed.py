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


# ------------------------------------------------------------------------------------------------------
# The solver's depth loss under a real 2-process group: every rank joins the token-count all-reduce
# whatever its batch holds, and the SILog term weighs with the local token count (the original's loss2).


def _depth_loss_worker(rank: int, world: int, tmp: str, batch_sizes: tuple[int, int]) -> None:
    import math
    import sys
    import warnings
    from datetime import timedelta

    import numpy as np
    import torch.distributed as dist

    # a forked child must not enter the OpenMP pool its parent may have started (libgomp is not fork-safe)
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))  # the tests' helpers (pytest imports them by path)
    from test_losses import silog_reference
    from test_model import depth_batch, tiny_config

    from ait.config.schema import LossConfig
    from ait.model import build_task_solver

    # a short collective timeout: collectives that pair up wrongly fail the test instead of hanging it
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    try:
        torch.manual_seed(0)  # the same weights on both ranks
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            solver = build_task_solver(tiny_config(tasks=("depth",), loss=LossConfig(depth_aux_weight=0.7)))
        solver.train()
        with torch.no_grad():
            solver.depth_head.tokenizer.decoder[-1].bias.fill_(2.0)  # a decoded map away from the 1e-3 floor
        size = batch_sizes[rank]
        batch = {"depth": depth_batch(batch=size, seed=10 + rank)} if size else {}
        out = solver.training_step(batch)
        # float64 restatement: (CE sum + 0.7 x SILog x n_r) / mean_r(n_r), n_r = 16 tokens per image
        local = 0.0
        if size:
            head = solver.depth_head
            with torch.no_grad():
                targets = head.targets(batch["depth"]["depth"])
                logits = solver.decoder(solver.encode_images(batch["depth"]["image"]), targets, "depth")
                ce = torch.nn.functional.cross_entropy(
                    logits.flatten(0, 1).double(), targets.flatten(), reduction="sum"
                ).item()
                soft = head.tokenizer.decode_soft(logits[..., slice(*solver.vocab.depth_codes)], 0.8)
            silog = silog_reference(soft.numpy(), batch["depth"]["depth"].numpy())
            local = ce + 0.7 * silog * 16 * size
        mean_count = max(16 * sum(batch_sizes) / world, 1.0)
        expected = local / mean_count
        assert math.isfinite(out["loss"].item())
        np.testing.assert_allclose(out["loss"].item(), expected, rtol=2e-5)
        assert out["depth_tokens"] == 16 * size
        (Path(tmp) / f"rank{rank}.txt").write_text("ok")
    finally:
        dist.destroy_process_group()


def test_depth_loss_under_ddp_scales_silog_by_the_local_token_count_and_ranks_without_depth_join(tmp_path):
    import pytest
    import torch.multiprocessing as mp

    for sizes in ((2, 1), (1, 0)):  # uneven shares, and a rank without any depth image
        run = tmp_path / f"run{sizes[0]}{sizes[1]}"
        run.mkdir()
        mp.start_processes(
            _depth_loss_worker, args=(2, str(run), sizes), nprocs=2, join=True, start_method="fork"
        )
        for rank in range(2):
            if not (run / f"rank{rank}.txt").exists():
                pytest.fail(f"rank {rank} failed with batch shares {sizes}")
