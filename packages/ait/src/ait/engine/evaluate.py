"""Evaluation of a solver on the config's held-out split, every task it has.

Each rank evaluates a strided shard of the split; `ait.evaluation` gathers depth metrics and detections
across ranks, so every rank returns the same numbers.
"""

from __future__ import annotations

from typing import Any

import torch

from ait.config.schema import Config
from ait.data import build_eval_loader, coco_ground_truth
from ait.engine.distributed import DistInfo

__all__ = ["evaluate_solver"]


def evaluate_solver(
    cfg: Config, solver: torch.nn.Module, dist_info: DistInfo | None = None, max_batches: int | None = None
) -> dict[str, Any]:
    """{"depth": depth metric dict, "insseg"/"det": {"bbox": {...}, "segm": {...}}} for the solver's tasks."""
    from ait.evaluation import evaluate_depth, evaluate_instances

    rank, world = (dist_info.rank, dist_info.world_size) if dist_info else (0, 1)
    results: dict[str, Any] = {}
    for task in cfg.model.tasks:
        loader = build_eval_loader(cfg, task, rank, world)
        if task == "depth":
            results["depth"] = evaluate_depth(solver, loader, cfg.eval, max_batches=max_batches)
        else:
            device = next(solver.parameters()).device
            generator = torch.Generator(device=device).manual_seed(cfg.seed)  # nucleus sampling, reproducible
            results[task] = evaluate_instances(
                solver,
                loader,
                coco_ground_truth(cfg),
                cfg.eval,
                generator=generator,
                max_batches=max_batches,
            )
    return results
