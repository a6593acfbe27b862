"""GPU-ready engine defaults under a real 2-process gloo group, and the deterministic-algorithms switch.

- DDP does not broadcast buffers (the backbone's fixed relative-position tables; the original neither).
- The unused-parameter search runs only when a rank can be without a task's images (joint: 1 NYU image
  over 2 ranks); otherwise it is off, and two steps still run (the autoregressive configs' unused AiT-P
  mask embedding is left out of DDP's reduction, so DDP does not wait for its gradient).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ait.config import create_config
from ait.engine import Trainer


def _ddp_worker(rank: int, world: int, tmp: str) -> None:
    import torch.distributed as dist

    from ait.engine.distributed import DistInfo

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world)
    try:
        report = {}
        for name, options in (
            ("cpu_depth_tiny", {"data.depth_batch": 2}),
            ("cpu_joint_tiny", {"data.depth_batch": 1, "data.insseg_batch": 2}),
        ):
            cfg = create_config(
                name,
                {
                    **options,
                    "optim.max_iters": 2,
                    "checkpoint_interval": 0,
                    "work_dir": f"{tmp}/{name}",
                    "data.synthetic_train_length": 4,
                },
            )
            trainer = Trainer(
                cfg,
                dist_info=DistInfo(rank, world, rank, torch.device("cpu"), "gloo"),
                evaluate=False,
                log=lambda message: None,
            )
            result = trainer.train()
            ddp = trainer.wrapped
            report[name] = {
                "broadcast_buffers": ddp.broadcast_buffers,
                "find_unused_parameters": ddp.find_unused_parameters,
                "ignored": sorted(ddp.parameters_to_ignore),
                "step": result.step,
                "mask_embed": trainer.model.decoder.mask_embed.detach().sum().item(),
            }
        (Path(tmp) / f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


def test_ddp_broadcasts_no_buffers_and_searches_unused_parameters_only_when_a_task_can_be_absent(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert reports[0] == reports[1]
    depth, joint = reports[0]["cpu_depth_tiny"], reports[0]["cpu_joint_tiny"]
    assert depth["broadcast_buffers"] is False and joint["broadcast_buffers"] is False
    assert depth["find_unused_parameters"] is False  # 2 depth images over 2 ranks: every head always runs
    assert joint["find_unused_parameters"] is True  # rank 0 holds no depth image
    assert depth["step"] == joint["step"] == 2
    assert depth["ignored"] == ["decoder.mask_embed"]  # autoregressive: AiT-P's embedding is never used


def test_deterministic_algorithms_are_off_by_default_and_on_with_the_key(tmp_path):
    before = torch.are_deterministic_algorithms_enabled()
    try:
        options = {"work_dir": str(tmp_path / "a"), "data.synthetic_train_length": 4}
        assert create_config("swinv2b_480reso_depthonly").deterministic is False
        Trainer(create_config("cpu_depth_tiny", options), evaluate=False, log=lambda m: None)
        assert torch.are_deterministic_algorithms_enabled() is False
        options["work_dir"] = str(tmp_path / "b")
        Trainer(create_config("cpu_depth_tiny", {**options, "deterministic": True}), evaluate=False)
        assert torch.are_deterministic_algorithms_enabled() is True
    finally:
        torch.use_deterministic_algorithms(before)
