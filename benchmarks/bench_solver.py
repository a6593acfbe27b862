"""Task-solver throughput: inference images/s (AiT vs AiT-P), training-step images/s, FLOP/s, peak memory.

    python benchmarks/bench_solver.py [--quick]

The CPU depth config `cpu_depth_tiny` (swinv2-tiny-cpu backbone, 64x64 images, 8x8 = 64 depth tokens,
decoder width 64) with random weights and an untrained depth-small tokenizer (throughput does not depend on
the weights: AR decoding always runs all 64 steps):

- inference images/s at batch 1 and 16 of `predict_depth` for AiT (autoregressive, soft next-token input)
  and AiT-P (`model.parallel=True`: one masked decoder pass); the two are timed alternately within each
  repeat and the speed-up is the median of the per-repeat ratios;
- training step images/s at batch 16: `training_step` (CE + soft-token SILog through the frozen tokenizer
  decoder) + backward + AdamW step; and the same for the demo's own config `cpu_joint_demo` (its per-task
  batches: depth AiT-P + autoregressive instances with the mask aux loss), rows `solver/train_step_demo`;
- achieved FLOP/s of that training step (forward + backward FLOPs counted by
  `torch.utils.flop_counter.FlopCounterMode`, divided by the median step time) as a fraction of a large
  fp32 matmul measured in the same run (`_common.matmul_ceiling_flops`: this machine's practical ceiling);
- peak memory of one training step, in a fresh subprocess: on CPU the growth of the peak resident set size
  (`resource.getrusage` ru_maxrss) across the step and the process's peak overall; on CUDA
  `torch.cuda.max_memory_allocated`.

Timing on CPU: one intra-op thread and *process CPU time* (`time.process_time`), like bench_decoder: on
the shared 2-core development machine wall time mostly measures the neighbours, while one thread's CPU
time is what the work costs. On CUDA: wall time after synchronising, the machine's threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import row, torch_threads

CONFIG = "cpu_depth_tiny"

# One training step in a fresh process, so the memory figures see nothing else this benchmark did.
_MEMORY_SCRIPT = r"""
import json, resource, sys, warnings
import torch
warnings.simplefilter("ignore")
from ait.config import create_config
from ait.data import build_task_streams
from ait.model import build_task_solver

batch_size, device = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
cfg = create_config(sys.argv[3], {"data.depth_batch": batch_size})
model = build_task_solver(cfg).to(device).train()
batch = build_task_streams(cfg).next_batch()
batch = {t: {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in b.items()} for t, b in batch.items()}
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
import gc, os
def peak_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
def current_kib():
    with open("/proc/self/statm") as handle:  # resident pages now (Linux)
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
gc.collect()
before = current_kib()
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); allocated = torch.cuda.memory_allocated()
loss = model.training_step(batch)["loss"]
loss.backward()
optimizer.step()
out = {"rss_before_kib": before, "rss_peak_kib": peak_kib()}
if device == "cuda":
    torch.cuda.synchronize()
    out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated() - allocated
print(json.dumps(out))
"""


def _build(parallel: bool, batch: int, device: str, config: str = CONFIG, overrides: dict | None = None):
    from ait.config import create_config
    from ait.model import build_task_solver

    if overrides is None:
        overrides = {"model.parallel": parallel, "data.depth_batch": batch}
    cfg = create_config(config, overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "untrained tokenizer": fine for timing
        return build_task_solver(cfg).to(device), cfg


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _where(device: str) -> str:
    return "cuda, wall time" if device == "cuda" else "cpu, 1 thread, CPU time"


def _clock(device: str):
    """CPU: this process's CPU time (one thread); CUDA: wall time."""
    return time.perf_counter if device == "cuda" else time.process_time


