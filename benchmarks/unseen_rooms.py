"""A trained solver on rooms its recipe was never tuned on: other seeds of the synthetic-rooms generator.

    python benchmarks/unseen_rooms.py RUN_DIR [--seeds 1 2 3] [--rooms 64] [--json]

The demo's held-out rooms (generator seed 0, split "val") are the rooms every recipe choice was measured on,
so its figures there may flatter it. This scores the same solver, unchanged, on the held-out split of other
generator seeds (rooms drawn afresh, nothing in common with the training or held-out rooms but the
generator), next to its own seed, with the same predict-the-mean constant (the mean depth of the run's own
training rooms), and with the run's own evaluation settings (a demo run's: 16 instance decodes fused). Plain
numbers per seed, and the spread of the unseen seeds against the run's own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def score(run: str, seeds: list[int], rooms: int) -> dict:
    """Depth RMSE (and its ratio to predict-the-mean), box and mask AP of `run` per generator seed."""
    import copy

    import torch
    from _common import mean_train_depth

    from ait.config import apply_overrides
    from ait.data import build_eval_loader
    from ait.engine import evaluate_solver
    from ait.engine.inference import load_solver
    from ait.evaluation import mean_depth_baseline

    torch.set_num_threads(1)
    solver, cfg = load_solver(run)
    if cfg.data.dataset != "synthetic":
        raise SystemExit(
            f"unseen_rooms: error: {run} was trained on {cfg.data.dataset!r}, not synthetic rooms"
        )
    own_seed = cfg.data.synthetic_seed
    mean_depth = mean_train_depth(cfg) if "depth" in cfg.model.tasks else None
    rows = []
    for seed in [own_seed, *[s for s in seeds if s != own_seed]]:
        overrides = [f"data.synthetic_seed={seed}", f"data.synthetic_val_length={rooms}"]
        seed_cfg = apply_overrides(copy.deepcopy(cfg), overrides).validate()
        metrics = evaluate_solver(seed_cfg, solver)
        coco = metrics.get("insseg", metrics.get("det", {}))
        row = {
            "seed": seed,
            "own": seed == own_seed,
            "box_ap": coco.get("bbox", {}).get("AP", float("nan")),
            "box_ap50": coco.get("bbox", {}).get("AP50", float("nan")),
            "mask_ap": coco.get("segm", {}).get("AP", float("nan")),
        }
        if mean_depth is not None:
            row["depth_rmse"] = metrics["depth"]["rmse"]
            baseline = mean_depth_baseline(mean_depth, build_eval_loader(seed_cfg, "depth"), seed_cfg.eval)
            row["baseline_rmse"] = baseline["rmse"]
            row["depth_ratio"] = row["depth_rmse"] / baseline["rmse"]
        rows.append(row)
    return {"run": str(run), "rooms": rooms, "rows": rows}


def table(result: dict) -> str:
    lines = [
        "| generator seed | rooms | depth RMSE | x predict-the-mean | box AP | box AP50 | mask AP |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        name = f"{row['seed']} (the run's own)" if row["own"] else f"{row['seed']} (unseen)"
        depth = f"{row['depth_rmse']:.3f} m" if "depth_ratio" in row else "-"
        ratio = f"{row['depth_ratio']:.2f}x" if "depth_ratio" in row else "-"
        lines.append(
            f"| {name} | {result['rooms']} | {depth} | {ratio} | {100 * row['box_ap']:.1f} % | "
            f"{100 * row['box_ap50']:.1f} % | {100 * row['mask_ap']:.1f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder or checkpoint of a solver trained on synthetic rooms")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="unseen generator seeds")
    parser.add_argument("--rooms", type=int, default=64, help="held-out rooms per seed (the demo: 64)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.rooms < 1 or any(seed < 0 for seed in args.seeds):
        parser.error("--rooms must be >= 1 and --seeds >= 0")
    result = score(args.run, args.seeds, args.rooms)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
