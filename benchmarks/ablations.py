"""The paper's ablations at small scale on the CPU (`nox -s ablations`).

    python benchmarks/ablations.py [--quick] [--seeds 0 1 2] [--out benchmarks/results]

Same data (synthetic rooms at 64x64, the same training and held-out rooms for every variant), backbone
(swinv2-tiny-cpu) and budget (the same steps x images) for every variant; several seeds (the seed changes
the initial weights and the data order, not the rooms); mean ± spread (population standard deviation, and
min..max) of the held-out depth RMSE:

- `ait_soft`        AiT with soft token (CE + soft-token SILog, soft decoding): the reference;
- `ait_wosoft`      AiT without soft token (CE only, argmax codes decoded; the paper: 0.318 vs 0.305);
- `ait_p`           AiT-P: parallel decoding in one masked pass (the paper: 0.301 vs 0.305 for B);
- `ait_nomaskaug`   AiT over a depth tokenizer trained without mask augmentation (the tokenizer's own
                    reconstruction RMSE on maps with invalid regions, scored against the complete depth, is
                    reported too);
- `dense_head`      no tokens at all: the same backbone, a small conv/upsample regression head trained with
                    SILog + L1 on the valid pixels (what a user would pick instead).

Writes benchmarks/results/ablations.md (table), ablations.json (every run) and ablations.png (RMSE per
variant, one dot per seed). --quick: one seed, few steps (a smoke test, figures meaningless).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    depth_solver_config,
    mean_train_depth,
    torch_threads,
    train_and_evaluate_depth,
    train_depth_tokenizer,
)

HERE = Path(__file__).resolve().parent
SIZES = {
    True: {"tokenizer_steps": 40, "solver_steps": 30, "batch": 8, "train_size": 128, "val_size": 16},
    False: {"tokenizer_steps": 200, "solver_steps": 150, "batch": 8, "train_size": 256, "val_size": 32},
}
VARIANTS = {
    "ait_soft": ("AiT, soft token", {}),
    "ait_wosoft": (
        "AiT w/o soft token",
        {"model.soft_token": False, "model.soft_input": False, "loss.depth_aux_weight": 0.0},
    ),
    "ait_p": ("AiT-P (parallel)", {"model.parallel": True, "model.soft_input": False}),
    "ait_nomaskaug": ("AiT, tokenizer w/o mask aug", {}),
    "dense_head": ("dense regression head", {}),
}
PAPER = {
    "ait_soft": "0.305 (SwinV2-B, NYUv2)",
    "ait_wosoft": "0.318",
    "ait_p": "0.301",
    "ait_nomaskaug": "not reported as an RMSE",
    "dense_head": "not in the paper",
}


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
        self.backbone = create_backbone(cfg.model.backbone, drop_path_rate=cfg.model.backbone_drop_path)
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


def _tokenizer_scores(checkpoint: Path) -> dict:
    from ait_tokenizer import load_tokenizer
    from ait_tokenizer.evaluate import evaluate_synthetic

    scores = evaluate_synthetic(load_tokenizer(checkpoint), maps=64, split="test", seed=0)
    return {k: scores[k] for k in ("rmse_complete", "rmse_holes", "rmse_valid", "hole_fraction")}


def run_seed(seed: int, sizes: dict, tmp: Path, variants: list[str], log) -> list[dict]:
    records = []
    tokenizers = {}
    for name, ratio in (("maskaug", None), ("nomaskaug", 0.0)):
        if name == "nomaskaug" and "ait_nomaskaug" not in variants:
            continue
        start = time.perf_counter()
        ckpt = train_depth_tokenizer(
            tmp / f"tok_{name}_{seed}",
            steps=sizes["tokenizer_steps"],
            train_size=sizes["train_size"],
            mask_ratio=ratio,
            seed=seed,
        )
        tokenizers[name] = ckpt
        scores = _tokenizer_scores(ckpt)
        records.append({"kind": "tokenizer", "variant": f"tokenizer_{name}", "seed": seed, **scores})
        log(
            f"seed {seed} tokenizer {name}: rmse vs complete {scores['rmse_complete']:.4f}, "
            f"holes {scores['rmse_holes']:.4f} ({time.perf_counter() - start:.0f} s)"
        )
    for variant in variants:
        start = time.perf_counter()
        tokenizer = tokenizers["nomaskaug" if variant == "ait_nomaskaug" else "maskaug"]
        cfg = depth_solver_config(
            tokenizer,
            tmp / f"{variant}_{seed}",
            steps=sizes["solver_steps"],
            batch=sizes["batch"],
            train_size=sizes["train_size"],
            val_size=sizes["val_size"],
            seed=seed,
            **VARIANTS[variant][1],
        )
        factory = DenseDepthSolver if variant == "dense_head" else None
        result = train_and_evaluate_depth(cfg, model_factory=factory)
        metrics = result["metrics"]
        records.append(
            {
                "kind": "solver",
                "variant": variant,
                "seed": seed,
                **{k: metrics[k] for k in ("rmse", "abs_rel", "d1", "silog_ait")},
                "train_images_per_s": result["images_per_s"],
            }
        )
        log(
            f"seed {seed} {variant}: rmse {metrics['rmse']:.4f} d1 {metrics['d1']:.3f} "
            f"({time.perf_counter() - start:.0f} s)"
        )
        if variant == "ait_soft" and seed == 0:
            from ait.data import build_eval_loader
            from ait.evaluation import mean_depth_baseline

            base = mean_depth_baseline(mean_train_depth(cfg), build_eval_loader(cfg, "depth"), cfg.eval)
            records.append(
                {"kind": "baseline", "variant": "mean_baseline", "seed": seed, "rmse": base["rmse"]}
            )
    return records


def summarise(records: list[dict], key: str, kind: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for variant in dict.fromkeys(r["variant"] for r in records if r["kind"] == kind):
        values = [r[key] for r in records if r["kind"] == kind and r["variant"] == variant]
        out[variant] = {
            "values": values,
            "mean": statistics.fmean(values),
            "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }
    return out


def to_markdown(records: list[dict], sizes: dict, seeds: list[int], wall_s: float, quick: bool) -> str:
    solver = summarise(records, "rmse", "solver")
    d1 = summarise(records, "d1", "solver")
    tok = summarise(records, "rmse_complete", "tokenizer")
    holes = summarise(records, "rmse_holes", "tokenizer")
    baseline = [r["rmse"] for r in records if r["kind"] == "baseline"]
    lines = [
        "# Ablations at small scale (CPU, synthetic rooms)",
        "",
        f"{'QUICK smoke run: figures meaningless. ' if quick else ''}cpu_depth_tiny (swinv2-tiny-cpu, 64x64, "
        f"8x8 depth tokens), depth tokenizer {sizes['tokenizer_steps']} steps, every solver "
        f"{sizes['solver_steps']} steps x {sizes['batch']} images on {sizes['train_size']} training rooms, "
        f"held-out RMSE on {sizes['val_size']} rooms (split val, no TTA); seeds {seeds}; "
        f"one torch thread; {wall_s / 60:.0f} min wall.",
        "",
        "| variant | depth RMSE (m) mean ± std | min .. max | δ1 mean | paper (NYUv2 RMSE) |",
        "|---|---:|---:|---:|---|",
    ]
    for variant, s in solver.items():
        lines.append(
            f"| {VARIANTS[variant][0]} (`{variant}`) | {s['mean']:.4f} ± {s['std']:.4f} | "
            f"{s['min']:.4f} .. {s['max']:.4f} | {d1[variant]['mean']:.3f} | {PAPER[variant]} |"
        )
    if baseline:
        lines.append(f"| predict the mean training depth | {baseline[0]:.4f} | | | |")
    if tok:
        lines += [
            "",
            "Depth tokenizer reconstruction of 64 held-out maps with invalid regions (decode(encode(x)) vs "
            "the complete depth the generator knows):",
            "",
            "| tokenizer | RMSE vs complete (m) | RMSE on the holes only (m) |",
            "|---|---:|---:|",
        ]
        for variant, s in tok.items():
            h = holes[variant]
            lines.append(
                f"| {variant} | {s['mean']:.4f} ± {s['std']:.4f} | {h['mean']:.4f} ± {h['std']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    solver = summarise(records, "rmse", "solver")
    names = list(solver)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, name in enumerate(names):
        s = solver[name]
        ax.bar(i, s["mean"], color="#9ecae1", yerr=s["std"], capsize=4)
        ax.scatter([i] * len(s["values"]), s["values"], color="#08519c", s=12, zorder=3)
    baseline = [r["rmse"] for r in records if r["kind"] == "baseline"]
    if baseline:
        ax.axhline(baseline[0], color="#d62728", linestyle="--", linewidth=1, label="predict the mean")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(range(len(names)), [VARIANTS[n][0] for n in names], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("held-out depth RMSE (m)")
    ax.set_title("AiT ablations at small scale (mean ± std, dots: seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one seed, few steps (smoke test)")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (quick: 0)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    sizes = SIZES[bool(args.quick)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "ablations_quick" if args.quick else "ablations"
    records: list[dict] = []
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[ablations {time.perf_counter() - start:6.0f} s] {message}", flush=True)

    with tempfile.TemporaryDirectory(prefix="ait_ablations_") as tmp, torch_threads(1):
        for seed in seeds:
            records += run_seed(seed, sizes, Path(tmp), args.variants, log)
            # write what is done so far: a long run interrupted still leaves its finished seeds
            done = seeds[: seeds.index(seed) + 1]
            markdown = to_markdown(records, sizes, done, time.perf_counter() - start, args.quick)
            (out / f"{stem}.json").write_text(json.dumps({"sizes": sizes, "records": records}, indent=2))
            (out / f"{stem}.md").write_text(markdown)
            plot(records, out / f"{stem}.png")
    print(markdown)
    print(f"wrote {out / (stem + '.md')}, {out / (stem + '.json')}, {out / (stem + '.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
