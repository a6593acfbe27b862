"""Soft-lookup benchmark: eager torch vs the fused Triton kernels, Y = softmax(τ·ℓ) @ E.

Shapes are the task-solver's: K = 128 codes, D = 512 (the tokenizer codebook width), logits a column
slice of the full vocabulary logits (V = 2467, the joint layout), rows = batch×225 (15×15 depth tokens)
or batch×100×16 (100 objects × 16 mask tokens).  Three passes:

- ``fwd``              forward only;
- ``fwd+bwd``          forward and backward with gradients for logits and codebook;
- ``fwd+bwd frozen E`` forward and backward with the codebook frozen (AiT's case: the tokenizer is
  fixed while the solver trains), which needs dℓ only.

Achieved bandwidth counts the bytes the computation must move at minimum, the same for both
implementations: logits read + codebook read + output write, and for the backward dY read + logits
read + codebook read + dℓ write (+ dE write when the codebook trains).  Intermediates (the fused
path's 4 bytes/row of log-sum-exp, eager's materialised probabilities) are not counted, so GB/s is
useful work per second.  On CUDA the script also measures device-to-device copy bandwidth
(``dst.copy_(src)``, read + write bytes) and reports the fused path's fraction of it; timings there
use ``triton.testing.do_bench`` (median, L2 flushed between repeats).  On CPU only the eager torch
path is timed (the Triton interpreter is a correctness tool, not a performance one).

    python benchmarks/bench_soft_lookup.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ait_tokenizer.soft_lookup import soft_lookup

NUM_CODES = 128
DIM = 512
VOCAB = 2467
CODEBOOK_COLUMNS = slice(2211, 2339)  # the depth codebook's id range in the joint vocabulary
TAU = 0.8
PASSES = ("fwd", "fwd+bwd", "fwd+bwd frozen E")


def shapes(quick: bool, cuda: bool) -> list[tuple[str, int]]:
    if cuda:
        return [("depth b16", 16 * 225), ("depth b64", 64 * 225), ("insts b16", 16 * 1600)]
    if quick:
        return [("depth b2", 2 * 225), ("insts b1", 1600)]
    return [("depth b8", 8 * 225), ("insts b4", 4 * 1600)]


def bytes_moved(rows: int, dtype: torch.dtype, pass_name: str) -> int:
    size = torch.empty((), dtype=dtype).element_size()
    logits, codebook, output = rows * NUM_CODES * size, NUM_CODES * DIM * size, rows * DIM * size
    forward = logits + codebook + output
    if pass_name == "fwd":
        return forward
    backward = output + logits + codebook + logits  # dY read, ℓ read, E read, dℓ write
    if pass_name == "fwd+bwd":
        backward += codebook  # dE write
    return forward + backward


def make_step(rows: int, dtype: torch.dtype, device: str, backend: str, pass_name: str):
    """A closure running one pass, and the tensors whose .grad it fills (reset between repeats)."""
    generator = torch.Generator(device=device).manual_seed(0)
    full_logits = 3 * torch.randn(rows, VOCAB, generator=generator, device=device, dtype=dtype)
    # The slice is made a leaf so gradients land in (rows, K) directly: the (rows, V) scatter autograd
    # would otherwise add for a slice of a grad-requiring tensor is the same for both implementations.
    logits = full_logits[:, CODEBOOK_COLUMNS].requires_grad_(pass_name != "fwd")
    codebook = torch.randn(NUM_CODES, DIM, generator=generator, device=device, dtype=dtype)
    codebook.requires_grad_(pass_name == "fwd+bwd")
    grad_out = torch.randn(rows, DIM, generator=generator, device=device, dtype=dtype)
    leaves = [t for t in (logits, codebook) if t.requires_grad]

    if pass_name == "fwd":

        def step():
            with torch.no_grad():
                return soft_lookup(logits, codebook, TAU, backend=backend)

    else:

        def step():
            soft_lookup(logits, codebook, TAU, backend=backend).backward(grad_out)

    return step, leaves


def cpu_seconds(step: Callable[[], object], leaves: list[torch.Tensor], repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        for leaf in leaves:
            leaf.grad = None
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cuda_seconds(step: Callable[[], object], leaves: list[torch.Tensor]) -> float:
    import triton.testing

    return triton.testing.do_bench(step, grad_to_none=leaves, return_mode="median") / 1e3


def cuda_copy_bandwidth() -> float:
    """Device-to-device copy GB/s (bytes read + written) on a 256 MiB buffer."""
    import triton.testing

    source = torch.empty(64 * 2**20, dtype=torch.float32, device="cuda")
    target = torch.empty_like(source)
    seconds = triton.testing.do_bench(lambda: target.copy_(source), return_mode="median") / 1e3
    return 2 * source.numel() * source.element_size() / seconds / 1e9


def row(benchmark: str, metric: str, value: float, unit: str, note: str = "") -> dict:
    return {"benchmark": benchmark, "metric": metric, "value": float(value), "unit": unit, "note": note}


def run(quick: bool = False) -> list[dict]:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtypes = [torch.bfloat16, torch.float32] if cuda else [torch.float32]
    rows_out: list[dict] = []
    if cuda:
        copy_gbps = cuda_copy_bandwidth()
        device_name = torch.cuda.get_device_name()
        note = f"{device_name}; do_bench medians, L2 flushed; GB/s = minimum bytes / time"
        rows_out.append(
            row("soft_lookup copy", "copy_bandwidth", copy_gbps, "GB/s", f"{device_name}; D2D copy")
        )
    else:
        note = (
            f"CPU ({torch.get_num_threads()} threads): torch path only, the fused kernel needs CUDA; "
            "GB/s = minimum bytes / time"
        )
    repeats = 3 if quick else 10

    for shape_name, rows in shapes(quick, cuda):
        for dtype in dtypes:
            dtype_name = str(dtype).removeprefix("torch.")
            for pass_name in PASSES:
                name = f"soft_lookup {pass_name} {shape_name} ({rows}x{NUM_CODES}x{DIM}) {dtype_name}"
                moved = bytes_moved(rows, dtype, pass_name)
                if cuda:
                    eager = cuda_seconds(*make_step(rows, dtype, device, "torch", pass_name))
                    fused = cuda_seconds(*make_step(rows, dtype, device, "triton", pass_name))
                else:
                    eager = cpu_seconds(*make_step(rows, dtype, device, "torch", pass_name), repeats)
                rows_out.append(row(name, "eager_time", eager * 1e3, "ms", note))
                rows_out.append(row(name, "eager_bandwidth", moved / eager / 1e9, "GB/s", note))
                if cuda:
                    fused_gbps = moved / fused / 1e9
                    rows_out.append(row(name, "fused_time", fused * 1e3, "ms", note))
                    rows_out.append(row(name, "fused_bandwidth", fused_gbps, "GB/s", note))
                    rows_out.append(row(name, "fused_speedup", eager / fused, "x", "eager time / fused time"))
                    rows_out.append(
                        row(name, "fused_copy_fraction", fused_gbps / copy_gbps, "x", "of D2D copy bandwidth")
                    )
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer and smaller shapes (CPU: well under a minute)"
    )
    args = parser.parse_args()
    results = run(quick=args.quick)
    width = max(len(r["benchmark"]) for r in results)
    for r in results:
        print(f"{r['benchmark']:<{width}}  {r['metric']:<20} {r['value']:>10.3f} {r['unit']}")
    for note in dict.fromkeys(r["note"] for r in results):
        print(f"note: {note}")


if __name__ == "__main__":
    main()