def _seconds(fn, device: str, repeats: int, warmup: int = 1) -> float:
    clock = _clock(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = clock()
        fn()
        _sync(device)
        times.append(clock() - start)
    return statistics.median(times)


def _matmul_ceiling(device: str, repeats: int, n: int = 1024) -> float:
    """FLOP/s of an n x n fp32 matmul on `device`, timed like the step (the practical ceiling)."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    return 2 * n**3 / _seconds(lambda: a @ b, device, repeats, warmup=2)


def inference_rows(device: str, repeats: int) -> list[dict]:
    import torch

    torch.manual_seed(0)
    models = {"ait": _build(False, 1, device)[0].eval(), "ait_p": _build(True, 1, device)[0].eval()}
    rows = []
    clock = _clock(device)
    for batch in (1, 16):
        images = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch)).to(device)
        for model in models.values():  # warm-up
            model.predict_depth(images)
        times: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(repeats):
            # alternate the two within each repeat: a load change on the shared CPU hits both alike
            for name, model in models.items():
                _sync(device)
                start = clock()
                model.predict_depth(images)
                _sync(device)
                times[name].append(clock() - start)
        note = f"{CONFIG}, batch {batch}, 64x64, 64 depth tokens, {_where(device)}; median of {repeats}"
        for name, label in (("ait", "AiT (autoregressive)"), ("ait_p", "AiT-P (parallel)")):
            rows.append(
                row(
                    f"solver/infer_{name}/b{batch}",
                    "images_per_s",
                    batch / statistics.median(times[name]),
                    "images/s",
                    f"{label}; {note}",
                )
            )
        ratios = [ar / par for ar, par in zip(times["ait"], times["ait_p"])]
        rows.append(
            row(
                f"solver/infer_ait_p_vs_ait/b{batch}",
                "speedup",
                statistics.median(ratios),
                "x",
                f"AiT time / AiT-P time, median of {repeats} side-by-side repeats; {note}",
            )
        )
    return rows


def training_rows(
    device: str,
    repeats: int,
    batch: int = 16,
    config: str = CONFIG,
    name: str = "solver/train_step/b16",
) -> list[dict]:
    """Training-step throughput and FLOP/s against the same run's matmul ceiling.

    `config` CONFIG: the depth step at `batch` images; any other config (the demo's `cpu_joint_demo`) is
    timed with its own per-task batches and decoding modes.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ait.data import build_task_streams

    torch.manual_seed(0)
    overrides = None if config == CONFIG else {"data.synthetic_train_length": 64}
    model, cfg = _build(False, batch, device, config, overrides)
    batch = sum(getattr(cfg.data, f"{task}_batch") for task in cfg.model.tasks)
    model.train()
    data = build_task_streams(cfg).next_batch()
    data = {
        t: {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in b.items()} for t, b in data.items()
    }
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.training_step(data)["loss"].backward()
        optimizer.step()
        _sync(device)

    with FlopCounterMode(display=False) as counter:
        optimizer.zero_grad(set_to_none=True)
        model.training_step(data)["loss"].backward()
    flops = counter.get_total_flops()
    # the ceiling right before the step timing, so both see the same machine load
    ceiling = _matmul_ceiling(device, repeats)
    seconds = _seconds(step, device, repeats)
    achieved = flops / seconds
    batches = " + ".join(f"{getattr(cfg.data, f'{t}_batch')} {t}" for t in cfg.model.tasks)
    note = f"{config}, {batches} images, 64x64, its losses, AdamW, {_where(device)}; median of {repeats}"
    ceiling_name = "solver/matmul_ceiling" if config == CONFIG else f"{name}/matmul_ceiling"
    return [
        row(name, "images_per_s", batch / seconds, "images/s", note),
        row(name, "flops_per_step", flops, "FLOP", "forward + backward, FlopCounterMode"),
        row(name, "achieved_flops", achieved, "FLOP/s", note),
        row(ceiling_name, "flops", ceiling, "FLOP/s", f"1024x1024 fp32 matmul, {device}, same run"),
        row(
            name,
            "fraction_of_matmul_ceiling",
            achieved / ceiling,
            "x",
            "achieved FLOP/s of the training step / FLOP/s of a large matmul, same run",
        ),
    ]


def memory_rows(device: str, batch: int = 16) -> list[dict]:
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(batch), device, CONFIG],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"memory subprocess failed:\n{result.stderr[-2000:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    note = f"{CONFIG}, batch {batch}, one training step in a fresh process"
    rows = [
        row(
            "solver/train_step/b16",
            "peak_rss_growth",
            (out["rss_peak_kib"] - out["rss_before_kib"]) / 1024,
            "MiB",
            f"{note}; peak RSS (ru_maxrss) after the step - resident set right before it (model, data and "
            "optimiser already built): what the step itself adds at its peak",
        ),
        row("solver/train_step/b16", "process_peak_rss", out["rss_peak_kib"] / 1024, "MiB", note),
    ]
    if "cuda_peak_bytes" in out:
        rows.append(
            row(
                "solver/train_step/b16",
                "cuda_peak_allocated",
                out["cuda_peak_bytes"] / 2**20,
                "MiB",
                f"{note}; torch.cuda.max_memory_allocated above what was allocated before",
            )
        )
    return rows


def run(quick: bool = False) -> list[dict]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    repeats = 5 if quick else 11
    with torch_threads(torch.get_num_threads() if device == "cuda" else 1):
        return [
            *inference_rows(device, repeats),
            *training_rows(device, repeats),
            *training_rows(device, repeats, config="cpu_joint_demo", name="solver/train_step_demo"),
            *memory_rows(device),
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (the CI-sized run)")
    args = parser.parse_args()
    rows = run(quick=args.quick)
    width = max(len(r["benchmark"]) for r in rows)
    for r in rows:
        print(f"{r['benchmark']:<{width}}  {r['metric']:<28} {r['value']:>12.4g} {r['unit']:<8} {r['note']}")


if __name__ == "__main__":
    main()
