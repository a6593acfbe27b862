"""The paper's ablations at the demo's scale on the CPU (`nox -s ablations`).

    python benchmarks/ablations.py [--quick] [--seeds 0 1 2] [--jobs 2] [--out benchmarks/results]
    python benchmarks/ablations.py --render benchmarks/ablations/ablations.json   # table + plot again

Depth (held-out RMSE on the default generator's 64 `val` rooms): the demo's solver (`cpu_joint_demo`: conv-stem
SwinV2, 64x64 images) trained on depth alone over a depth tokenizer of the demo's shape (16x16 tokens,
channels 32/64, 4 px mask-augmentation patches), every variant with the same rooms, steps and images:

- `ait_soft`        AiT: autoregressive, soft token (CE + soft-token SILog, soft decoding, soft next input);
- `ait_wosoft`      AiT without soft token (CE only, argmax codes; the paper: 0.318 vs 0.305 RMSE);
- `ait_p`           AiT-P: one masked parallel pass (the paper: 0.301 vs 0.305; the demo's depth mode);
- `ait_nomaskaug`   `ait_soft` over a depth tokenizer trained without mask augmentation;
- `dense_head`      no tokens: the same backbone, a conv/upsample regression head (SILog + L1).

Instances (box and mask AP, pycocotools): instances are not yet learned on held-out rooms at a CPU budget
(the demo's box AP is about 0.1 %), so the soft-mask-loss ablation is run where the chain does learn: the
overfit setting of `ait.overfit` (a small solver memorising 16 fixed rooms, decoded autoregressively, scored
on them), stopped before it saturates. It measures how well each variant fits masks, not generalisation.

- `insseg_soft`        soft token: Dice + MSE soft mask loss, soft mask decoding (the reference);
- `insseg_nomaskloss`  the soft mask loss off (`loss.mask_aux_weight=0`), decoding unchanged;
- `insseg_wosoft`      without soft token (no soft mask loss, hard mask tokens; the paper: mask AP 31.1 vs
                       34.2, box AP 43.6 vs 43.3).

Several seeds: the seed changes initial weights and data order, never the rooms; each seed trains its own
tokenizers. Mean ± population standard deviation and min..max; each claim of the paper gets a verdict
(`verdict`): "holds" when the difference is in the paper's direction and larger than the two variants'
seed spreads together, "reversed" when it is that large the other way, otherwise "within the seed spread".

Writes benchmarks/results/ablations.{md,json,png}. Jobs run in parallel processes of one torch thread each
(`--jobs`, default: the machine's cores). --quick: one seed, a few steps (a smoke test, figures meaningless).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

HERE = Path(__file__).resolve().parent
SIZES = {
    "full": {
        "tokenizer_steps": 1000,
        "tokenizer_train_size": 1000,
        "solver_steps": 1000,
        "batch": 8,
        "train_size": 2000,
        "val_size": 64,
        "insseg_rooms": 16,
        "insseg_steps": 300,
        "insseg_tokenizer_steps": 300,
    },
    "quick": {
        "tokenizer_steps": 6,
        "tokenizer_train_size": 32,
        "solver_steps": 6,
        "batch": 2,
        "train_size": 16,
        "val_size": 4,
        "insseg_rooms": 2,
        "insseg_steps": 6,
        "insseg_tokenizer_steps": 6,
    },
}
_AR = {"model.decoding": {"depth": "autoregressive"}, "model.parallel": False}
DEPTH_VARIANTS = {
    "ait_soft": ("AiT, soft token", {**_AR, "model.soft_input": True}),
    "ait_wosoft": (
        "AiT w/o soft token",
        {**_AR, "model.soft_token": False, "model.soft_input": False, "loss.depth_aux_weight": 0.0},
    ),
    "ait_p": ("AiT-P (parallel)", {"model.decoding": {"depth": "parallel"}, "model.soft_input": False}),
    "ait_nomaskaug": ("AiT, tokenizer w/o mask aug", {**_AR, "model.soft_input": True}),
    "dense_head": ("dense regression head", {}),
}
INSSEG_VARIANTS = {
    "insseg_soft": ("instances, soft token", {}),
    "insseg_nomaskloss": ("instances w/o soft mask loss", {"loss.mask_aux_weight": 0.0}),
    "insseg_wosoft": ("instances w/o soft token", {"model.soft_token": False, "model.soft_input": False}),
}
VARIANTS = {**DEPTH_VARIANTS, **INSSEG_VARIANTS}
PAPER = {
    "ait_soft": "0.305 (SwinV2-B, NYUv2)",
    "ait_wosoft": "0.318",
    "ait_p": "0.301",
    "ait_nomaskaug": "not reported as an RMSE",
    "dense_head": "not in the paper",
    "insseg_soft": "box 43.3, mask 34.2 (COCO)",
    "insseg_nomaskloss": "not reported alone",
    "insseg_wosoft": "box 43.6, mask 31.1",
}
# (claim, better variant, other variant, metric, lower is better, "equal" claims hold within the spread)
CLAIMS = [
    ("soft token beats hard tokens (depth RMSE)", "ait_soft", "ait_wosoft", "rmse", True, False),
    ("AiT-P is as accurate as AiT (depth RMSE)", "ait_p", "ait_soft", "rmse", True, True),
    ("mask augmentation helps (depth RMSE)", "ait_soft", "ait_nomaskaug", "rmse", True, False),
    (
        "tokens compete with a dense head (depth RMSE; not a paper claim)",
        "ait_p",
        "dense_head",
        "rmse",
        True,
        True,
    ),
    ("soft mask loss raises mask AP", "insseg_soft", "insseg_nomaskloss", "segm_AP", False, False),
    ("soft token raises mask AP", "insseg_soft", "insseg_wosoft", "segm_AP", False, False),
    ("soft token leaves box AP about equal", "insseg_soft", "insseg_wosoft", "bbox_AP", False, True),
]


class DenseDepthSolver(nn.Module):
    """Backbone features -> conv/upsample -> depth: the plain regression baseline on the same backbone.

    Shares the task-solver's interface for the engine (`training_step`, `predict_depth`, `depth_head.size`)
    so it trains and evaluates through the same Trainer and `evaluate_solver` code.
    """

    class _Size:
        def __init__(self, size: tuple[int, int]):
            self.size = size

    def __init__(self, cfg, width: int = 64):
        super().__init__()
        from ait_backbone import create_backbone

        self.cfg = cfg
        self.backbone = create_backbone(
            cfg.model.backbone, drop_path_rate=cfg.model.backbone_drop_path, **cfg.model.backbone_overrides
        )
        self.depth_head = self._Size(tuple(cfg.model.depth_size))
        upsamplings = int(math.log2(self.backbone.stride))
        layers: list[nn.Module] = [nn.Conv2d(self.backbone.out_channels, width, 1)]
        channels = width
        for _ in range(upsamplings):  # stride 32 -> 1: five x2 upsamplings, channels halved down to 16
            out = max(16, channels // 2)
            layers += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(channels, out, 3, padding=1),
                nn.ReLU(inplace=True),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 3, padding=1))
        self.decoder = nn.Sequential(*layers)

    def forward_depth(self, images: torch.Tensor) -> torch.Tensor:
        # softplus keeps depth positive (SILog takes its log); +0.1 m keeps the log finite early on
        return nn.functional.softplus(self.decoder(self.backbone(images))) + 0.1

    def training_step(self, batch: dict, generator=None) -> dict:
        from ait.losses import silog_loss

        images, depth = batch["depth"]["image"], batch["depth"]["depth"]
        pred = self.forward_depth(images)
        valid = depth > 0
        silog = silog_loss(pred, depth, lam=self.cfg.loss.silog_lambda)
        l1 = (pred - depth).abs()[valid].mean() if bool(valid.any()) else pred.sum() * 0.0
        loss = silog + l1
        return {"loss": loss, "depth_silog": float(silog.detach()), "depth_l1": float(l1.detach())}

    def forward(self, batch: dict, generator=None) -> dict:
        return self.training_step(batch, generator)

    @torch.no_grad()
    def predict_depth(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_depth(images)


# ----------------------------------------------------------------------------------------------------------
# The jobs (each runs in its own process, one torch thread)


def _one_thread() -> None:
    torch.set_num_threads(1)
    import warnings

    warnings.simplefilter("ignore")


def train_depth_tokenizer(out_dir: Path, sizes: dict, seed: int, mask_aug: bool) -> dict:
    """The demo's depth tokenizer shape, `tokenizer_steps` steps; its reconstruction of 64 held-out maps."""
    from _common import train_depth_tokenizer as train

    from ait.demo import DEMO_DEPTH_TOKENIZER
    from ait_tokenizer import load_tokenizer
    from ait_tokenizer.evaluate import evaluate_synthetic

    start = time.perf_counter()
    checkpoint = train(
        out_dir,
        steps=sizes["tokenizer_steps"],
        train_size=sizes["tokenizer_train_size"],
        mask_ratio=None if mask_aug else 0.0,
        seed=seed,
        tokenizer_overrides=DEMO_DEPTH_TOKENIZER["tokenizer_overrides"],
        decays=15,  # the demo's schedule: 15 decays (1500 steps, every 100)
    )
    scores = evaluate_synthetic(load_tokenizer(checkpoint), maps=64, split="test", seed=0)
    return {
        "kind": "tokenizer",
        "variant": "tokenizer_maskaug" if mask_aug else "tokenizer_nomaskaug",
        "seed": seed,
        "checkpoint": str(checkpoint),
        **{k: scores[k] for k in ("rmse_valid", "rmse_complete", "rmse_holes", "hole_fraction")},
        "seconds": time.perf_counter() - start,
    }


