"""Soft token lookup: softmax(tau * logits) @ codebook.

Placeholder torch path; the fused Triton kernel and dispatch land here (owner: soft-lookup work).
"""

from __future__ import annotations

import torch


def soft_lookup(logits: torch.Tensor, codebook: torch.Tensor, tau: float = 1.0, backend: str = "auto") -> torch.Tensor:
    if logits.shape[-1] != codebook.shape[0]:
        raise ValueError(f"logits last dim {logits.shape[-1]} != codebook size {codebook.shape[0]}")
    probs = torch.softmax(logits.float() * tau, dim=-1)
    return (probs @ codebook.float()).to(logits.dtype)
