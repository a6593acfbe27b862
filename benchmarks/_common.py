"""Timing helpers shared by the suite's own scripts (bench_solver, bench_quality, check, ablations)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()`; the median resists the other processes sharing this machine."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_ceiling_flops(n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of a large fp32 matmul: the practical ceiling of this machine for dense work."""
    import torch

    a = torch.randn(n, n)
    b = torch.randn(n, n)
    seconds = median_seconds(lambda: a @ b, repeats=repeats, warmup=2)
    return 2 * n**3 / seconds


def row(benchmark: str, metric: str, value: float, unit: str, note: str = "") -> dict:
    return {"benchmark": benchmark, "metric": metric, "value": float(value), "unit": unit, "note": note}
