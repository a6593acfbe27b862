"""The encoder neck: backbone feature map -> image memory tokens for the decoder's cross-attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ait_decoder.layers import DropPath, EncoderBlock, Mlp
from ait_decoder.positional import sine_positions_2d


@dataclass
class Memory:
    """Encoded image: ``tokens (B, h*w, D)`` (row-major cells, positions already added) and the
    ``positions (h*w, D)`` sine codes that were added, plus the grid size."""

    tokens: torch.Tensor
    positions: torch.Tensor
    grid: tuple[int, int]

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]


class Neck(nn.Module):
    """dropout → Linear(C→D) + LN → + sine positions → pre-norm encoder blocks → LN →
    Linear(D→D) + LN + sine positions → x + MLP(LN x)   (DESIGN §4, as in the original)."""

    def __init__(
        self,
        in_channels: int,
        dim: int,
        num_heads: int,
        num_layers: int,
        hidden: int,
        dropout: float,
        drop_path: float,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.dim = dim
        self.input_dropout = nn.Dropout(dropout)
        self.input_proj = nn.Linear(in_channels, dim)
        self.input_norm = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, num_heads, hidden, dropout, drop_path, attn_dropout) for _ in range(num_layers)
        )
        self.blocks_norm = nn.LayerNorm(dim)
        self.out_proj = nn.Linear(dim, dim)
        self.out_norm = nn.LayerNorm(dim)
        self.out_mlp_norm = nn.LayerNorm(dim)
        self.out_mlp = Mlp(dim, hidden, dropout)
        self.out_drop_path = DropPath(drop_path)

    def forward(self, features: torch.Tensor) -> Memory:
        if features.ndim != 4 or features.shape[1] != self.in_channels:
            raise ValueError(
                f"neck expects a feature map (B, {self.in_channels}, h, w), received shape {tuple(features.shape)}"
            )
        _, _, height, width = features.shape
        positions = sine_positions_2d(height, width, self.dim, device=features.device, dtype=features.dtype)
        x = features.flatten(2).transpose(1, 2)  # (B, h*w, C), row-major cells
        x = self.input_norm(self.input_proj(self.input_dropout(x))) + positions
        for block in self.blocks:
            x = block(x)
        x = self.blocks_norm(x)
        x = self.out_norm(self.out_proj(x)) + positions
        x = x + self.out_drop_path(self.out_mlp(self.out_mlp_norm(x)))
        return Memory(tokens=x, positions=positions, grid=(height, width))
