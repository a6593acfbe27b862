"""The end-to-end demo on synthetic rooms (`ait demo`, `nox -s demo`).

1. trains a small depth tokenizer and a small instance-mask tokenizer on synthetic rooms,
2. trains a joint depth + instance-segmentation task-solver (config `cpu_joint_demo`) on synthetic rooms,
3. evaluates it on the held-out "val" split, next to the predict-the-mean depth baseline,
4. writes `results.md` (table in the original README's format, timings, throughput), `predictions.png`
   (input | ground truth | prediction | instance overlay) and `metrics.json` into the output folder.

Sized for about 15 minutes on two idle CPU cores. The solver trains in two one-thread processes (one
process group, gloo): its step is bound by small operations, and two processes keep both cores busier than
one two-thread process does (1.14x the images per second over a whole demo, `benchmarks/README.md`, "Making
a step cheaper"). Everything is seeded: on the same CPU model with the same process and thread counts, a
rerun prints the same table, figure for figure (measured on fresh clones, in one process and in two). A
rerun retrains from scratch (the folder's previous checkpoints are replaced).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["DEMO_PROCESSES", "DemoResult", "demo_configs", "run_demo"]

# The solver's training processes: two one-thread processes on a 2-core CPU (see the module docstring)
DEMO_PROCESSES = 2

# Demo-sized tokenizer runs (overrides of the registry's cpu_*_vqvae configs).
DEMO_DEPTH_TOKENIZER = {
    # downsample 4 (two stages, 32/64 channels): 16x16 tokens of 4x4 px for the 64x64 rooms, with 4 px mask-
    # augmentation patches. The tokenizer oracle (its reconstruction of the held-out rooms, valid pixels) is
    # 0.19 m after 1500 steps, against 0.39 m for the preset's 8x8 tokens at 600 steps and 0.28 m at 1500;
    # the solver over it also lands lower (0.78 vs 0.83 m, same 2000 solver steps)
    "tokenizer_overrides": {"channels": (32, 64), "mask_patch_size": 4},
    "train_size": 1000,
    "val_size": 32,
    "epochs": 100,
    "max_steps": 1500,
    "batch_size": 16,
    "decay_every": 100,
    "val_every": 0,
    "checkpoint_every": 0,
    "log_every": 250,
}
DEMO_MASK_TOKENIZER = {
    "train_size": 300,
    "val_size": 16,
    "epochs": 100,
    "max_steps": 300,
    "batch_size": 32,
    "warmup_steps": 30,
    "val_every": 0,
    "checkpoint_every": 0,
    "log_every": 50,
}
QUICK = {
    "tokenizer_steps": 4,
    "solver": {
        "optim.max_iters": 4,
        "optim.warmup_iters": 1,
        "data.synthetic_train_length": 16,
        "data.synthetic_val_length": 4,
        "data.depth_batch": 2,
        "data.insseg_batch": 2,
        "log_interval": 2,
        "checkpoint_interval": 0,
    },
}


@dataclass
class DemoResult:
    out_dir: Path
    table: str
    depth: dict[str, float]
    coco: dict[str, Any]
    baseline: dict[str, float]
    oracle: dict[str, dict] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    images_per_s: float = float("nan")
    report: Path | None = None
    figure: Path | None = None
    processes: int = 1  # the solver's training processes
    solver_threads: int = 1  # torch threads of each


def demo_configs(out_dir: str | Path, quick: bool = False, cfg_options: Iterable[str] = ()):
    """(depth tokenizer cfg, mask tokenizer cfg, solver cfg builder) of the demo, paths under `out_dir`."""
    from ait.config import create_config

    out = Path(out_dir)
    # both cores: the demo has the machine to itself (the tokenizers' convolutions use two threads well)
    common = {"progress": False, "resume": False, "seed": 0, "num_threads": 2}
    depth_over = {**DEMO_DEPTH_TOKENIZER, **common}
    mask_over = {**DEMO_MASK_TOKENIZER, **common}
    if quick:
        for over in (depth_over, mask_over):
            over.update(max_steps=QUICK["tokenizer_steps"], train_size=64, val_size=4, batch_size=8)
    depth_tok = create_config("cpu_depth_vqvae", depth_over)
    mask_tok = create_config("cpu_insseg_vqvae", mask_over)

    def solver(depth_ckpt: Path, mask_ckpt: Path):
        overrides = {
            "work_dir": str(out / "solver"),
            "model.depth_tokenizer.checkpoint": str(depth_ckpt),
            "model.mask_tokenizer.checkpoint": str(mask_ckpt),
            **(QUICK["solver"] if quick else {}),
        }
        cfg = create_config("cpu_joint_demo", overrides)
        from ait.config import apply_overrides

        apply_overrides(cfg, list(cfg_options))
        return cfg.validate()

    return depth_tok, mask_tok, solver


DEMO_MARK = ".ait-demo"  # in each folder the demo made; only such a folder is ever deleted by a rerun


def _check_demo_folder(path: Path) -> None:
    """Refuse a solver folder the demo did not make unless it is empty: it may hold a user's files."""
    if not path.exists() or (path / DEMO_MARK).is_file():
        return
    if path.is_dir() and not any(path.iterdir()):
        return
    raise FileExistsError(
        f"work_dir {path} exists and was not made by ait demo (no {DEMO_MARK} in it), and the demo replaces "
        "its work_dir: nothing was deleted; choose a new or empty folder (--out DIR, or --cfg-options "
        "work_dir=DIR)"
    )


