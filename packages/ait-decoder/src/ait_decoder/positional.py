"""2-D sine position codes of the neck (DETR style, un-normalised integer coordinates)."""

from __future__ import annotations

import torch


def sine_codes_1d(coords: torch.Tensor, channels: int, temperature: float = 10000.0) -> torch.Tensor:
    """``(n,)`` coordinates -> ``(n, channels)`` float64 codes: channel pairs ``(2i, 2i+1)`` hold
    ``sin(c / T^(2i/channels))`` and ``cos(c / T^(2i/channels))``. One axis of `sine_positions_2d`."""
    if channels % 2:
        raise ValueError(f"sine codes need an even number of channels (sin/cos pairs), received {channels}")
    # float64 for the angles so large coordinates keep their precision
    coords = coords.to(torch.float64)
    channel = torch.arange(channels, dtype=torch.float64, device=coords.device)
    inverse_frequency = temperature ** (2 * torch.div(channel, 2, rounding_mode="floor") / channels)
    angles = coords[:, None] / inverse_frequency
    return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=-1).flatten(1)


def sine_coordinate_codes(
    num_bins: int, canvas: float, stride: float, dim: int, temperature: float = 10000.0
) -> torch.Tensor:
    """``(num_bins + 1, dim)`` float64: each coordinate bin's position on the memory grid, coded as the neck
    codes its cells. Bin ``b`` is pixel ``b * canvas / num_bins``, which lies at ``pixel / stride - 0.5`` in
    cell units (cell ``i`` spans pixels ``[i * stride, (i + 1) * stride)``); both halves of the code carry
    it, since one bin id serves x and y alike."""
    if num_bins < 1 or canvas <= 0 or stride <= 0:
        raise ValueError(
            f"need num_bins >= 1, canvas > 0 and stride > 0, received {num_bins}, {canvas}, {stride}"
        )
    if dim % 4:
        raise ValueError(f"sine codes need dim divisible by 4 (two axes × sin/cos), received {dim}")
    pixels = torch.arange(num_bins + 1, dtype=torch.float64) * (canvas / num_bins)
    half = sine_codes_1d(pixels / stride - 0.5, dim // 2, temperature)
    return torch.cat((half, half), dim=1)


def sine_positions_2d(
    height: int,
    width: int,
    dim: int = 256,
    temperature: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Fixed position codes ``(height*width, dim)`` for a row-major grid of feature-map cells.

    Half of the channels encode the row ``y``, half the column ``x`` (``dim/2`` each, y first), with the
    integer coordinates 0, 1, 2, ... as in the original (no normalisation to [0, 2π]). Within each half,
    channel pairs ``(2i, 2i+1)`` hold ``sin(c / T^(2i/(dim/2)))`` and ``cos(c / T^(2i/(dim/2)))``
    (interleaved sin/cos).
    """
    if dim % 4:
        raise ValueError(f"sine positions need dim divisible by 4 (two axes × sin/cos), received {dim}")
    if height < 1 or width < 1:
        raise ValueError(f"grid must be at least 1×1, received {height}×{width}")
    per_axis = dim // 2
    pos_y = sine_codes_1d(torch.arange(height, dtype=torch.float64, device=device), per_axis, temperature)
    pos_x = sine_codes_1d(torch.arange(width, dtype=torch.float64, device=device), per_axis, temperature)
    grid = torch.cat(
        (
            pos_y[:, None, :].expand(height, width, per_axis),
            pos_x[None, :, :].expand(height, width, per_axis),
        ),
        dim=-1,
    )
    return grid.reshape(height * width, dim).to(dtype)
