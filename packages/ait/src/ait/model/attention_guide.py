"""Guided cross-attention: the decoder's positions of an object are taught to look at that object's memory
cells (training only; `loss.attention_guide_weight`).

An autoregressive box decoder learns where to look only through its 4 coordinate tokens per object, so for
thousands of images its cross-attention spreads over the whole memory and its corners stay at the
image-blind guess. Here every teacher-forced position that predicts a token of a real object (its corners,
class and mask tokens) is pushed, in every decoder block, to put its attention on the memory cells the
object occupies: the loss is -log of the attention mass on those cells, averaged over heads first (a mixture,
so a head may still look elsewhere while the others find the object). Nothing changes at inference.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ait_decoder import AiTDecoder
from ait_decoder.layers import split_heads


def object_cells(masks: torch.Tensor, grid: tuple[int, int], stride: int) -> torch.Tensor:
    """``(N, H, W)`` instance masks -> ``(N, h*w)`` bool: the memory cells holding at least one pixel of each
    object (every object, however small, owns the cells its pixels fall in)."""
    height, width = grid
    if masks.shape[0] == 0:
        return torch.zeros(0, height * width, dtype=torch.bool)
    covered = F.max_pool2d((masks > 0).float()[:, None], kernel_size=stride, stride=stride, ceil_mode=True)
    cells = torch.zeros(masks.shape[0], height, width, dtype=torch.bool)
    rows, cols = min(height, covered.shape[2]), min(width, covered.shape[3])
    cells[:, :rows, :cols] = covered[:, 0, :rows, :cols] > 0
    return cells.flatten(1)


@contextlib.contextmanager
def captured_cross_attention(
    decoder: AiTDecoder,
) -> Iterator[list[tuple[nn.Module, torch.Tensor, torch.Tensor]]]:
    """Within the block, every decoder block's cross-attention call records (module, queries' input, keys)."""
    records: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

    def record(module: nn.Module, args: tuple, _output: torch.Tensor) -> None:
        records.append((module, args[0], args[1]))

    handles = [block.cross_attn.register_forward_hook(record) for block in decoder.blocks]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def attention_guide_loss(
    records: list[tuple[nn.Module, torch.Tensor, torch.Tensor]],
    targets: torch.Tensor,
) -> tuple[torch.Tensor, int]:
    """Summed -log(attention mass on the target cells) over the guided positions, averaged over blocks.

    records: `captured_cross_attention`'s (module, x (B, T, D), keys (B, H, S, d)) per block; targets
    (B, T, S) bool: the cells each position should look at (no cell: the position is not guided).
    Returns (sum, number of guided positions).
    """
    if not records:
        raise ValueError("no cross-attention was recorded: run the decoder inside captured_cross_attention")
    guided = targets.any(-1)  # (B, T)
    count = int(guided.sum())
    anchor = records[0][1]
    if count == 0:  # zero, with a graph through the query projections
        return sum(module.q(x[:, :1]).sum() * 0.0 for module, x, _ in records), 0
    total = anchor.new_zeros((), dtype=torch.float32)
    for module, x, keys in records:
        queries = split_heads(module.q(x), module.num_heads)  # (B, H, T, d)
        if queries.shape[2] != targets.shape[1] or keys.shape[2] != targets.shape[2]:
            raise ValueError(
                f"targets {tuple(targets.shape)} do not match {queries.shape[2]} positions x {keys.shape[2]} cells"
            )
        scores = (queries.float() @ keys.float().transpose(-1, -2)) / math.sqrt(queries.shape[-1])
        log_attention = scores.log_softmax(-1)  # (B, H, T, S)
        on_target = log_attention.masked_fill(~targets[:, None], float("-inf")).logsumexp(-1)  # (B, H, T)
        mixture = on_target.logsumexp(1) - math.log(on_target.shape[1])  # (B, T)
        total = total - mixture[guided].sum()
    return total / len(records), count


def position_targets(
    slot_objects: torch.Tensor, cells: list[torch.Tensor], per_object: int, length: int
) -> torch.Tensor:
    """(B, M) object index per sequence slot (-1: a padding slot) and per image (N_b, S) cells ->
    (B, length, S) bool: each position of a real object's slot targets that object's cells."""
    batch, slots = slot_objects.shape
    num_cells = cells[0].shape[1] if cells else 0
    per_slot = torch.zeros(batch, slots, num_cells, dtype=torch.bool)
    for image, image_cells in enumerate(cells):
        real = (slot_objects[image] >= 0).nonzero()[:, 0]
        per_slot[image, real] = image_cells[slot_objects[image, real]]
    return per_slot.repeat_interleave(per_object, dim=1)[:, :length]
