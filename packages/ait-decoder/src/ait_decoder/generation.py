"""Decoding loops: cached autoregressive (ours), uncached re-decoding (reference), AiT-P single pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ait_decoder.sampling import choose, soft_embedding

if TYPE_CHECKING:
    from ait_decoder.decoder import AiTDecoder
    from ait_decoder.neck import Memory


@dataclass
class GenerationOutput:
    ids: torch.Tensor  # (B, T) vocabulary ids
    # (B, T, V) raw logits of each step (unrestricted by `allowed`); with `logit_span` only the span's ids
    # are computed and every other entry is -inf
    logits: torch.Tensor


def _check_options(
    model: AiTDecoder,
    length: int,
    allowed: torch.Tensor | None,
    soft_positions: torch.Tensor | None,
    strategy: str,
    top_p: float,
) -> tuple[list[tuple[int, int]], list[bool]]:
    vocab = model.config.vocab_size
    if allowed is None:
        ranges = [(0, vocab)] * length
    else:
        if allowed.shape != (length, 2):
            raise ValueError(f"allowed must be (length, 2) = ({length}, 2), received {tuple(allowed.shape)}")
        ranges = [(int(lo), int(hi)) for lo, hi in allowed.tolist()]
        bad = [(t, r) for t, r in enumerate(ranges) if not 0 <= r[0] < r[1] <= vocab]
        if bad:
            t, r = bad[0]
            raise ValueError(
                f"allowed range at position {t} must satisfy 0 <= lo < hi <= {vocab}, received {r}"
            )
    if soft_positions is None:
        soft = [False] * length
    else:
        if soft_positions.shape != (length,) or soft_positions.dtype != torch.bool:
            raise ValueError(
                f"soft_positions must be a bool tensor ({length},), received {soft_positions.dtype} "
                f"{tuple(soft_positions.shape)}"
            )
        soft = soft_positions.tolist()
    if strategy not in ("greedy", "top_p"):
        raise ValueError(f"unknown strategy {strategy!r}; expected 'greedy' or 'top_p'")
    if strategy == "top_p" and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], received {top_p}")
    return ranges, soft


def generate(
    model: AiTDecoder,
    memory: Memory,
    task: str,
    length: int,
    allowed: torch.Tensor | None = None,
    strategy: str = "greedy",
    top_p: float = 0.3,
    soft_positions: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    parallel: bool = False,
    weights: str = "fp32",
    logit_span: tuple[int, int] | None = None,
) -> GenerationOutput:
    """Decode ``length`` tokens of ``task`` for every image of ``memory``.

    ``allowed (T, 2)``: the ``[lo, hi)`` id range each position may take (``VocabLayout.allowed_ranges``);
    by default the whole vocabulary. ``strategy``: ``"greedy"`` or ``"top_p"`` (nucleus of mass
    ``top_p``, sampled with ``generator``). ``soft_positions (T,) bool``: after a marked position the next
    input is the soft token ``softmax(restricted logits) @ embedding[lo:hi]`` instead of the embedding
    of the chosen id. ``use_cache=False`` re-decodes the whole prefix each step (slow reference, same
    results). ``parallel=True``: AiT-P, one forward pass over ``[prompt, mask_embed, ...]``.
    ``weights``: ``"fp32"`` (exact) or ``"int8"``: the cached steps' matrix-vector products use weight-only
    int8 copies of the weights (CPU; about 4x fewer bytes per step at batch 1, ids may differ from fp32
    where logits nearly tie; see ``StepLinear``). ``logit_span (lo, hi)``: compute the logits of ids
    ``lo..hi-1`` only (every allowed range must lie inside; the rest of ``out.logits`` is -inf). A depth
    sequence only holds depth codes: 128 of the paper's 2339 output rows, a tenth of a step's weights.
    Runs under ``torch.inference_mode`` with eval semantics (no dropout), whatever the model's mode.
    """
    ranges, soft = _check_options(model, length, allowed, soft_positions, strategy, top_p)
    span = model.check_vocab_span(logit_span)
    outside = [r for r in ranges if r[0] < span[0] or r[1] > span[1]]
    if outside:
        raise ValueError(
            f"allowed range {outside[0]} lies outside logit_span {span}: its logits would not exist"
        )
    model._check_task(task, length)
    if parallel and any(soft):
        raise ValueError("AiT-P (parallel=True) feeds mask embeddings, never outputs: soft_positions unused")
    if weights != "fp32" and (parallel or not use_cache):
        raise ValueError(
            f"weights={weights!r} applies to the cached one-token steps only (use_cache=True, parallel=False)"
        )
    # Decoding always has eval semantics (no dropout / drop-path), whichever mode the model is in.
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if parallel:
                out = _generate_parallel(
                    model, memory, task, length, ranges, strategy, top_p, generator, span
                )
            elif use_cache:
                out = _generate_cached(
                    model, memory, task, length, ranges, soft, strategy, top_p, generator, weights, span
                )
            else:
                out = _generate_uncached(
                    model, memory, task, length, ranges, soft, strategy, top_p, generator
                )
                out.logits[..., : span[0]] = float(
                    "-inf"
                )  # the reference computes all; the contract is the span
                out.logits[..., span[1] :] = float("-inf")
    finally:
        model.train(was_training)
    # Copies made outside inference mode are ordinary tensors, usable later in autograd-tracked code.
    return GenerationOutput(ids=out.ids.clone(), logits=out.logits.clone())


def _next_input(model, logits, lo, hi, choice, soft, offset=0):
    """Embedding fed after a position: soft mixture over ids [lo, hi) of ``logits`` (whose column 0 is id
    ``offset``), or the chosen id's row. (B, D)."""
    if soft:
        return soft_embedding(logits[:, lo - offset : hi - offset], model.token_embed.weight[lo:hi])
    return F.embedding(choice, model.token_embed.weight)


