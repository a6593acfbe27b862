"""Decoder benchmark: tokens/s of five ways to decode 225 depth tokens over 225 memory positions (CPU).

- ``naive``: no cache at all; every step re-runs the decoder over the whole prefix
  (``generate(use_cache=False)``).
- ``original``: the original release's loop, reproduced faithfully below (``original_style_generate``):
  separate q/k/v projections, the self-attention cache grown with ``torch.cat`` (and re-stacked) every
  step, the memory re-normalised and its cross-attention keys/values re-projected every step, attention
  written out as ``softmax(q kᵀ·scale) v``.
- ``ours``: ``generate(use_cache=True, logit_span=depth codes)``: memory K/V projected once per image, a
  preallocated cache written in place, fused projections and ``F.scaled_dot_product_attention``, and only
  the 128 depth-code rows of the 2339-way output layer (the original computes all and then masks; the ids
  cannot differ, the same-ids check below covers it).
- ``parallel``: AiT-P as one forward pass, same ``logit_span`` (the original loops 225 steps for it too).
- ``ours_int8``: ``generate(weights="int8")``: the cached steps with weight-only int8 GEMVs (gpt-fast's
  recipe; not exact, so it is timed but not part of the same-ids check; the row ``ours_int8_agreement``
  gives the fraction of its steps that pick fp32's greedy id on the same prefix).

All run greedy decoding on the same random-weight paper-width decoder (width 256, 6 decoder
layers, 8 heads, FFN 1024) under ``torch.inference_mode``; the script checks that naive, original-style
and ours pick the same ids before timing them. Ratios are medians over repeats measured side by side.

Timing: one intra-op thread, and *process CPU time* (``time.process_time``). The 2 cores of the
development machine are shared with other jobs; with 2 OpenMP threads every small op waits for a
descheduled partner thread and wall times swing by 5-10x, and a single thread's wall time mostly
measures the neighbours. CPU time of one thread is what the decoding itself costs. Wall-clock ratios
are reported too (rows ``*_wall``).

    python benchmarks/bench_decoder.py [--quick] [--profile]

Measured figures and what limits batch 1: see "Decoder" in benchmarks/README.md. In short, a batch-1 step
streams ~24 MB of fp32 weights through six GEMVs per block plus the 2339-way output layer, and those
GEMVs are most of the step; the original-style loop pays the same GEMVs plus its per-step memory K/V
projection, so the fp32 ratio is bounded by that split. int8 weights cut the streamed bytes 4x.
``torch.compile`` of a static-shape step (attention over the whole cache with a mask, cache written by
``index_copy_``) was tried: same ids, no gain (4.0 vs 3.8 ms/step) after an 84 s compile on this box.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from ait_decoder import AiTDecoder, DecoderConfig, VocabLayout
from ait_decoder.neck import Memory

GRID = (15, 15)  # 480 px / 32: 225 memory positions
IN_CHANNELS = 1024  # SwinV2-B's last stage


def original_style_generate(model: AiTDecoder, memory: Memory, task: str, length: int, lo: int, hi: int):
    """The original ``ARTransformer`` depth loop (greedy instead of its top-p sort, same cache strategy).

    Mirrors its ``Attention``/``DecoderBlock`` code with our parameters: ``wq/wk/wv`` are the three row
    blocks of our fused ``qkv`` / ``kv`` weights, so the outputs are the same numbers.
    """
    cfg = model.config
    batch, heads, dim = memory.batch_size, cfg.nhead, cfg.d_model
    head_dim = dim // heads
    scale = head_dim**-0.5
    z = memory.tokens

    def attention(q_in, k_in, v_in, wq, bq, wk, bk, wv, bv, proj, pre_kv=None):
        n = q_in.shape[1]
        q = F.linear(q_in, wq, bq).reshape(batch, n, heads, head_dim).transpose(1, 2)
        k = F.linear(k_in, wk, bk).reshape(batch, k_in.shape[1], heads, head_dim).transpose(1, 2)
        v = F.linear(v_in, wv, bv).reshape(batch, v_in.shape[1], heads, head_dim).transpose(1, 2)
        if pre_kv is not None:
            k = torch.cat([pre_kv[0], k], dim=2)
            v = torch.cat([pre_kv[1], v], dim=2)
            pre_kv = torch.stack([k, v], dim=0)
        attn = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
        x = proj((attn @ v).transpose(1, 2).reshape(batch, n, dim))
        return x if pre_kv is None else (x, pre_kv)

    def block_step(block, x, pre_kv):
        sa, ca = block.self_attn, block.cross_attn
        wq, wk, wv = sa.qkv.weight.chunk(3)
        bq, bk, bv = sa.qkv.bias.chunk(3)
        norm_x = block.norm1(x)
        y, pre_kv = attention(norm_x, norm_x, norm_x, wq, bq, wk, bk, wv, bv, sa.proj, pre_kv)
        x = x + y
        norm_x, norm_z = block.norm2(x), block.norm2(z)  # memory re-normalised every step
        ck, cv = ca.kv.weight.chunk(2)
        cbk, cbv = ca.kv.bias.chunk(2)
        x = x + attention(norm_x, norm_z, norm_z, ca.q.weight, ca.q.bias, ck, cbk, cv, cbv, ca.proj)
        return x + block.mlp(block.norm3(x)), pre_kv

    input_embed = model.task_prompts[task].expand(batch, 1, dim)
    pre_kv_list = [z.new_empty((2, batch, heads, 0, head_dim)) for _ in model.blocks]
    tokens = []
    for i in range(1, length + 1):
        pos = model.task_positions[task][None, :i, :]
        x = input_embed + pos[:, -1:, :]
        new_kv = []
        for block, pre_kv in zip(model.blocks, pre_kv_list):
            x, kv = block_step(block, x, pre_kv)
            new_kv.append(kv)
        pre_kv_list = new_kv
        logits = model.logits(x)[:, -1, :]
        prediction = logits[:, lo:hi].argmax(dim=-1)
        tokens.append(prediction)
        input_embed = model.token_embed.weight[(prediction + lo)[:, None]]
    return torch.stack(tokens, dim=1) + lo


def build(seed: int = 0) -> tuple[AiTDecoder, VocabLayout]:
    torch.manual_seed(seed)
    vocab = VocabLayout.paper(instance=False)
    config = DecoderConfig(in_channels=IN_CHANNELS, vocab_size=vocab.size, tasks={"depth": 225})
    return AiTDecoder(config).eval(), vocab


def _time(fn) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def run(quick: bool = False) -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(quick)
    finally:
        torch.set_num_threads(threads)


def _run(quick: bool) -> list[dict]:
    model, vocab = build()
    length = 24 if quick else 225
    repeats = 3
    lo, hi = vocab.depth_codes
    span = (lo, hi)  # a depth sequence's logits: only the depth codes' rows of the output layer
    allowed = vocab.allowed_ranges("depth", length)
    rows: list[dict] = []
    for batch in (1, 8):
        with torch.inference_mode():
            memory = model.encode(
                torch.randn(batch, IN_CHANNELS, *GRID, generator=torch.Generator().manual_seed(1))
            )
        variants = {
            "naive": lambda m=memory: model.generate(m, "depth", length, allowed=allowed, use_cache=False),
            "original": lambda m=memory: original_style_generate(model, m, "depth", length, lo, hi),
            "ours": lambda m=memory: model.generate(m, "depth", length, allowed=allowed, logit_span=span),
            "ours_int8": lambda m=memory: model.generate(
                m, "depth", length, allowed=allowed, logit_span=span, weights="int8"
            ),
            "parallel": lambda m=memory: model.generate(
                m, "depth", length, allowed=allowed, logit_span=span, parallel=True
            ),
        }
        with torch.inference_mode():
            ours_ids = variants["ours"]().ids
            if not torch.equal(variants["original"](), ours_ids) or not torch.equal(
                variants["naive"]().ids, ours_ids
            ):
                raise RuntimeError(
                    "naive / original-style / cached decoding disagree; the benchmark is invalid"
                )
            # int8 weights change the numbers: how often does each int8 step pick fp32's choice on the
            # same prefix (teacher-forced fp32 logits of int8's own sequence)?
            int8_ids = variants["ours_int8"]().ids
            exact = model(memory, int8_ids, "depth")[..., lo:hi].argmax(-1) + lo
            rows.append(
                {
                    "benchmark": f"decoder/ours_int8_agreement/b{batch}",
                    "metric": "same_choice_as_fp32",
                    "value": float((exact == int8_ids).float().mean()),
                    "unit": "frac",
                    "note": "fraction of int8 steps choosing fp32's greedy id given the same prefix",
                }
            )
            # Interleave the variants within each repeat so load changes on the shared CPU hit all alike.
            cpu: dict[str, list[float]] = {name: [] for name in variants}
            wall: dict[str, list[float]] = {name: [] for name in variants}
            naive_repeats = 1 if batch == 8 else repeats  # the naive loop at batch 8 is minutes of CPU
            for r in range(repeats):
                for name, fn in variants.items():
                    if name == "naive" and r >= naive_repeats:
                        continue
                    c, w = _time(fn)
                    cpu[name].append(c)
                    wall[name].append(w)
        note = (
            f"batch {batch}, {length} depth tokens, {GRID[0] * GRID[1]} memory positions, width 256, 1 thread"
        )
        for name, seconds in cpu.items():
            rows.append(
                {
                    "benchmark": f"decoder/{name}/b{batch}",
                    "metric": "tokens_per_cpu_s",
                    "value": batch * length / statistics.median(seconds),
                    "unit": "tok/s",
                    "note": f"{note}; process CPU time, median of {len(seconds)}",
                }
            )
        pairs = (
            ("ours", "original"),
            ("ours", "naive"),
            ("parallel", "original"),
            ("parallel", "ours"),
            ("ours_int8", "original"),
            ("ours_int8", "ours"),
        )
        for a, b in pairs:
            for clock, times, suffix in ((cpu, "CPU time", ""), (wall, "wall time", "_wall")):
                if suffix and a != "ours":
                    continue
                per_repeat = [tb / ta for ta, tb in zip(clock[a], clock[b])]
                rows.append(
                    {
                        "benchmark": f"decoder/{a}_vs_{b}{suffix}/b{batch}",
                        "metric": "speedup",
                        "value": statistics.median(per_repeat) if per_repeat else math.nan,
                        "unit": "x",
                        "note": f"{note}; {times}, median over {len(per_repeat)} side-by-side repeats",
                    }
                )
    return rows


def profile(batch: int = 1, length: int = 64) -> None:
    torch.set_num_threads(1)
    model, vocab = build()
    with torch.inference_mode():
        memory = model.encode(torch.randn(batch, IN_CHANNELS, *GRID))
    allowed = vocab.allowed_ranges("depth", length)
    from torch.profiler import ProfilerActivity, profile

    span = vocab.depth_codes
    model.generate(memory, "depth", length, allowed=allowed, logit_span=span)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.generate(memory, "depth", length, allowed=allowed, logit_span=span)
    print(f"ours, batch {batch}, {length} steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="24 tokens instead of 225")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler summary of ours")
    args = parser.parse_args()
    if args.profile:
        profile(1)
        profile(8)
        return
    rows = run(quick=args.quick)
    width = max(len(r["benchmark"]) for r in rows)
    for r in rows:
        print(f"{r['benchmark']:<{width}}  {r['value']:>10.1f} {r['unit']:<6} {r['note']}")


if __name__ == "__main__":
    main()
