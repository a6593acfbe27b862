"""Quality of a fixed-seed short training: depth RMSE of the CPU depth config on held-out synthetic rooms.

    python benchmarks/bench_quality.py [--quick]

1. trains the CPU depth tokenizer (`cpu_depth_vqvae`: depth-small, 64x64 maps -> 8x8 tokens, mask
   augmentation on) for a fixed number of steps on synthetic rooms;
2. trains the CPU depth task-solver (`cpu_depth_tiny`, AiT with soft token) over that tokenizer;
3. evaluates it on a fixed held-out set (synthetic split "val", no test-time augmentation) with
   `ait_eval.DepthMetrics`, next to the predict-the-mean-training-depth baseline on the same images;
4. scores the tokenizer oracle: decode(encode(gt)) of the same held-out rooms with the solver's metric
   (valid pixels) and against the complete depth: what the solver could reach with perfect tokens;
5. overfits the autoregressive instance chain on 8 fixed synthetic rooms (`ait.overfit`, the overfit
   proof's recipe, shorter) and reports its box and mask AP on those rooms;
6. scores the tokenizer's reconstruction (decode(encode(x))) on held-out synthetic maps against the
   complete depth, and on the real NYU sample in fixtures/nyu_sample.

Everything is seeded and runs on one torch thread, so the same seed gives the same numbers on any machine
with this torch build; `benchmarks/check.py` checks the depth RMSE against `benchmarks/baseline.json`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    SHARED_DATA,
    depth_solver_config,
    mean_train_depth,
    row,
    torch_threads,
    train_and_evaluate_depth,
    train_depth_tokenizer,
)

# (tokenizer steps, solver steps, solver batch, training rooms, held-out rooms)
SIZES = {
    True: {
        "tokenizer_steps": 200,
        "solver_steps": 150,
        "batch": 8,
        "train_size": 256,
        "val_size": 32,
        "instance_steps": 250,
        "instance_tokenizer_steps": 150,
        "heldout_instance_steps": 1000,
    },
    False: {
        "tokenizer_steps": 600,
        "solver_steps": 400,
        "batch": 8,
        "train_size": 1024,
        "val_size": 64,
        "instance_steps": 500,
        "instance_tokenizer_steps": 300,
        "heldout_instance_steps": 2000,
    },
}
DEPTH_METRICS = ("rmse", "abs_rel", "d1", "d2", "d3", "rmse_log", "log10", "silog_ait")
UNITS = {"rmse": "m"}  # the others are ratios or logs without a unit


def run(quick: bool = False, seed: int = 0) -> list[dict]:
    import torch

    from ait.data import build_eval_loader
    from ait.evaluation import mean_depth_baseline
    from ait.oracle import depth_tokenizer_oracle
    from ait.overfit import overfit_synthetic_instances
    from ait_tokenizer import load_tokenizer
    from ait_tokenizer.evaluate import evaluate_nyu, evaluate_synthetic

    sizes = SIZES[bool(quick)]
    mode = "quick" if quick else "full"
    rows: list[dict] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ait_bench_quality_") as tmp, torch_threads(1):
        tmp = Path(tmp)
        tokenizer_ckpt = train_depth_tokenizer(
            tmp / "tokenizer",
            steps=sizes["tokenizer_steps"],
            train_size=sizes["train_size"],
            seed=seed,
        )
        tokenizer_s = time.perf_counter() - start
        cfg = depth_solver_config(
            tokenizer_ckpt,
            tmp / "solver",
            steps=sizes["solver_steps"],
            batch=sizes["batch"],
            train_size=sizes["train_size"],
            val_size=sizes["val_size"],
            seed=seed,
        )
        run_note = (
            f"{mode}: tokenizer {sizes['tokenizer_steps']} steps, solver {cfg.name} {sizes['solver_steps']} "
            f"steps x {sizes['batch']} images, seed {seed}; {sizes['val_size']} held-out rooms, 1 thread"
        )
        trained = train_and_evaluate_depth(cfg)
        metrics = trained["metrics"]
        for name in DEPTH_METRICS:
            rows.append(row("quality/depth", name, metrics[name], UNITS.get(name, ""), run_note))

        mean_depth = mean_train_depth(cfg)
        baseline = mean_depth_baseline(mean_depth, build_eval_loader(cfg, "depth"), cfg.eval)
        rows.append(
            row(
                "quality/depth_mean_baseline",
                "rmse",
                baseline["rmse"],
                "m",
                f"predict {mean_depth:.3f} m (mean training depth) everywhere, same held-out rooms",
            )
        )
        rows.append(
            row(
                "quality/depth",
                "rmse_over_mean_baseline",
                metrics["rmse"] / baseline["rmse"],
                "ratio",
                "lower is better; 1.0 = no better than predicting the mean",
            )
        )

        tokenizer = load_tokenizer(tokenizer_ckpt)
        # The oracle: the same held-out rooms and metric as the solver, fed the ground truth's own tokens.
        oracle = depth_tokenizer_oracle(tokenizer, build_eval_loader(cfg, "depth"), cfg.eval)
        rows.append(
            row(
                "quality/tokenizer_oracle",
                "rmse",
                oracle["rmse"],
                "m",
                "decode(encode(gt)) of the solver's held-out rooms, valid pixels (the solver's metric)",
            )
        )
        rows.append(
            row(
                "quality/tokenizer_oracle",
                "rmse_complete",
                oracle["rmse_complete"],
                "m",
                "the same reconstruction against the complete depth, holes included (pixel-pooled)",
            )
        )
        rows.append(
            row(
                "quality/depth",
                "rmse_over_oracle",
                metrics["rmse"] / oracle["rmse"],
                "ratio",
                "solver RMSE over its tokenizer's oracle RMSE (1.0 = as good as the tokens allow)",
            )
        )
        synthetic = evaluate_synthetic(tokenizer, maps=64, split="test", seed=0)
        rows.append(
            row(
                "quality/tokenizer_synthetic",
                "rmse_complete",
                synthetic["rmse_complete"],
                "m",
                f"decode(encode(x)) of 64 held-out maps with {100 * synthetic['hole_fraction']:.0f} % holes "
                "vs the complete depth",
            )
        )
        rows.append(
            row(
                "quality/tokenizer_synthetic",
                "rmse_holes",
                synthetic["rmse_holes"],
                "m",
                "on the invalid input pixels only (what mask augmentation teaches)",
            )
        )
        nyu_root = SHARED_DATA / "nyu_sample"
        if nyu_root.is_dir():
            nyu = evaluate_nyu(tokenizer, nyu_root, height=64)
            height, width = nyu["tokenizer_size"]
            rows.append(
                row(
                    "quality/tokenizer_nyu_sample",
                    "rmse",
                    nyu["rmse_at_tokenizer_size"],
                    "m",
                    f"{len(nyu['maps'])} real NYU maps, Eigen crop shrunk to {height}x{width}, valid pixels; "
                    "trained on synthetic rooms only",
                )
            )
            rows.append(
                row(
                    "quality/tokenizer_nyu_sample",
                    "rmse_full_resolution",
                    nyu["rmse_full_resolution"],
                    "m",
                    "reconstruction upsampled (bilinear) to the 426x560 Eigen crop",
                )
            )
        else:
            print(f"   note: {nyu_root} is absent; the NYU-sample tokenizer row is skipped", flush=True)
        # Instances: the overfit proof's recipe, shorter (a deterministic figure of the whole instance chain).
        overfit = overfit_synthetic_instances(
            tmp / "instances",
            rooms=8,
            solver_steps=sizes["instance_steps"],
            tokenizer_steps=sizes["instance_tokenizer_steps"],
            seed=seed,
        )
        instance_note = (
            f"AR instance segmentation overfit on 8 fixed synthetic rooms, {sizes['instance_steps']} solver steps, "
            "scored on those rooms (the chain sequences -> loss -> decoding -> pasting -> pycocotools)"
        )
        rows.append(row("quality/instances_overfit", "box_ap", overfit["bbox"]["AP"], "AP", instance_note))
        rows.append(row("quality/instances_overfit", "mask_ap", overfit["segm"]["AP"], "AP", instance_note))
        rows.extend(heldout_instance_rows(tmp / "heldout_instances", sizes["heldout_instance_steps"], seed))
        rows.append(
            row(
                "quality/run",
                "wall_time",
                time.perf_counter() - start,
                "s",
                f"tokenizer {tokenizer_s:.0f} s; solver {trained['images_per_s']:.1f} images/s "
                f"({torch.get_num_threads()} thread)",
            )
        )
    return rows


def heldout_instance_rows(tmp: Path, steps: int, seed: int) -> list[dict]:
    """The memory-box instance recipe (`instance_only.MEASURED_AT`), short and instance-only, scored on the demo's
    64 held-out rooms.

    The demo's mask tokenizer, then `cpu_joint_demo` on instance images alone (8 a step) for `steps` steps
    with its own schedule. Box AP is tiny at this budget (1.6 % AP50 after 1000 steps, measured), so the
    guarded figure is the teacher-forced class accuracy of the real objects (`instance_probe.py`), which
    reads the image (about 47 % after 1000 steps) where an image-blind decoder scores the most frequent
    class (17 %). The AP figures are reported beside it."""
    import instance_probe
    from instance_only import base_options

    from ait.demo import demo_configs
    from ait.engine import Trainer, evaluate_solver
    from ait_tokenizer.train import train_tokenizer

    _, mask_cfg, solver_cfg = demo_configs(tmp, cfg_options=base_options(steps, seed))
    mask_cfg.num_threads, mask_cfg.seed = 1, seed
    mask_ckpt = train_tokenizer(mask_cfg, tmp / "mask_tokenizer")
    cfg = solver_cfg(mask_ckpt, mask_ckpt)  # no depth task: the depth checkpoint is not read
    trainer = Trainer(cfg, device="cpu", evaluate=False)
    trainer.train()
    coco = evaluate_solver(cfg, trainer.model.eval())["insseg"]
    probe = instance_probe.probe(cfg.work_dir, images=64, seed=seed)
    note = (
        f"the demo's instance recipe alone, {steps} steps x 8 images, 64 held-out rooms; teacher-forced "
        f"(image-blind guess {probe['class_real']['image_blind_guess']:.3f})"
    )
    return [
        row("quality/instances_heldout", "class_accuracy", probe["class_real"]["accuracy"], "ratio", note),
        row("quality/instances_heldout", "x2_within_2", probe["x2"]["within_2"], "ratio", note),
        row("quality/instances_heldout", "box_ap", coco["bbox"]["AP"], "AP", note),
        row("quality/instances_heldout", "box_ap50", coco["bbox"]["AP50"], "AP", note),
        row("quality/instances_heldout", "mask_ap", coco["segm"]["AP"], "AP", note),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the CI-sized run (the one check.py uses)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = run(quick=args.quick, seed=args.seed)
    width = max(len(r["benchmark"]) for r in rows)
    for r in rows:
        print(f"{r['benchmark']:<{width}}  {r['metric']:<24} {r['value']:>10.4f} {r['unit']:<5} {r['note']}")


if __name__ == "__main__":
    main()