def _fresh_demo_folder(path: Path) -> None:
    """An empty `path` marked as the demo's: a previous demo run's folder is replaced, nothing else."""
    _check_demo_folder(path)
    if (path / DEMO_MARK).is_file():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / DEMO_MARK).write_text("made by `ait demo`; a rerun of the demo replaces this folder\n")


def _phase(timings: dict[str, float], name: str, start: float) -> float:
    now = time.perf_counter()
    timings[name] = now - start
    print(f"[demo] {name}: {timings[name]:.1f} s", flush=True)
    return now


def _mean_train_depth(cfg, limit: int = 256) -> float:
    """Mean valid depth of (the first `limit` images of) the training split: the baseline's constant."""
    from ait.data import build_raw_dataset

    dataset = build_raw_dataset(cfg, "depth", "train")
    total, count = 0.0, 0
    for index in range(min(limit, len(dataset))):
        depth = torch.as_tensor(dataset[index]["depth"], dtype=torch.float64)
        valid = depth > 0
        total += float(depth[valid].sum())
        count += int(valid.sum())
    return total / max(count, 1)


@torch.no_grad()
def _figure(cfg, solver, path: Path, count: int = 4) -> Path:
    from ait.data import _collate, build_eval_dataset
    from ait.evaluation import instance_decoding, predict_depth_tta, predict_instances_fused
    from ait.visualize import save_prediction_grid

    depth_set = build_eval_dataset(cfg, "depth")
    count = min(count, len(depth_set))
    depth_batch = _collate([depth_set[i] for i in range(count)])
    pred = predict_depth_tta(
        solver.predict_depth,
        depth_batch["image"],
        window_width=cfg.eval.window_width or cfg.model.depth_size[1],
        sliding_window=cfg.eval.sliding_window,
        flip=cfg.eval.flip,
    )
    instances = None
    if "insseg" in cfg.model.tasks:
        inst_set = build_eval_dataset(cfg, "insseg")
        inst_batch = _collate([inst_set[i] for i in range(count)])
        generator = torch.Generator().manual_seed(cfg.seed)
        # the instances as the table scores them (the config's decodes, fused)
        instances = predict_instances_fused(
            solver,
            inst_batch["image"],
            scale=inst_batch["scale"],
            orig_size=inst_batch["orig_size"],
            image_size=inst_batch["image_size"],
            generator=generator,
            **instance_decoding(cfg.eval),
        )
    from ait_data.synthetic import CATEGORY_NAMES

    return save_prediction_grid(
        path,
        depth_batch["image"],
        depth_batch["depth"],
        pred,
        instances=instances,
        class_names=CATEGORY_NAMES,
    )


