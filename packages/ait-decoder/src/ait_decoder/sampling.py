"""Choosing the next token from a position's restricted logits: greedy, nucleus (top-p), soft input."""

from __future__ import annotations

import torch


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """logits (..., K) -> index (...) of the largest logit (first on ties, like ``argmax``)."""
    return logits.argmax(dim=-1)


def top_p_filter(probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Nucleus of each row of ``probs (N, K)``: returns ``(kept_probs, order)`` in descending order.

    A token is kept while the probability mass *before* it is at most ``top_p``, so the most likely
    token is always kept and the first token that crosses ``top_p`` is kept too (the original shifts
    its ``cumulative > top_p`` mask right by one; this is the same rule). Vectorised over rows.
    """
    if not 0.0 < top_p <= 1.0:  # also refuses NaN
        raise ValueError(f"top_p must be in (0, 1], received {top_p}")
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    return sorted_probs.masked_fill(mass_before > top_p, 0.0), order


def top_p_sample(
    logits: torch.Tensor, top_p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sample an index per row of ``logits (..., K)`` from the renormalised nucleus of mass ``top_p``."""
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], received {top_p}")
    flat = logits.reshape(-1, logits.shape[-1])
    kept, order = top_p_filter(torch.softmax(flat.float(), dim=-1), top_p)
    # multinomial normalises its weights itself: sampling the kept mass == sampling the renormalised nucleus.
    pick = torch.multinomial(kept, 1, generator=generator)
    return order.gather(-1, pick).view(logits.shape[:-1])


def choose(
    logits: torch.Tensor, strategy: str, top_p: float = 0.3, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Dispatch on ``strategy``: ``"greedy"`` or ``"top_p"``."""
    if strategy == "greedy":
        return greedy(logits)
    if strategy == "top_p":
        return top_p_sample(logits, top_p, generator)
    raise ValueError(f"unknown strategy {strategy!r}; expected 'greedy' or 'top_p'")


def soft_embedding(logits: torch.Tensor, embedding_rows: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Soft token: ``softmax(tau · logits) @ embedding_rows``; logits (..., K), rows (K, D) -> (..., D)."""
    return torch.softmax(logits * tau, dim=-1) @ embedding_rows
