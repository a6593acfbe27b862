"""Depth head: targets from the frozen depth tokenizer, CE + soft-token SILog, soft / hard decoding.

The head owns no learnable weights (the decoder predicts the tokens); it owns the frozen tokenizer and the
rules that turn depth maps into token sequences and logits back into depth maps (DESIGN §4 "Soft token").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ait.losses import depth_local_sum, silog_loss, token_cross_entropy
from ait_decoder import VocabLayout
from ait_decoder.sequences import depth_to_sequence, sequence_to_depth


class DepthHead(nn.Module):
    """Depth maps <-> depth token sequences for the task-solver.

    `size` is the (H, W) of the depth ground truth the tokenizer encodes (the training crop, 480x480 in the
    paper configs): it fixes the token grid and the sequence length (15x15 = 225). `image_size` is the
    (H, W) the input images are zero-padded to before the backbone (default `size`). The joint config pads
    the *image* to the 640x640 canvas shared with COCO (20x20 memory cells), as the original's
    ``padto=640``, while the depth ground truth stays a 480x480 crop and encodes to 225 tokens: no
    padding tokens. Inputs smaller than `size` are zero-padded at the bottom/right (depth 0 = invalid);
    larger ones are an error (evaluation slides windows of the crop width instead).
    """

    def __init__(
        self,
        tokenizer: nn.Module,
        vocab: VocabLayout,
        size: tuple[int, int],
        tau: float = 0.8,
        soft_token: bool = True,
        aux_weight: float = 1.0,
        silog_lambda: float = 0.5,
        image_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if tokenizer.kind != "depth":
            raise ValueError(f"the depth head needs a depth tokenizer, received kind {tokenizer.kind!r}")
        if tokenizer.num_codes != vocab.num_depth_codes:
            raise ValueError(
                f"depth tokenizer has {tokenizer.num_codes} codes but the vocabulary reserves {vocab.num_depth_codes}"
            )
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.size = (int(size[0]), int(size[1]))
        self.image_size = self.size if image_size is None else (int(image_size[0]), int(image_size[1]))
        if self.image_size[0] < self.size[0] or self.image_size[1] < self.size[1]:
            raise ValueError(
                f"the depth image size {self.image_size} must hold the depth size {self.size} (images are padded "
                "to it, never cropped)"
            )
        self.grid = tokenizer.token_grid(*self.size)
        self.length = self.grid[0] * self.grid[1]
        self.tau = float(tau)
        self.soft_token = bool(soft_token)
        self.aux_weight = float(aux_weight)
        self.silog_lambda = float(silog_lambda)

    # ------------------------------------------------------------------------------------------ shapes
    def pad(self, images: torch.Tensor, depth: torch.Tensor | None = None):
        """Zero-pad at the bottom/right (B,3,H,W) images up to `image_size` and (B,1,H,W) depth up to `size`."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), received {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height > self.size[0] or width > self.size[1]:
            raise ValueError(
                f"depth input {height}x{width} is larger than the model's depth size {self.size[0]}x{self.size[1]}; "
                "evaluate larger images with sliding windows (ait.evaluation.predict_depth_tta)"
            )
        if depth is not None and depth.shape != (images.shape[0], 1, height, width):
            raise ValueError(
                f"expected depth of shape {(images.shape[0], 1, height, width)}, received {tuple(depth.shape)}"
            )
        image_padding = (0, self.image_size[1] - width, 0, self.image_size[0] - height)
        if image_padding[1] or image_padding[3]:
            images = F.pad(images, image_padding)
        depth_padding = (0, self.size[1] - width, 0, self.size[0] - height)
        if depth is not None and (depth_padding[1] or depth_padding[3]):
            depth = F.pad(depth, depth_padding)
        return images, depth

    def code_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, T, V) vocabulary logits -> (B, T, K) logits of the depth codebook slice."""
        start, stop = self.vocab.depth_codes
        return logits[..., start:stop]

    # ----------------------------------------------------------------------------------------- training
    @torch.no_grad()
    def targets(self, depth: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) ground truth (0 = invalid, encoded as is: the tokenizer learnt to fill holes) -> ids (B,T)."""
        # fp32 even under mixed precision: nearest-code search in fp16 can flip ties between codes
        with torch.autocast(device_type=depth.device.type, enabled=False):
            codes = self.tokenizer.encode(depth.float())
        return depth_to_sequence(codes, self.vocab)

    def loss(
        self, logits: torch.Tensor, target_ids: torch.Tensor, depth: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """CE summed over tokens, the token count, the soft-token SILog of the local batch (0 in the w/o-soft
        ablation) and `sum`: CE sum + aux_weight x SILog x count, the rank's summed depth loss that the
        solver divides by the all-reduced mean count (the original's scaling of the SILog term)."""
        ce_sum, count = token_cross_entropy(logits, target_ids)
        if self.soft_token and self.aux_weight > 0:
            # fp32 under autocast, as the original's force_fp32 loss: a half-precision decode moves the
            # SILog of every soft-decoded map
            with torch.autocast(device_type=logits.device.type, enabled=False):
                pred = self.tokenizer.decode_soft(self.code_logits(logits).float(), self.tau, grid=self.grid)
            silog = silog_loss(pred, depth, lam=self.silog_lambda)
            total = depth_local_sum(ce_sum, count, silog, self.aux_weight)
        else:
            silog = torch.zeros((), device=logits.device)
            total = ce_sum
        return {"ce_sum": ce_sum, "count": count, "silog": silog, "sum": total}

    # ---------------------------------------------------------------------------------------- inference
    def decode(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Decoded (B, T) ids / (B, T, V) logits -> depth (B, 1, H, W) at `size`.

        Soft token: the tau-weighted mixture of codebook vectors, decoded; w/o soft token: the ids as sampled
        (argmax under greedy decoding).
        """
        if self.soft_token:
            return self.tokenizer.decode_soft(self.code_logits(logits).float(), self.tau, grid=self.grid)
        return self.tokenizer.decode(sequence_to_depth(ids, self.vocab, self.grid))