def _oracle_sentence(oracle: dict[str, dict]) -> str:
    depth, segm = oracle.get("depth", {}), oracle.get("insseg", {}).get("segm", {})
    parts = []
    if depth:
        parts.append(
            f"the depth tokenizer reconstructs the held-out ground truth to RMSE {depth.get('rmse', float('nan')):.3f} m "
            f"on its valid pixels ({depth.get('rmse_complete', float('nan')):.3f} m against the complete depth, "
            "holes included)"
        )
    if segm:
        parts.append(
            f"the mask tokenizer's reconstruction of the true instances scores mask AP "
            f"{100 * segm.get('AP', float('nan')):.1f} (AP50 {100 * segm.get('AP50', float('nan')):.1f})"
        )
    if not parts:
        return ""
    return (
        "Tokenizer oracle (what predicting the ground truth's own tokens would score): "
        + "; ".join(parts)
        + "."
    )


def _decodes_sentence(eval_cfg) -> str:
    """How the report's instances were decoded: one pass, or several fused (the end of a sentence)."""
    views = 2 if eval_cfg.instance_flip else 1
    if eval_cfg.instance_samples * views == 1:
        return "."
    mirror = " and as many of its mirror image" if views == 2 else ""
    return (
        f"; instances from {eval_cfg.instance_samples * views} decodes of each room "
        f"({eval_cfg.instance_samples} nucleus samples{mirror}), fused by weighted box fusion."
    )


def _report(result: DemoResult, cfg, tokenizer_cfgs) -> str:
    rmse, base = result.depth.get("rmse", float("nan")), result.baseline.get("rmse", float("nan"))
    lines = [
        "# AiT demo: joint depth + instance segmentation on synthetic rooms",
        "",
        f"Task-solver config `{cfg.name}` ({cfg.model.backbone}, d_model {cfg.model.d_model}, "
        f"{cfg.optim.max_iters} steps, {cfg.data.depth_batch} depth + {cfg.data.insseg_batch} instance images "
        f"per step at {cfg.data.image_size[0]}x{cfg.data.image_size[1]}); tokenizers "
        f"`{tokenizer_cfgs[0].tokenizer}` ({tokenizer_cfgs[0].max_steps} steps) and "
        f"`{tokenizer_cfgs[1].tokenizer}` ({tokenizer_cfgs[1].max_steps} steps). Evaluated on "
        f'{cfg.data.synthetic_val_length} held-out rooms (split "val"){_decodes_sentence(cfg.eval)}',
        "",
        result.table,
        "",
        f"Depth RMSE {rmse:.3f} m vs {base:.3f} m for predicting the mean training depth "
        f"({result.baseline.get('mean_depth', float('nan')):.2f} m) everywhere: "
        f"{(1 - rmse / base) * 100 if base == base and base > 0 else float('nan'):.0f} % lower.",
        "",
        _oracle_sentence(result.oracle),
        "",
        "![predictions](predictions.png)",
        "",
        "| phase | seconds |",
        "|---|---|",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in result.timings.items()],
        "",
        f"Task-solver training throughput: {result.images_per_s:.1f} images/s "
        f"({_workers(result.processes, result.solver_threads)}, {platform.processor() or platform.machine()}).",
        "",
        "Reproduce: `ait demo` (or `nox -s demo`).",
    ]
    return "\n".join(lines) + "\n"


def _workers(processes: int, threads: int) -> str:
    per = f"{threads} torch thread{'s' if threads > 1 else ''}"
    return per if processes == 1 else f"{processes} processes of {per}"