def depth_solver_config(tokenizer: str, work_dir: Path, sizes: dict, seed: int, overrides: dict):
    """The demo's solver on depth alone over `tokenizer`; dotted overrides last."""
    from ait.config import create_config

    steps = sizes["solver_steps"]
    base = {
        "model.tasks": ("depth",),
        "model.decoding": {"depth": "parallel"},  # the demo's depth mode; the variants override it
        "data.insseg_batch": 0,
        "model.depth_tokenizer.checkpoint": tokenizer,
        "work_dir": str(work_dir),
        "optim.max_iters": steps,
        "optim.warmup_iters": max(1, steps // 20),
        "data.depth_batch": sizes["batch"],
        "data.synthetic_train_length": sizes["train_size"],
        "data.synthetic_val_length": sizes["val_size"],
        "data.synthetic_seed": 0,
        "checkpoint_interval": 0,
        "log_interval": max(1, steps),
        "progress": False,
        "seed": seed,
        "num_threads": 1,
        # the peak lr the stored ablations were measured at (the demo's before it moved to 2e-3)
        "optim.lr": 1e-3,
    }
    return create_config("cpu_joint_demo", {**base, **overrides})


def train_depth_solver(variant: str, tokenizer: str, work_dir: Path, sizes: dict, seed: int) -> dict:
    import shutil

    from _common import train_and_evaluate_depth

    start = time.perf_counter()
    cfg = depth_solver_config(tokenizer, work_dir, sizes, seed, DEPTH_VARIANTS[variant][1])
    result = train_and_evaluate_depth(
        cfg, model_factory=DenseDepthSolver if variant == "dense_head" else None
    )
    shutil.rmtree(cfg.work_dir, ignore_errors=True)
    return {
        "kind": "depth",
        "variant": variant,
        "seed": seed,
        **{k: result["metrics"][k] for k in ("rmse", "abs_rel", "d1")},
        "train_images_per_s": result["images_per_s"],
        "seconds": time.perf_counter() - start,
    }


def mean_baseline(tokenizer: str, work_dir: Path, sizes: dict) -> dict:
    """Predict the mean training depth everywhere: the floor every variant must beat."""
    from _common import mean_train_depth

    from ait.data import build_eval_loader
    from ait.evaluation import mean_depth_baseline

    cfg = depth_solver_config(tokenizer, work_dir, sizes, 0, {})
    base = mean_depth_baseline(mean_train_depth(cfg), build_eval_loader(cfg, "depth"), cfg.eval)
    return {"kind": "baseline", "variant": "mean_baseline", "seed": 0, "rmse": base["rmse"]}


def train_instances(variant: str, work_dir: Path, sizes: dict, seed: int) -> dict:
    from ait.overfit import overfit_synthetic_instances

    start = time.perf_counter()
    result = overfit_synthetic_instances(
        work_dir,
        rooms=sizes["insseg_rooms"],
        solver_steps=sizes["insseg_steps"],
        tokenizer_steps=sizes["insseg_tokenizer_steps"],
        seed=seed,
        overrides=INSSEG_VARIANTS[variant][1],
    )
    return {
        "kind": "insseg",
        "variant": variant,
        "seed": seed,
        "bbox_AP": result["bbox"]["AP"],
        "bbox_AP50": result["bbox"]["AP50"],
        "segm_AP": result["segm"]["AP"],
        "segm_AP50": result["segm"]["AP50"],
        "seconds": time.perf_counter() - start,
    }


# ----------------------------------------------------------------------------------------------------------
# Summaries, verdicts, the table and the plot


def summarise(records: list[dict], kind: str, key: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    order = [*VARIANTS, "tokenizer_maskaug", "tokenizer_nomaskaug"]
    present = {r["variant"] for r in records if r["kind"] == kind}
    for variant in sorted(present, key=order.index):
        values = [r[key] for r in records if r["kind"] == kind and r["variant"] == variant]
        out[variant] = {
            "values": values,
            "mean": statistics.fmean(values),
            "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }
    return out


def verdict(better: dict, other: dict, lower_is_better: bool, claim_is_equal: bool) -> str:
    """Whether "`better` is better than (or, for an equality claim, as good as) `other`" holds here.

    A difference counts when it exceeds the two variants' seed spreads (population std) together.
    """
    if min(len(better["values"]), len(other["values"])) < 2:
        return "one seed: no spread, no verdict"
    gain = other["mean"] - better["mean"] if lower_is_better else better["mean"] - other["mean"]
    spread = better["std"] + other["std"]
    if claim_is_equal:
        if abs(gain) <= spread or gain > 0:
            return "holds" if gain <= spread else "holds (better than equal)"
        return "reversed"
    if gain > spread:
        return "holds"
    if gain < -spread:
        return "reversed"
    return "within the seed spread"


def claims(records: list[dict]) -> list[dict]:
    out = []
    for text, better, other, metric, lower, equal in CLAIMS:
        kind = "depth" if metric == "rmse" else "insseg"
        stats = summarise(records, kind, metric)
        if better not in stats or other not in stats:
            continue
        out.append(
            {
                "claim": text,
                "better": better,
                "other": other,
                "metric": metric,
                "better_mean": stats[better]["mean"],
                "other_mean": stats[other]["mean"],
                "verdict": verdict(stats[better], stats[other], lower, equal),
            }
        )
    return out


def to_markdown(records: list[dict], sizes: dict, seeds: list[int], wall_s: float, quick: bool) -> str:
    depth = summarise(records, "depth", "rmse")
    d1 = summarise(records, "depth", "d1")
    baseline = [r["rmse"] for r in records if r["kind"] == "baseline"]
    lines = [
        "# Ablations at the demo's scale (CPU, synthetic rooms)",
        "",
        f"{'QUICK smoke run: figures meaningless. ' if quick else ''}Seeds {seeds}; one torch thread per "
        f"job; {wall_s / 60:.0f} min wall. Depth: `cpu_joint_demo` on depth alone (conv-stem SwinV2, 64x64), "
        f"depth tokenizer of the demo's shape (16x16 tokens) trained {sizes['tokenizer_steps']} steps per "
        f"seed, every solver {sizes['solver_steps']} steps x {sizes['batch']} images from "
        f"{sizes['train_size']} training rooms, RMSE on {sizes['val_size']} held-out rooms (flip TTA).",
        "",
        "| variant | depth RMSE (m) mean ± std | min .. max | RMSE / mean baseline | δ1 | paper (NYUv2 RMSE) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for variant, s in depth.items():
        ratio = f"{s['mean'] / baseline[0]:.3f}" if baseline else "-"
        lines.append(
            f"| {VARIANTS[variant][0]} (`{variant}`) | {s['mean']:.4f} ± {s['std']:.4f} | "
            f"{s['min']:.4f} .. {s['max']:.4f} | {ratio} | {d1[variant]['mean']:.3f} | {PAPER[variant]} |"
        )
    if baseline:
        lines.append(f"| predict the mean training depth | {baseline[0]:.4f} | | 1 | | |")
    tokenizers = {
        key: summarise(records, "tokenizer", key) for key in ("rmse_valid", "rmse_complete", "rmse_holes")
    }
    if tokenizers["rmse_valid"]:
        lines += [
            "",
            "Depth tokenizers: decode(encode(x)) of 64 held-out maps with invalid regions, against the valid "
            "pixels, the complete depth the generator knows, and the holes alone:",
            "",
            "| tokenizer | RMSE valid (m) | RMSE complete (m) | RMSE holes (m) |",
            "|---|---:|---:|---:|",
        ]
        for variant in tokenizers["rmse_valid"]:
            cells = [
                f"{tokenizers[k][variant]['mean']:.4f} ± {tokenizers[k][variant]['std']:.4f}"
                for k in tokenizers
            ]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    insseg = {
        key: summarise(records, "insseg", key) for key in ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50")
    }
    if insseg["segm_AP"]:
        lines += [
            "",
            f"Instances: a small solver (`cpu_insseg_tiny`, `ait.overfit`) fitting {sizes['insseg_rooms']} fixed "
            f"rooms for {sizes['insseg_steps']} steps (mask tokenizer fitted {sizes['insseg_tokenizer_steps']} "
            "steps on their crops), decoded autoregressively, AP (%) on those rooms:",
            "",
            "| variant | box AP | box AP50 | mask AP | mask AP50 | paper (COCO) |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for variant in insseg["segm_AP"]:
            cells = [
                f"{100 * insseg[k][variant]['mean']:.1f} ± {100 * insseg[k][variant]['std']:.1f}"
                for k in insseg
            ]
            lines.append(
                f"| {VARIANTS[variant][0]} (`{variant}`) | " + " | ".join(cells) + f" | {PAPER[variant]} |"
            )
    verdicts = claims(records)
    if verdicts:
        lines += ["", "| claim | here (mean vs mean) | verdict |", "|---|---|---|"]
        for c in verdicts:
            if c["metric"] == "rmse":
                better, other = f"{c['better_mean']:.3f} m", f"{c['other_mean']:.3f} m"
            else:
                better, other = f"{100 * c['better_mean']:.1f} %", f"{100 * c['other_mean']:.1f} %"
            lines.append(
                f"| {c['claim']} | `{c['better']}` {better} vs `{c['other']}` {other} | {c['verdict']} |"
            )
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("depth", "rmse", "held-out depth RMSE (m)", 1.0),
        ("insseg", "segm_AP", "mask AP (%), fitted rooms", 100.0),
    ]
    panels = [p for p in panels if summarise(records, p[0], p[1])]
    if not panels:  # only tokenizers finished so far
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (kind, key, label, scale) in zip(axes[0], panels, strict=True):
        stats = summarise(records, kind, key)
        names = list(stats)
        for i, name in enumerate(names):
            s = stats[name]
            ax.bar(i, scale * s["mean"], color="#9ecae1", yerr=scale * s["std"], capsize=4)
            ax.scatter(
                [i] * len(s["values"]), [scale * v for v in s["values"]], color="#08519c", s=12, zorder=3
            )
        baseline = [r["rmse"] for r in records if r["kind"] == "baseline"]
        if kind == "depth" and baseline:
            ax.axhline(baseline[0], color="#d62728", linestyle="--", linewidth=1, label="predict the mean")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xticks(range(len(names)), [VARIANTS[n][0] for n in names], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(label)
    fig.suptitle("AiT ablations at the demo's scale (mean ± std, dots: seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------


def run(seeds: list[int], sizes: dict, variants: list[str], jobs: int, tmp: Path, log, write) -> list[dict]:
    """Tokenizers first (the depth solvers need them), then every solver; `write(records)` after each job."""
    records: list[dict] = []
    depth_variants = [v for v in variants if v in DEPTH_VARIANTS]
    insseg_variants = [v for v in variants if v in INSSEG_VARIANTS]
    context = get_context("spawn")  # a fresh interpreter per worker: one thread, no inherited state
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_one_thread) as pool:
        pending = {}
        for seed in seeds if depth_variants else []:
            for mask_aug in (True, False) if "ait_nomaskaug" in depth_variants else (True,):
                name = f"tok_{'maskaug' if mask_aug else 'nomaskaug'}_{seed}"
                pending[pool.submit(train_depth_tokenizer, tmp / name, sizes, seed, mask_aug)] = name
        # the instance jobs need no tokenizer: they fill the workers while the depth tokenizers train
        for seed in seeds:
            for variant in insseg_variants:
                name = f"{variant}_{seed}"
                pending[pool.submit(train_instances, variant, tmp / name, sizes, seed)] = name
        while pending:
            future = next(as_completed(pending))
            name = pending.pop(future)
            record = future.result()
            checkpoint = record.pop("checkpoint", None)  # a temporary path: not part of the results
            records.append(record)
            write(records)
            detail = ", ".join(
                f"{k} {v:.4f}" for k, v in record.items() if isinstance(v, float) and k != "seconds"
            )
            log(f"{name}: {detail} ({record.get('seconds', 0):.0f} s)")
            if record["kind"] != "tokenizer":
                continue
            seed = record["seed"]
            if record["variant"] == "tokenizer_maskaug":
                for variant in (v for v in depth_variants if v != "ait_nomaskaug"):
                    name = f"{variant}_{seed}"
                    job = pool.submit(train_depth_solver, variant, checkpoint, tmp / name, sizes, seed)
                    pending[job] = name
                if seed == seeds[0]:
                    pending[pool.submit(mean_baseline, checkpoint, tmp / "baseline", sizes)] = "baseline"
            else:
                name = f"ait_nomaskaug_{seed}"
                job = pool.submit(train_depth_solver, "ait_nomaskaug", checkpoint, tmp / name, sizes, seed)
                pending[job] = name
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one seed, a few steps (smoke test)")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (quick: 0)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel one-thread processes")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument(
        "--render", metavar="JSON", help="rewrite the table and plot of a finished run's JSON"
    )
    args = parser.parse_args(argv)
    if args.render:
        payload = json.loads(Path(args.render).read_text())
        records, sizes, quick = payload["records"], payload["sizes"], payload["sizes"] == SIZES["quick"]
        markdown = to_markdown(records, sizes, payload["seeds"], payload.get("wall_s", float("nan")), quick)
        Path(args.render).with_suffix(".md").write_text(markdown)
        plot(records, Path(args.render).with_suffix(".png"))
        print(markdown)
        return 0
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, received {args.jobs}")
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    sizes = SIZES["quick" if args.quick else "full"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "ablations_quick" if args.quick else "ablations"
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[ablations {time.perf_counter() - start:6.0f} s] {message}", flush=True)

    def write(records: list[dict]) -> str:
        # after every job: a long run interrupted still leaves what it finished
        wall_s = time.perf_counter() - start
        markdown = to_markdown(records, sizes, seeds, wall_s, args.quick)
        payload = {
            "sizes": sizes,
            "seeds": seeds,
            "wall_s": wall_s,
            "records": records,
            "claims": claims(records),
        }
        (out / f"{stem}.json").write_text(json.dumps(payload, indent=2))
        (out / f"{stem}.md").write_text(markdown)
        plot(records, out / f"{stem}.png")
        return markdown

    with tempfile.TemporaryDirectory(prefix="ait_ablations_") as tmp:
        records = run(seeds, sizes, args.variants, args.jobs, Path(tmp), log, write)
    print(write(records))
    print(f"wrote {out / (stem + '.md')}, {out / (stem + '.json')}, {out / (stem + '.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