def _span_logits(memory, batch, length, vocab, span):
    """(B, T, V) output logits, -inf outside ``span`` (filled in by the caller inside it)."""
    if span == (0, vocab):
        return memory.tokens.new_empty(batch, length, vocab)
    return memory.tokens.new_full((batch, length, vocab), float("-inf"))


def _generate_cached(model, memory, task, length, ranges, soft, strategy, top_p, generator, weights, span):
    batch = memory.batch_size
    first, last = span
    state = model.start_decoding(memory, task, length, weights=weights, vocab_span=span)
    ids = torch.empty(batch, length, dtype=torch.long, device=memory.tokens.device)
    all_logits = _span_logits(memory, batch, length, model.config.vocab_size, span)
    inputs = model.prompt(task, batch)[:, 0]
    for t in range(length):
        logits = model.decode_step(state, inputs, t)  # (B, last - first): ids first..last-1
        all_logits[:, t, first:last] = logits
        lo, hi = ranges[t]
        choice = choose(logits[:, lo - first : hi - first], strategy, top_p, generator) + lo
        ids[:, t] = choice
        if t + 1 < length:
            inputs = _next_input(model, logits, lo, hi, choice, soft[t], offset=first)
    return GenerationOutput(ids=ids, logits=all_logits)


def _generate_uncached(model, memory, task, length, ranges, soft, strategy, top_p, generator):
    """Naive reference: every step re-runs the decoder over the whole prefix (cross K/V included)."""
    batch = memory.batch_size
    ids = torch.empty(batch, length, dtype=torch.long, device=memory.tokens.device)
    all_logits = memory.tokens.new_empty(batch, length, model.config.vocab_size)
    inputs = memory.tokens.new_empty(batch, length, model.config.d_model)
    inputs[:, 0] = model.prompt(task, batch)[:, 0]
    for t in range(length):
        logits = model.decode_embeddings(inputs[:, : t + 1], memory, task)[:, -1]
        all_logits[:, t] = logits
        lo, hi = ranges[t]
        choice = choose(logits[:, lo:hi], strategy, top_p, generator) + lo
        ids[:, t] = choice
        if t + 1 < length:
            inputs[:, t + 1] = _next_input(model, logits, lo, hi, choice, soft[t])
    return GenerationOutput(ids=ids, logits=all_logits)


def _generate_parallel(model, memory, task, length, ranges, strategy, top_p, generator, span):
    batch = memory.batch_size
    first, last = span
    logits = model(memory, None, task, parallel=True, length=length, vocab_span=span)  # (B, T, last - first)
    bounds = torch.tensor(ranges, device=logits.device) - first
    token = torch.arange(last - first, device=logits.device)
    outside = (token < bounds[:, :1]) | (token >= bounds[:, 1:])  # (T, last - first)
    ids = choose(logits.masked_fill(outside, float("-inf")), strategy, top_p, generator) + first
    if logits.shape[-1] == model.config.vocab_size:
        return GenerationOutput(ids=ids, logits=logits)
    all_logits = _span_logits(memory, batch, length, model.config.vocab_size, span)
    all_logits[..., first:last] = logits
    return GenerationOutput(ids=ids, logits=all_logits)