def solver_processes(requested: int, cfg) -> int:
    """How many processes train the solver: `requested`, or 1 where a local process group cannot run (no
    torch.distributed, or a GPU, which the processes would share). ValueError (ConfigError) outside
    1..smallest batch, or where the config's micro-batches cannot split over that many processes."""
    from ait.config.validation import resolve_accumulation

    smallest = min(getattr(cfg.data, f"{task}_batch") for task in cfg.model.tasks)
    if not 1 <= requested <= smallest:
        raise ValueError(
            f"--processes {requested}: the solver's batches ({smallest} images of a task per step) allow 1 to "
            f"{smallest} processes; the demo's default is {DEMO_PROCESSES}"
        )
    if requested > 1 and (torch.cuda.is_available() or not torch.distributed.is_available()):
        print("[demo] one solver process: a GPU is present or torch.distributed is missing", flush=True)
        return 1
    resolve_accumulation(cfg, requested)  # optim.accumulate / data.images_per_gpu: checked before any work
    return requested


def _train_solver_process(cfg) -> dict[str, Any]:
    """One rank of the solver's training (run by `run_local_processes`); rank 0's figures are returned."""
    from ait.engine.curriculum import train_with_curriculum

    _, trained = train_with_curriculum(cfg, evaluate=False, device="cpu")  # processes cannot share a GPU
    return {"checkpoint": str(trained.checkpoint), "images_per_s": trained.images_per_s}


def train_demo_solver(cfg, processes: int):
    """(trained solver in eval mode, training images/s) of `cfg`, trained in `processes` local processes."""
    if processes == 1:
        from ait.engine.curriculum import train_with_curriculum

        trainer, trained = train_with_curriculum(cfg, evaluate=False)
        return trainer.model.eval(), trained.images_per_s
    from ait.engine.inference import load_solver
    from ait.engine.launch import run_local_processes

    trained = run_local_processes(_train_solver_process, processes, (cfg,))
    # the final checkpoint is what the run delivers (its weight average where it keeps one), as in-process
    solver, _ = load_solver(trained["checkpoint"], cfg, device="cpu")
    return solver.eval(), trained["images_per_s"]


def demo_label(cfg) -> str:
    """The table's model name: "AiT-P" where every task decodes in one parallel pass, "AiT" where every task
    decodes autoregressively, and which task does what otherwise (the original's AiT-P is depth-only)."""
    modes = {task: cfg.model.decoding_mode(task) for task in cfg.model.tasks}
    kind = "joint" if len(modes) > 1 else next(iter(modes))
    if set(modes.values()) == {"parallel"}:
        return f"AiT-P demo ({kind})"
    if set(modes.values()) == {"autoregressive"}:
        return f"AiT demo ({kind})"
    parallel = ", ".join(task for task, mode in modes.items() if mode == "parallel")
    return f"AiT demo ({kind}; {parallel} AiT-P)"


def tokenizer_oracle(cfg, solver) -> dict[str, dict]:
    """{"depth": depth metrics, "insseg": {"segm": ...}} of the solver's tokenizers on the eval split."""
    from ait.data import build_eval_loader, coco_ground_truth
    from ait.oracle import depth_tokenizer_oracle, mask_tokenizer_oracle

    result: dict[str, dict] = {}
    if solver.depth_head is not None:
        result["depth"] = depth_tokenizer_oracle(
            solver.depth_head.tokenizer, build_eval_loader(cfg, "depth"), cfg.eval
        )
    if solver.instance_head is not None and getattr(solver.instance_head, "tokenizer", None) is not None:
        segm = mask_tokenizer_oracle(
            solver.instance_head.tokenizer, build_eval_loader(cfg, "insseg"), coco_ground_truth(cfg)
        )
        result["insseg"] = {"segm": segm}
    return result


