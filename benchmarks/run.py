"""Run the benchmark suite and write JSON + Markdown results.

    python benchmarks/run.py [--quick] [--only soft_lookup,decoder] [--out benchmarks/results]

Every `benchmarks/bench_<area>.py` exposes `run(quick: bool) -> list[dict]` with rows
`{"benchmark", "metric", "value", "unit", "note"}`.  Ratios are measured side by side inside one script, so
they survive a noisy machine far better than absolute times (which are reported as context only).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def discover() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"ait_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def cpu_kind() -> str:
    """The CPU's vector unit as the figures that move with it see it: architecture, torch's kernel
    capability (``AVX2``, ``AVX512``, ...) and whether the cores have AMX tiles (bf16/int8 matrix units).

    "x86_64-avx512" and "x86_64-avx512-amx" are the two kinds the development and CI machines have been.
    """
    import torch

    capability = torch.backends.cpu.get_cpu_capability().lower().replace(" ", "")
    kind = f"{platform.machine().lower()}-{capability}"
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        flags = ""
    if "amx_tile" in flags:
        kind += "-amx"
    return kind


def machine_info() -> dict:
    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "commit": commit or "unknown",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_kind": cpu_kind(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def run_suite(names: list[str], quick: bool) -> tuple[list[dict], dict[str, str]]:
    scripts = discover()
    unknown = sorted(set(names) - set(scripts))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; available: {sorted(scripts)}")
    import torch

    rows: list[dict] = []
    failures: dict[str, str] = {}
    threads = torch.get_num_threads()
    for name in names:
        # a script may pin torch to one thread (bench_data, bench_decoder); the next starts from the default
        torch.set_num_threads(threads)
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            got = load(scripts[name]).run(quick=quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failures[name] = f"{type(exc).__name__}: {exc}"
            print(f"   FAILED: {failures[name]}", flush=True)
            continue
        for row in got:
            row.setdefault("note", "")
            rows.append(row)
            print(
                f"   {row['benchmark']:<34} {row['metric']:<34} {row['value']:>12.4g} {row['unit']}",
                flush=True,
            )
        print(f"   ({time.perf_counter() - start:.1f} s)", flush=True)
    return rows, failures


def to_markdown(rows: list[dict], info: dict, failures: dict[str, str]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"commit `{info['commit']}`, {info['date']} UTC, {info['processor']} ({info['cpu_count']} cores, "
        f"{info['torch_threads']} torch threads), torch {info['torch']}, CUDA: {info['cuda'] or 'none'}",
        "",
        "| benchmark | metric | value | unit | note |",
        "|---|---|---:|---|---|",
    ]
    lines += [
        f"| {r['benchmark']} | {r['metric']} | {r['value']:.4g} | {r['unit']} | {r.get('note', '')} |"
        for r in rows
    ]
    if failures:
        lines += ["", "Failed:", *[f"- {k}: {v}" for k, v in failures.items()]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(discover())
    info = machine_info()
    rows, failures = run_suite(names, args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_quick" if args.quick else "bench"
    (out / f"{stem}.json").write_text(
        json.dumps({"machine": info, "rows": rows, "failures": failures}, indent=2)
    )
    (out / f"{stem}.md").write_text(to_markdown(rows, info, failures))
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
