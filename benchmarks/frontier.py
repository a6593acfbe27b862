"""The demo's quality-vs-budget frontier: depth RMSE and box/mask AP against task-solver training minutes.

    python benchmarks/frontier.py [--steps 200 400 800 1600] [--out benchmarks/frontier] [--cfg-options K=V ...]
    python benchmarks/frontier.py --merge a/frontier.json b/frontier.json --out benchmarks/frontier

Trains the demo's two tokenizers once (the `ait demo` recipe; or reuses a demo run's with --tokenizers), then one joint task-solver (`cpu_joint_demo`)
per step budget, each a complete run with its own schedule (warm-up and decay scaled to the budget, not a
snapshot of a longer run), evaluates each on the demo's held-out rooms, and writes `frontier.json` and
`frontier.png` (x: training wall minutes of the solver; lines for predict-the-mean and the tokenizer oracle).
Instances are scored from one decode per room, as every stored point was (the demo fuses 16; pass
`--cfg-options eval.instance_samples=8 eval.instance_flip=true` for its figures). Seeded: the same command on the same code gives the same figures; the minutes are this machine's at the time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(steps: list[int], out: Path, cfg_options: list[str], tokenizers: Path | None = None) -> dict:
    import torch
    from _common import ONE_DECODE, run_figures

    from ait.data import build_eval_loader
    from ait.demo import _mean_train_depth, demo_configs, tokenizer_oracle
    from ait.engine import Trainer, evaluate_solver
    from ait.evaluation import mean_depth_baseline
    from ait_tokenizer.train import train_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    points = []
    with tempfile.TemporaryDirectory(prefix="ait_frontier_") as tmp:
        tmp = Path(tmp)
        depth_cfg, mask_cfg, solver_cfg = demo_configs(tmp, cfg_options=[*ONE_DECODE, *cfg_options])
        start = time.perf_counter()
        if tokenizers is not None:  # a demo run's trained tokenizers (`ait demo --out DIR`: DIR/tokenizers)
            depth_ckpt, mask_ckpt = (
                tokenizers / "depth" / "final.safetensors",
                tokenizers / "mask" / "final.safetensors",
            )
            for path in (depth_ckpt, mask_ckpt):
                if not path.is_file():
                    raise SystemExit(
                        f"frontier: error: {path} is missing; pass the tokenizers/ folder of a demo run"
                    )
        else:
            depth_ckpt = train_tokenizer(depth_cfg, tmp / "tokenizers" / "depth")
            mask_ckpt = train_tokenizer(mask_cfg, tmp / "tokenizers" / "mask")
        tokenizer_s = time.perf_counter() - start
        baseline = oracle = None
        for budget in steps:
            cfg = solver_cfg(depth_ckpt, mask_ckpt)
            cfg.optim.max_iters = budget
            cfg.optim.warmup_iters = max(1, budget // 20)
            cfg.checkpoint_interval = 0
            cfg.work_dir = str(tmp / f"solver_{budget}")
            cfg = cfg.validate()
            trainer = Trainer(cfg, evaluate=False)
            trained = trainer.train()
            solver = trainer.model.eval()
            t = time.perf_counter()
            metrics = evaluate_solver(cfg, solver)
            eval_s = time.perf_counter() - t
            if baseline is None:
                baseline = mean_depth_baseline(
                    _mean_train_depth(cfg), build_eval_loader(cfg, "depth"), cfg.eval
                )
                oracle = tokenizer_oracle(cfg, solver)
            point = {"steps": budget, **run_figures(metrics, trained, eval_s)}
            points.append(point)
            print(json.dumps(point), flush=True)
            del trainer, solver
        result = {
            "config": "cpu_joint_demo",
            "cfg_options": cfg_options,
            "torch_threads": torch.get_num_threads(),
            "tokenizer_minutes": tokenizer_s / 60,
            "baseline_rmse": baseline["rmse"],
            "oracle_depth_rmse": oracle["depth"]["rmse"],
            "oracle_mask_ap": oracle.get("insseg", {}).get("segm", {}).get("AP", float("nan")),
            "points": points,
        }
    (out / "frontier.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    plot(result, out / "frontier.png")
    return result


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result["points"]
    minutes = [p["train_minutes"] for p in points]
    fig, (depth_ax, ap_ax) = plt.subplots(1, 2, figsize=(10, 4))
    depth_ax.plot(minutes, [p["depth_rmse"] for p in points], "o-", label="solver")
    depth_ax.axhline(result["baseline_rmse"], color="gray", ls="--", label="predict-the-mean")
    depth_ax.axhline(0.55 * result["baseline_rmse"], color="gray", ls=":", label="goal (0.55x mean)")
    depth_ax.axhline(result["oracle_depth_rmse"], color="green", ls="--", label="tokenizer oracle")
    depth_ax.set(
        xlabel="task-solver training (minutes)", ylabel="depth RMSE (m)", title="depth, held-out rooms"
    )
    depth_ax.legend(fontsize=8)
    for key, label in (("box_ap", "box AP"), ("mask_ap", "mask AP"), ("box_ap50", "box AP50")):
        ap_ax.plot(minutes, [p[key] for p in points], "o-", label=label)
    ap_ax.axhline(result["oracle_mask_ap"], color="green", ls="--", label="mask tokenizer oracle")
    ap_ax.axhline(0.30, color="gray", ls=":", label="goal (box AP 0.30)")
    ap_ax.set(xlabel="task-solver training (minutes)", ylabel="COCO AP", title="instances, held-out rooms")
    ap_ax.set_ylim(0, 1)
    ap_ax.legend(fontsize=8)
    for ax, values in ((depth_ax, [p["depth_rmse"] for p in points]), (ap_ax, [p["box_ap"] for p in points])):
        for x, y, p in zip(minutes, values, points):
            ax.annotate(f"{p['steps']}", (x, y), textcoords="offset points", xytext=(3, 5), fontsize=7)
    threads = result["torch_threads"]
    fig.suptitle(
        f"{result['config']} quality vs budget ({threads} torch thread{'s' if threads != 1 else ''})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def merge(paths: list[Path], out: Path) -> dict:
    """One frontier from runs of the same config and tokenizers (seeded: identical) with different budgets."""
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    first = runs[0]
    for other in runs[1:]:
        if other["config"] != first["config"] or other["cfg_options"] != first["cfg_options"]:
            raise SystemExit(
                f"frontier: error: {paths} hold runs of different configs; merge one config's runs"
            )
    result = {**first, "points": sorted((p for r in runs for p in r["points"]), key=lambda p: p["steps"])}
    result["merged_from"] = len(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontier.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    plot(result, out / "frontier.png")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 400, 800, 1600])
    parser.add_argument("--out", type=Path, default=HERE / "frontier")
    parser.add_argument("--cfg-options", nargs="*", default=[])
    parser.add_argument(
        "--tokenizers",
        type=Path,
        help="reuse a demo run's tokenizers (DIR/depth, DIR/mask) instead of training",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="combine the points of runs made with disjoint --steps (one per core)",
    )
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    if any(s <= 0 for s in args.steps):
        sys.exit("frontier: error: --steps must be positive step counts")
    run(sorted(args.steps), args.out, args.cfg_options, args.tokenizers)


if __name__ == "__main__":
    main()