def run_demo(
    out_dir: str | Path = "demo_output",
    quick: bool = False,
    cfg_options: Iterable[str] = (),
    processes: int = DEMO_PROCESSES,
) -> DemoResult:
    """Run the whole demo; prints phase timings and the results table, returns them.

    `processes`: the solver trains in that many local processes (one process group), each with its share of
    the config's torch threads; 1 trains it in this process.
    """
    from ait.engine import evaluate_solver
    from ait.evaluation import format_results_table, mean_depth_baseline
    from ait_tokenizer.train import train_tokenizer

    out = Path(out_dir)
    depth_tok_cfg, mask_tok_cfg, solver_cfg = demo_configs(out, quick, cfg_options)
    # checked before any training: the solver's folder is replaced on a rerun only if the demo made it
    draft = solver_cfg(out / "tokenizers", out / "tokenizers")
    work_dir = Path(draft.work_dir)
    _check_demo_folder(work_dir)
    processes = solver_processes(processes, draft)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    print("[demo] 1/4 training the depth tokenizer on synthetic rooms", flush=True)
    t = time.perf_counter()
    depth_ckpt = train_tokenizer(depth_tok_cfg, out / "tokenizers" / "depth")
    t = _phase(timings, "depth tokenizer", t)
    print("[demo] 2/4 training the instance-mask tokenizer on synthetic rooms", flush=True)
    mask_ckpt = train_tokenizer(mask_tok_cfg, out / "tokenizers" / "mask")
    t = _phase(timings, "mask tokenizer", t)

    cfg = solver_cfg(depth_ckpt, mask_ckpt)
    if processes > 1:  # the config's threads are shared out: the processes together use the same cores
        cfg.num_threads = max(1, (cfg.num_threads or os.cpu_count() or 1) // processes)
    _fresh_demo_folder(Path(cfg.work_dir))  # a rerun retrains from scratch
    print(
        f"[demo] 3/4 training the joint task-solver "
        f"({cfg.name}; {_workers(processes, cfg.num_threads or torch.get_num_threads())})",
        flush=True,
    )
    solver, images_per_s = train_demo_solver(cfg, processes)
    t = _phase(timings, "task-solver training", t)

    print("[demo] 4/4 evaluating on held-out rooms", flush=True)
    metrics = evaluate_solver(cfg, solver)
    from ait.data import build_eval_loader

    baseline = mean_depth_baseline(_mean_train_depth(cfg), build_eval_loader(cfg, "depth"), cfg.eval)
    oracle = tokenizer_oracle(cfg, solver)
    depth, coco = metrics.get("depth", {}), metrics.get("insseg", {})
    table = format_results_table(
        depth,
        coco,
        name=demo_label(cfg),
        baseline=baseline,
        extra_rows=[("tokenizer oracle", oracle.get("depth"), oracle.get("insseg"))],
        ap50=True,
    )
    figure = _figure(cfg, solver, out / "predictions.png")
    t = _phase(timings, "evaluation + figure", t)
    timings["total"] = time.perf_counter() - start

    result = DemoResult(
        out_dir=out,
        table=table,
        depth=depth,
        coco=coco,
        baseline=baseline,
        oracle=oracle,
        timings=timings,
        images_per_s=images_per_s,
        figure=figure,
        processes=processes,
        solver_threads=cfg.num_threads or torch.get_num_threads(),
    )
    report = out / "results.md"
    report.write_text(_report(result, cfg, (depth_tok_cfg, mask_tok_cfg)), encoding="utf-8")
    result.report = report
    (out / "metrics.json").write_text(
        json.dumps(
            {
                "depth": depth,
                "coco": coco,
                "baseline": baseline,
                "tokenizer_oracle": oracle,
                "timings": timings,
                "images_per_s": images_per_s,
                "solver_processes": processes,
            },
            indent=2,
            default=float,
        ),
        encoding="utf-8",
    )
    print()
    print(table)
    print(
        f"\n[demo] depth RMSE {depth.get('rmse', float('nan')):.3f} vs predict-the-mean "
        f"{baseline.get('rmse', float('nan')):.3f}; training {images_per_s:.1f} images/s; "
        f"total {timings['total']:.0f} s"
    )
    print(f"[demo] wrote {report}, {figure}")
    return result
