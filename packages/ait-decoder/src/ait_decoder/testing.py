"""Tiny configurations for fast tests (here and in packages that build on the decoder)."""

from __future__ import annotations

import torch

from ait_decoder.decoder import AiTDecoder, DecoderConfig
from ait_decoder.vocab import VocabLayout


def tiny_vocab() -> VocabLayout:
    """21 coordinate bins, 5 classes, 8 mask and 8 depth codes, 4 tokens per mask (objects of 9 tokens)."""
    return VocabLayout(num_bins=20, num_classes=5, mask_codes=8, depth_codes=8, reserved=3, tokens_per_mask=4)


def tiny_decoder(dtype: torch.dtype = torch.float32, seed: int = 0, **overrides) -> AiTDecoder:
    """A 2+2-layer, width-32 decoder over ``tiny_vocab()`` with tasks depth (16), insseg (27), det (10)."""
    config = dict(
        in_channels=12,
        vocab_size=tiny_vocab().size,
        tasks={"depth": 16, "insseg": 27, "det": 10},
        d_model=32,
        nhead=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=64,
    )
    config.update(overrides)
    torch.manual_seed(seed)
    return AiTDecoder(DecoderConfig(**config)).to(dtype).eval()


def random_features(
    batch: int,
    dtype: torch.dtype = torch.float32,
    grid: tuple[int, int] = (3, 4),
    channels: int = 12,
    seed: int = 1,
) -> torch.Tensor:
    """Seeded random backbone features ``(batch, channels, *grid)``."""
    return torch.randn(batch, channels, *grid, generator=torch.Generator().manual_seed(seed), dtype=dtype)
