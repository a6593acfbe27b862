"""2-D sine position codes of the neck (DETR style, un-normalised integer coordinates)."""

from __future__ import annotations

import torch


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
    # float64 for the angles so large coordinates keep their precision, cast at the end.
    channel = torch.arange(per_axis, dtype=torch.float64, device=device)
    inverse_frequency = temperature ** (2 * torch.div(channel, 2, rounding_mode="floor") / per_axis)

    def encode(coords: torch.Tensor) -> torch.Tensor:  # (n,) -> (n, per_axis), interleaved sin/cos
        angles = coords[:, None] / inverse_frequency
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=-1).flatten(1)

    pos_y = encode(torch.arange(height, dtype=torch.float64, device=device))  # (h, per_axis)
    pos_x = encode(torch.arange(width, dtype=torch.float64, device=device))  # (w, per_axis)
    grid = torch.cat(
        (
            pos_y[:, None, :].expand(height, width, per_axis),
            pos_x[None, :, :].expand(height, width, per_axis),
        ),
        dim=-1,
    )
    return grid.reshape(height * width, dim).to(dtype)
