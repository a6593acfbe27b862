"""A dense auxiliary loss on the image memory: every memory cell an object covers names that object's box
corners and class, in the decoder's own output vocabulary (training only; `loss.memory_box_weight`).

The sequence decoder learns where objects are from 4 coordinate tokens per object, and only once it has
learned where to look; until then its box tokens sit at the image-blind guess. Here each covered cell of the
neck's memory is trained, through a linear map and the decoder's tied output layer, to score the bins of its
object's corners and its class, so the memory carries each object's box at its own cells in the very form the
decoder emits, and the decoder has only to attend to the right cell. Nothing changes at inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ait_decoder import AiTDecoder, VocabLayout
from ait_decoder.sequences import object_order, quantize_boxes

ROLES = 5  # x1, y1, x2, y2, class


def cell_owners(masks: torch.Tensor, grid: tuple[int, int], stride: float) -> torch.Tensor:
    """``(N, H, W)`` instance masks -> ``(h*w,)`` long: the object covering each cell's centre pixel (the
    smallest one where several do), -1 where none does or the centre lies outside the masks."""
    height, width = grid
    owners = torch.full((height * width,), -1, dtype=torch.long)
    if masks.shape[0] == 0:
        return owners
    rows = ((torch.arange(height) + 0.5) * stride).long()
    cols = ((torch.arange(width) + 0.5) * stride).long()
    inside = (rows < masks.shape[1])[:, None] & (cols < masks.shape[2])[None, :]  # (h, w)
    rows, cols = rows.clamp(max=masks.shape[1] - 1), cols.clamp(max=masks.shape[2] - 1)
    centres = (masks[:, rows][:, :, cols] > 0) & inside  # (N, h, w)
    covering = centres.reshape(masks.shape[0], -1)  # (N, h*w)
    area = (masks > 0).flatten(1).sum(1).float()  # (N,)
    # the smallest covering object: the largest score where covered
    score = torch.where(
        covering, (-area)[:, None], torch.full_like(covering, float("-inf"), dtype=torch.float)
    )
    best = score.argmax(0)
    return torch.where(covering.any(0), best, owners)


def box_masks(boxes: torch.Tensor, canvas: int) -> torch.Tensor:
    """``(N, 4)`` pixel boxes -> ``(N, canvas, canvas)`` bool: the pixels whose centres lie in each box
    (detection batches carry no instance masks)."""
    centres = torch.arange(canvas, dtype=torch.float32) + 0.5
    x1, y1, x2, y2 = (boxes[:, i, None] for i in range(4))
    across = (centres >= x1) & (centres < x2)  # (N, canvas)
    down = (centres >= y1) & (centres < y2)
    return down[:, :, None] & across[:, None, :]


def instance_masks(batch: dict, index: int, canvas: int) -> torch.Tensor:
    """Image `index`'s (N, H, W) instance masks on the CPU, or its boxes filled where the batch carries no
    masks (detection)."""
    masks = batch.get("masks")
    if masks is None:
        boxes = torch.as_tensor(batch["boxes"][index], dtype=torch.float32).reshape(-1, 4).cpu()
        return box_masks(boxes, int(canvas))
    return torch.as_tensor(masks[index]).cpu()


class MemoryBoxHead(nn.Module):
    """Linear maps from memory tokens to one query per role, scored by the decoder's tied output layer.

    With ``rank_slots`` (and a fixed ``order``), each covered cell also names the place of its object in the
    instance sequence (0 = first, clipped to ``rank_slots - 1``) through a linear classifier, weighted
    ``rank_weight`` per cell: the memory then says which object comes next, which the decoder must find
    before it can emit the object's first corner.
    """

    def __init__(self, dim: int, rank_slots: int = 0, rank_weight: float = 0.0, order: str = "area") -> None:
        super().__init__()
        self.proj = nn.Linear(dim, ROLES * dim)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)
        if rank_slots and order == "random":
            raise ValueError(
                "a sequence rank needs a fixed object order ('area' or 'raster'), received 'random'"
            )
        self.rank = nn.Linear(dim, rank_slots) if rank_slots else None
        self.rank_weight = float(rank_weight)
        self.order = order

    def loss(
        self,
        memory_tokens: torch.Tensor,
        grid: tuple[int, int],
        stride: float,
        batch: dict,
        decoder: AiTDecoder,
        vocab: VocabLayout,
        canvas: float,
    ) -> tuple[torch.Tensor, int]:
        """Summed CE over every covered cell and role, and the number of (cell, role) terms."""
        batch_size, cells, dim = memory_tokens.shape
        if cells != grid[0] * grid[1]:
            raise ValueError(f"memory of {cells} tokens does not match its grid {grid}")
        picked, coord_targets, class_targets, rank_targets = [], [], [], []
        for index in range(batch_size):
            boxes = torch.as_tensor(batch["boxes"][index], dtype=torch.float32).reshape(-1, 4).cpu()
            owners = cell_owners(instance_masks(batch, index, canvas), grid, stride)
            covered = (owners >= 0).nonzero()[:, 0]
            if not len(covered):
                continue
            labels = torch.as_tensor(batch["labels"][index], dtype=torch.long).reshape(-1).cpu()
            objects = owners[covered]
            picked.append(index * cells + covered)
            # targets as positions within the coordinate and class spans the logits cover
            coord_targets.append(quantize_boxes(boxes[objects], canvas, vocab.num_bins))
            class_targets.append(labels[objects])
            if self.rank is not None:
                rank = torch.empty(len(boxes), dtype=torch.long)
                rank[object_order(boxes, self.order, canvas)] = torch.arange(len(boxes))
                rank_targets.append(rank[objects].clamp(max=self.rank.out_features - 1))
        if not picked:  # zero, with a graph through the head (every parameter takes part in every step)
            zero = self.proj(memory_tokens[:, :1]).sum() * 0.0
            if self.rank is not None:
                zero = zero + self.rank(memory_tokens[:, :1]).sum() * 0.0
            return zero, 0
        device = memory_tokens.device
        rows = torch.cat(picked).to(device)
        queries = self.proj(memory_tokens.reshape(-1, dim)[rows]).view(-1, ROLES, dim)
        coord_logits = decoder.logits(queries[:, :4], vocab.coord)  # (n, 4, bins)
        class_logits = decoder.logits(queries[:, 4], vocab.classes)  # (n, classes)
        coords = torch.cat(coord_targets).to(device)
        classes = torch.cat(class_targets).to(device)
        # at least fp32 (half-precision logits under autocast), float64 kept
        dtype = torch.promote_types(coord_logits.dtype, torch.float32)
        total = F.cross_entropy(coord_logits.to(dtype).flatten(0, 1), coords.flatten(), reduction="sum")
        total = total + F.cross_entropy(class_logits.to(dtype), classes, reduction="sum")
        if self.rank is not None:
            rank_logits = self.rank(memory_tokens.reshape(-1, dim)[rows]).to(dtype)
            ranks = torch.cat(rank_targets).to(device)
            total = total + self.rank_weight * F.cross_entropy(rank_logits, ranks, reduction="sum")
        return total, len(rows) * ROLES
