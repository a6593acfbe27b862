"""Transformer building blocks shared by the neck and the decoder (pre-norm, nanoGPT-style).

Attention uses ``F.scaled_dot_product_attention`` and fused projections: one ``qkv`` linear for
self-attention, one ``kv`` linear for the keys/values of the image memory in cross-attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p`` (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Linear → GELU → dropout → Linear (timm's ``Mlp`` with ``drop=(dropout, 0)`` as in the original)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, D) -> (B, H, T, D/H)."""
    batch, length, dim = x.shape
    return x.view(batch, length, num_heads, dim // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d) -> (B, T, H*d)."""
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


class SelfAttention(nn.Module):
    """Multi-head self-attention; causal when asked, and able to run one step against a KV cache."""

    def __init__(self, dim: int, num_heads: int, attn_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = (
            self.qkv(x).view(batch, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        )
        dropout = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
        return self.proj(merge_heads(y))


class CrossAttention(nn.Module):
    """Multi-head attention from decoder positions to the image memory.

    ``memory_kv`` projects the (normalised) memory to keys/values once; decoding steps reuse them.
    """

    def __init__(self, dim: int, num_heads: int, attn_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.attn_dropout = attn_dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory (B, S, D) -> keys, values (B, H, S, d), contiguous."""
        batch, length, dim = memory.shape
        kv = self.kv(memory).view(batch, length, 2, self.num_heads, dim // self.num_heads)
        k, v = kv.permute(2, 0, 3, 1, 4).contiguous().unbind(0)
        return k, v

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        dropout = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(split_heads(self.q(x), self.num_heads), k, v, dropout_p=dropout)
        return self.proj(merge_heads(y))


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block of the neck: x + attn(LN x), x + mlp(LN x)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        hidden: int,
        dropout: float,
        drop_path: float,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, attn_dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden, dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class DecoderBlock(nn.Module):
    """Pre-norm decoder block: causal self-attention, cross-attention to the memory, MLP.

    As in the original, ``norm2`` normalises both the decoder stream (queries) and the memory before
    it is projected to keys/values, so ``memory_kv`` applies it too.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        hidden: int,
        dropout: float,
        drop_path: float,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = SelfAttention(dim, num_heads, attn_dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, num_heads, attn_dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden, dropout)
        self.drop_path = DropPath(drop_path)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cross_attn.memory_kv(self.norm2(memory))

    def forward(self, x: torch.Tensor, memory_k: torch.Tensor, memory_v: torch.Tensor) -> torch.Tensor:
        """Whole sequence at once (teacher forcing, AiT-P, uncached decoding): causal self-attention."""
        x = x + self.drop_path(self.self_attn(self.norm1(x), causal=True))
        x = x + self.drop_path(self.cross_attn(self.norm2(x), memory_k, memory_v))
        return x + self.drop_path(self.mlp(self.norm3(x)))

    def pack_for_decoding(
        self,
        memory_k: torch.Tensor,
        memory_v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        weights: str = "fp32",
    ) -> PackedDecoderBlock:
        """This block's parameters and caches, laid out for one-token decoding steps (see ``StepLinear``
        for ``weights``)."""
        return PackedDecoderBlock(
            num_heads=self.self_attn.num_heads,
            norm1=self.norm1,
            qkv=StepLinear.pack(self.self_attn.qkv, weights),
            proj=StepLinear.pack(self.self_attn.proj, weights),
            norm2=self.norm2,
            q=StepLinear.pack(self.cross_attn.q, weights),
            cross_proj=StepLinear.pack(self.cross_attn.proj, weights),
            norm3=self.norm3,
            fc1=StepLinear.pack(self.mlp.fc1, weights),
            fc2=StepLinear.pack(self.mlp.fc2, weights),
            memory_k=memory_k,
            memory_v=memory_v,
            k_cache=k_cache,
            v_cache=v_cache,
        )


DECODING_WEIGHTS = ("fp32", "int8")


@dataclass
class StepLinear:
    """One ``nn.Linear`` laid out for decoding steps of a few rows: ``y = x Wᵀ + b (+ residual)``.

    ``weights="fp32"``: the weight pre-transposed to ``(in, out)`` and contiguous; ``addmm`` on that layout
    runs faster than ``F.linear`` on our CPU (MKL GEMV). Exact: the same numbers as the module.

    ``weights="int8"``: weight-only int8 quantisation (gpt-fast's recipe for memory-bound decoding): each
    output row scaled by ``max |w| / 127`` and rounded, activations cast to bfloat16 for torch's
    ``_weight_int8pack_mm`` kernel, the result returned in float32. A step at batch 1 streams every weight
    once, so 4x fewer bytes is most of the step; the numbers change (greedy ids can differ from fp32 where
    two logits nearly tie). CPU only (the kernel we rely on).
    """

    bias: torch.Tensor
    weight_t: torch.Tensor | None = None  # fp32: (in, out)
    qweight: torch.Tensor | None = None  # int8: (out, in)
    scales: torch.Tensor | None = None  # int8: (out,) bfloat16

    @classmethod
    def pack(cls, linear: nn.Linear, weights: str = "fp32") -> StepLinear:
        return cls.from_weight(linear.weight, linear.bias, weights)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor, weights: str = "fp32") -> StepLinear:
        """``weight (out, in)``, ``bias (out,)``."""
        if weights == "fp32":
            return cls(bias=bias, weight_t=weight.t().contiguous())
        if weights != "int8":
            raise ValueError(f"decoding weights must be one of {DECODING_WEIGHTS}, received {weights!r}")
        if weight.device.type != "cpu":
            raise ValueError(
                f"int8 decoding weights run on the CPU only (torch's _weight_int8pack_mm); the model is on "
                f"{weight.device.type}: use weights='fp32' there"
            )
        scales = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        qweight = torch.round(weight / scales[:, None]).clamp_(-127, 127).to(torch.int8)
        return cls(bias=bias, qweight=qweight.contiguous(), scales=scales.to(torch.bfloat16))

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, in) float32 -> (B, out) float32, plus ``residual`` (B, out) when given."""
        if self.weight_t is not None:
            if residual is None:
                return torch.addmm(self.bias, x, self.weight_t)
            return torch.addmm(residual, x, self.weight_t).add_(self.bias)
        y = torch._weight_int8pack_mm(x.to(torch.bfloat16), self.qweight, self.scales)
        y = torch.add(self.bias, y)  # float32 + bfloat16 -> float32
        return y if residual is None else y.add_(residual)


@dataclass
class PackedDecoderBlock:
    """A ``DecoderBlock`` for single-position steps: the same computation as ``DecoderBlock.forward`` on
    the last row (eval mode: no dropout), with less per-step work.

    Why this layout: at batch 1 a decoding step is six small matrix-vector products per block, bound
    by streaming ~3.6 MB of weights (``StepLinear``); calling ``torch`` ops on 2-D tensors directly skips
    module dispatch. Memory keys/values come precomputed (once per image); ``k_cache``/``v_cache``
    ``(B, H, T, d)`` are preallocated and written in place at position ``t``.
    """

    num_heads: int
    norm1: nn.LayerNorm
    qkv: StepLinear
    proj: StepLinear
    norm2: nn.LayerNorm
    q: StepLinear
    cross_proj: StepLinear
    norm3: nn.LayerNorm
    fc1: StepLinear
    fc2: StepLinear
    memory_k: torch.Tensor
    memory_v: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor

    def step(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """x (B, D): the stream at position ``t`` -> (B, D)."""
        batch, dim = x.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        # causal self-attention: position t attends to the cached positions 0..t
        qkv = self.qkv(_layer_norm(x, self.norm1)).view(batch, 3, heads, 1, head_dim)
        self.k_cache[:, :, t : t + 1].copy_(qkv[:, 1])
        self.v_cache[:, :, t : t + 1].copy_(qkv[:, 2])
        y = F.scaled_dot_product_attention(
            qkv[:, 0], self.k_cache[:, :, : t + 1], self.v_cache[:, :, : t + 1]
        )
        x = self.proj(y.view(batch, dim), residual=x)
        # cross-attention to the image memory (keys/values computed once per image)
        q = self.q(_layer_norm(x, self.norm2)).view(batch, heads, 1, head_dim)
        y = F.scaled_dot_product_attention(q, self.memory_k, self.memory_v)
        x = self.cross_proj(y.view(batch, dim), residual=x)
        # MLP
        hidden = F.gelu(self.fc1(_layer_norm(x, self.norm3)))
        return self.fc2(hidden, residual=x)


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
