"""Masked image modelling for a backbone without labels, in the manner of SimMIM (Xie et al., 2022).

The paper's backbones start from SimMIM weights: random square patches of the image are hidden, and the
backbone's deepest map predicts their pixels through a 1x1 convolution and a pixel shuffle (one linear
layer per output pixel), with an L1 loss on the hidden pixels only. SimMIM replaces hidden patch
embeddings by a learned token; a convolutional stem sees pixels, not patch embeddings, so here the hidden
pixels are replaced by a learned fill colour before the stem, which the stem then embeds like any other
input.

    backbone = create_backbone("swinv2-convstem-cpu")
    mim = SimMIM(backbone, mask_patch=8, mask_ratio=0.6)
    loss, reconstruction, mask = mim(images)           # images (B, 3, H, W), H and W multiples of 8
    losses = pretrain_simmim(mim, batches, steps=100)  # AdamW, warm-up and cosine decay
    save_backbone(backbone, "simmim.safetensors")      # loads with load_backbone_checkpoint / create_backbone
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SimMIM", "pretrain_simmim", "random_patch_mask", "save_backbone"]


def random_patch_mask(
    batch: int,
    height: int,
    width: int,
    mask_patch: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(batch, 1, height, width) float mask, 1 on hidden pixels: exactly round(ratio * patches) of the
    `mask_patch`-sized squares of each image are hidden (SimMIM's fixed count, not a Bernoulli draw)."""
    if height % mask_patch or width % mask_patch:
        raise ValueError(f"image size {height}x{width} must be a multiple of mask_patch {mask_patch}")
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    rows, cols = height // mask_patch, width // mask_patch
    patches = rows * cols
    hidden = max(1, round(mask_ratio * patches))
    scores = torch.rand(batch, patches, generator=generator, device=device)
    order = scores.argsort(dim=1)
    mask = torch.zeros(batch, patches, device=device)
    mask.scatter_(1, order[:, :hidden], 1.0)
    mask = mask.view(batch, 1, rows, cols)
    return mask.repeat_interleave(mask_patch, dim=2).repeat_interleave(mask_patch, dim=3)


class SimMIM(nn.Module):
    """A backbone, a learned fill colour for hidden pixels and a linear pixel decoder.

    `forward(images, mask=None) -> (loss, reconstruction, mask)`: the L1 error on the hidden pixels (mean
    over hidden pixels and channels), the full predicted image, and the mask used (drawn when not given).
    """

    def __init__(self, backbone: nn.Module, mask_patch: int = 8, mask_ratio: float = 0.6) -> None:
        super().__init__()
        stride = int(backbone.stride)
        channels = backbone.out_channels
        if not isinstance(channels, int):
            raise ValueError("SimMIM needs a backbone with one output map (one requested stage)")
        if mask_patch % stride and stride % mask_patch:
            raise ValueError(
                f"mask_patch {mask_patch} and the backbone stride {stride} must divide one another"
            )
        in_chans = int(getattr(getattr(backbone, "preset", None), "in_chans", 3))
        self.backbone = backbone
        self.mask_patch = int(mask_patch)
        self.mask_ratio = float(mask_ratio)
        self.fill = nn.Parameter(torch.zeros(1, in_chans, 1, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(channels, stride * stride * in_chans, 1), nn.PixelShuffle(stride)
        )

    def forward(
        self, images: torch.Tensor, mask: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, _, height, width = images.shape
        if mask is None:
            mask = random_patch_mask(
                batch, height, width, self.mask_patch, self.mask_ratio, generator, images.device
            )
        hidden = images * (1.0 - mask) + self.fill * mask
        reconstruction = self.decoder(self.backbone(hidden))
        error = F.l1_loss(reconstruction, images, reduction="none") * mask
        loss = error.sum() / (mask.sum() * images.shape[1]).clamp_min(1.0)
        return loss, reconstruction, mask


def pretrain_simmim(
    model: SimMIM,
    batches: Iterator[torch.Tensor],
    steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    warmup_steps: int | None = None,
    min_lr_ratio: float = 0.01,
    grad_clip: float = 5.0,
    seed: int = 0,
    log: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train `model` for `steps` batches (AdamW, linear warm-up, cosine decay to `min_lr_ratio` x lr, as
    SimMIM) and return the per-step losses. Masks come from a generator seeded with `seed`."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    warmup = max(1, steps // 20) if warmup_steps is None else max(1, warmup_steps)
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or n == "fill"]
    decay = [p for n, p in model.named_parameters() if not (p.ndim <= 1 or n == "fill")]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.999),
    )

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    for step in range(steps):
        images = next(batches)
        loss, _, _ = model(images, generator=generator)
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"SimMIM loss is not finite at step {step + 1}: lower lr (was {lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if log is not None:
            log(step + 1, losses[-1])
    return losses


def save_backbone(backbone: nn.Module, path: str | os.PathLike) -> Path:
    """The backbone's weights as safetensors (written to a temporary file, then renamed): what
    `load_backbone_checkpoint` and `create_backbone(pretrained=...)` read. Refuses non-finite weights."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"non-finite backbone weights in {', '.join(bad[:4])}: not saved to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={"format": "pt", "source": "ait_backbone.simmim"})
    os.replace(partial, path)
    return path
