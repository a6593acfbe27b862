"""Mask augmentation: blank a random share of square patches of the tokenizer's input.

AiT trains its depth tokenizer on inputs where half of the 16x16 patches are set to 0 (= invalid depth)
while the target stays the whole map, so the tokenizer learns to complete the holes real sensors leave.
"""

from __future__ import annotations

import math

import torch


def patches_to_blank(num_patches: int, ratio: float) -> int:
    """Exactly ceil(ratio * num_patches), robust to float noise (0.3 * 10 is 3, not 4)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    return min(num_patches, math.ceil(round(ratio * num_patches, 9)))


def random_patch_mask(
    batch: int,
    height: int,
    width: int,
    *,
    ratio: float = 0.5,
    patch_size: int = 16,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Bool (batch, 1, height, width), True where a pixel is blanked.

    The map is tiled by ``patch_size`` squares (edge patches are cut when the size does not divide);
    each sample independently gets exactly ``ceil(ratio * num_patches)`` of them, drawn from ``generator``.
    """
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    rows, cols = math.ceil(height / patch_size), math.ceil(width / patch_size)
    num_patches = rows * cols
    num_blank = patches_to_blank(num_patches, ratio)
    # A random permutation per sample: the first `num_blank` patch indices of each are blanked.
    order = torch.rand(batch, num_patches, generator=generator).argsort(dim=1)
    patch_blank = torch.zeros(batch, num_patches, dtype=torch.bool)
    patch_blank.scatter_(1, order[:, :num_blank], True)
    grid = patch_blank.view(batch, 1, rows, cols)
    pixels = grid.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)
    return pixels[:, :, :height, :width].to(device) if device is not None else pixels[:, :, :height, :width]


def mask_augment(
    x: torch.Tensor,
    *,
    ratio: float = 0.5,
    patch_size: int = 16,
    generator: torch.Generator | None = None,
    fill: float = 0.0,
) -> torch.Tensor:
    """``x`` (B, C, H, W) with a fresh random set of patches per sample set to ``fill`` (not in place)."""
    if x.dim() != 4:
        raise ValueError(f"expected (B, C, H, W), got shape {tuple(x.shape)}")
    blank = random_patch_mask(
        x.shape[0], x.shape[2], x.shape[3], ratio=ratio, patch_size=patch_size, generator=generator
    ).to(x.device)
    return x.masked_fill(blank, fill)
