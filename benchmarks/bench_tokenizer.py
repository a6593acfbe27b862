"""Tokenizer throughput: encode (map -> ids) and decode (ids -> map), maps per second.

    python benchmarks/bench_tokenizer.py [--quick]

Presets depth-small (64x64, its training size) and depth-paper (480x480 in the full run, the paper's crop;
128x128 in quick mode), and the soft decode (softmax @ codebook + decoder) of depth-small beside its hard
decode as a side-by-side ratio. Eval mode, no autograd, the machine's torch threads.

Training: the demo's depth tokenizer (`ait.demo.DEMO_DEPTH_TOKENIZER`'s depth-small, batch 16 of
64x64 maps) takes Adam steps with its weights in NHWC order (`channels_last`, the training default) and in
NCHW, in round-robin blocks; `train_step_nhwc_vs_nchw` is the NCHW time over the NHWC time (above 1: NHWC
faster). These short blocks give less than a whole run does (1.03x to 1.2x, depending on what ran before them,
against 1.24x over the demo's phase): `--demo-phase STEPS` trains the demo's depth tokenizer itself (`ait
demo`'s config, its data, two threads) for STEPS steps in a fresh process per layout, NHWC then NCHW, and prints each run's seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch

from ait_tokenizer import create_tokenizer


def _median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(quick: bool = False) -> list[dict]:
    torch.manual_seed(0)
    cases = [
        ("depth-small", 64, 16 if quick else 64),
        ("depth-paper", 128 if quick else 480, 2 if quick else 4),
    ]
    repeats = 3 if quick else 7
    rows: list[dict] = []
    for preset, side, batch in cases:
        tokenizer = create_tokenizer(preset).eval()
        x = torch.rand(batch, 1, side, side) * 5 + 0.5
        with torch.inference_mode():
            ids = tokenizer.encode(x)
            note = f"{side}x{side}, batch {batch}, {tokenizer.token_grid(side, side)} tokens, cpu {torch.get_num_threads()} threads"
            encode = _median_seconds(partial(tokenizer.encode, x), repeats)
            decode = _median_seconds(partial(tokenizer.decode, ids), repeats)
            rows.append(
                {
                    "benchmark": f"tokenizer/{preset}/encode",
                    "metric": "throughput",
                    "value": batch / encode,
                    "unit": "maps/s",
                    "note": note,
                }
            )
            rows.append(
                {
                    "benchmark": f"tokenizer/{preset}/decode",
                    "metric": "throughput",
                    "value": batch / decode,
                    "unit": "maps/s",
                    "note": note,
                }
            )
            if preset == "depth-small":
                h, w = tokenizer.token_grid(side, side)
                logits = torch.randn(batch, h * w, tokenizer.num_codes)
                soft = _median_seconds(partial(tokenizer.decode_soft, logits, 0.8), repeats)
                rows.append(
                    {
                        "benchmark": f"tokenizer/{preset}/decode_soft",
                        "metric": "throughput",
                        "value": batch / soft,
                        "unit": "maps/s",
                        "note": note,
                    }
                )
                rows.append(
                    {
                        "benchmark": f"tokenizer/{preset}/decode_soft_vs_decode",
                        "metric": "time ratio",
                        "value": soft / decode,
                        "unit": "x",
                        "note": "soft / hard decode, same run",
                    }
                )
    rows += _training_rows(quick)
    return rows


def _training_rows(quick: bool) -> list[dict]:
    """Adam steps of the demo's depth tokenizer in NHWC and NCHW, timed in alternating blocks."""
    layouts = {"nhwc": torch.channels_last, "nchw": torch.contiguous_format}
    maps = torch.rand(16, 1, 64, 64) * 5 + 0.5
    steps, blocks = (2, 3) if quick else (5, 5)
    from ait.demo import DEMO_DEPTH_TOKENIZER

    models = {}
    for name, layout in layouts.items():
        torch.manual_seed(0)
        tokenizer = create_tokenizer("depth-small", **DEMO_DEPTH_TOKENIZER["tokenizer_overrides"])
        tokenizer = tokenizer.train().to(memory_format=layout)
        models[name] = (tokenizer, torch.optim.Adam(tokenizer.parameters(), lr=1e-3))

    def train(name: str) -> None:
        tokenizer, optimizer = models[name]
        for step in range(steps):
            out = tokenizer(maps, generator=torch.Generator().manual_seed(step))
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()

    for name in models:
        train(name)  # k-means initialisation and first-call allocations out of the timing
    best = dict.fromkeys(models, float("inf"))
    for _ in range(blocks):
        for name in models:
            start = time.perf_counter()
            train(name)
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    note = f"demo depth tokenizer, batch 16 of 64x64, cpu {torch.get_num_threads()} threads, fastest block"
    rows = [
        {
            "benchmark": f"tokenizer/demo-depth/train_{name}",
            "metric": "throughput",
            "value": 16 / best[name],
            "unit": "maps/s",
            "note": note,
        }
        for name in models
    ]
    rows.append(
        {
            "benchmark": "tokenizer/demo-depth/train_step_nhwc_vs_nchw",
            "metric": "speed-up",
            "value": best["nchw"] / best["nhwc"],
            "unit": "x",
            "note": "NCHW step time / NHWC step time, same run",
        }
    )
    return rows


def _demo_phase(steps: int, channels_last: bool) -> float:
    """Seconds of the demo's depth-tokenizer training (data, steps, final validation) cut to `steps`."""
    import dataclasses
    import tempfile

    from ait.demo import demo_configs
    from ait_tokenizer.train import train_tokenizer

    depth_cfg, _, _ = demo_configs(tempfile.mkdtemp(prefix="ait_tokenizer_phase_"))
    cfg = dataclasses.replace(depth_cfg, max_steps=steps, channels_last=channels_last)
    start = time.perf_counter()
    train_tokenizer(cfg, tempfile.mkdtemp(prefix="ait_tokenizer_phase_"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, well under a minute")
    parser.add_argument(
        "--demo-phase", type=int, metavar="STEPS", help="the demo's tokenizer phase per layout"
    )
    parser.add_argument("--layout", choices=("nhwc", "nchw"), help=argparse.SUPPRESS)  # one --demo-phase run
    args = parser.parse_args()
    if args.demo_phase and args.layout:
        print(f"{_demo_phase(args.demo_phase, args.layout == 'nhwc'):.1f}")
        return
    if args.demo_phase:
        import subprocess
        import sys

        for layout in ("nhwc", "nchw"):  # a fresh process each: the allocator's state is part of the cost
            command = [sys.executable, __file__, "--demo-phase", str(args.demo_phase), "--layout", layout]
            seconds = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1]
            print(f"demo depth tokenizer, {args.demo_phase} steps, {layout}: {seconds} s", flush=True)
        return
    rows = run(quick=args.quick)
    width = max(len(r["benchmark"]) for r in rows)
    print(f"{'benchmark':<{width}}  {'value':>12}  unit     note")
    for r in rows:
        print(f"{r['benchmark']:<{width}}  {r['value']:>12.3f}  {r['unit']:<7}  {r['note']}")


if __name__ == "__main__":
    main()
