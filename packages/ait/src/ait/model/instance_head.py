"""Instance-segmentation and detection-only heads (DESIGN §4 "Task-solver", instance sequences).

Training: per image, Pix2Seq-style padding to `max_objects` objects (`ait_decoder.sequences.pad_instances`),
mask targets cut out of the full-resolution masks with torchvision's roi_align (aligned) at the mask
tokenizer's input size, thresholded at 0.5 and encoded; random "bad" boxes get the code of an empty mask.
All crops of the whole batch go through one roi_align and one tokenizer call, so any batch size works.

Inference: every position's id comes from the decoder's restricted sampling; this head turns ids + raw
logits into boxes (canvas bins -> original pixels), labels, scores (softmax over classes + noise, noise
dropped) and masks (soft mixture or hard codes, decoded, pasted into the boxes with grid_sample).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ait.losses import mask_aux_loss, token_cross_entropy
from ait_decoder import VocabLayout
from ait_decoder.sequences import instances_to_sequence, pad_instances, parse_instances

# Position roles inside one object's tokens: x1 y1 x2 y2 class m1..mn.
BOX, CLASS, MASK = 0, 1, 2


class InstanceHead(nn.Module):
    """Sequences, losses and parsing for task "insseg" (boxes + class + mask tokens) or "det" (no masks)."""

    def __init__(
        self,
        task: str,
        vocab: VocabLayout,
        tokenizer: nn.Module | None,
        max_objects: int = 100,
        canvas: int = 640,
        tau: float = 1.0,
        soft_token: bool = True,
        box_weight: float = 1.0,
        class_weight: float = 1.0,
        mask_weight: float = 0.2,
        mask_aux_weight: float = 5.0,
        corrupt_class_p: float = 0.5,
        object_order: str = "random",
        coord_sigma: float = 0.0,
        duplicate_boxes: str = "uniform",
    ) -> None:
        super().__init__()
        if task not in ("insseg", "det"):
            raise ValueError(f"instance head task must be 'insseg' or 'det', received {task!r}")
        self.task = task
        self.vocab = vocab
        self.max_objects = int(max_objects)
        self.canvas = int(canvas)
        self.tau = float(tau)
        self.soft_token = bool(soft_token)
        self.mask_aux_weight = float(mask_aux_weight)
        self.mask_weight = float(mask_weight)
        self.corrupt_class_p = float(corrupt_class_p)
        self.object_order = str(object_order)
        self.duplicate_boxes = str(duplicate_boxes)  # checked by pad_instances, as the order
        if not (coord_sigma >= 0 and math.isfinite(coord_sigma)):
            raise ValueError(f"coord_sigma must be a finite standard deviation >= 0, received {coord_sigma}")
        self.coord_sigma = float(coord_sigma)
        self.tokenizer = tokenizer if task == "insseg" else None
        if task == "insseg":
            if tokenizer is None or tokenizer.kind != "mask":
                raise ValueError("task 'insseg' needs a mask tokenizer (kind 'mask')")
            if tokenizer.num_codes != vocab.num_mask_codes:
                raise ValueError(
                    f"mask tokenizer has {tokenizer.num_codes} codes but the vocabulary reserves {vocab.num_mask_codes}"
                )
            self.mask_size = tuple(int(s) for s in tokenizer.config.input_size)
            self.mask_grid = tokenizer.token_grid(*self.mask_size)
            if self.mask_grid[0] * self.mask_grid[1] != vocab.tokens_per_mask:
                raise ValueError(
                    f"mask tokenizer turns {self.mask_size} crops into {self.mask_grid} tokens, but the vocabulary "
                    f"expects {vocab.tokens_per_mask} tokens per mask"
                )
        self.per_object = vocab.tokens_per_object(task)
        self.length = self.max_objects * self.per_object
        # CE weights of box / class / mask tokens (1 / 1 / 0.2 in the paper), and each position's role.
        self.box_weight, self.class_weight = float(box_weight), float(class_weight)
        roles = [BOX] * 4 + [CLASS] + [MASK] * (self.per_object - 5)
        self.register_buffer("roles", torch.tensor(roles), persistent=False)

    # ------------------------------------------------------------------------------------------ targets
    def _empty_mask_code(self, device: torch.device) -> torch.Tensor:
        """Codes of an all-zero mask (the target of random "bad" boxes); recomputed so it follows the weights."""
        empty = torch.zeros(1, 1, *self.mask_size, device=device)
        with torch.autocast(device_type=empty.device.type, enabled=False):
            return self.tokenizer.encode(empty).flatten(1)[0]

    @torch.no_grad()
    def build_targets(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Collated instance batch -> decoder inputs, targets, CE weights and the real objects' mask crops.

        Randomness: `generator`, else per image a generator seeded by the batch's "sequence_seed" (one per
        image, set by the training data), else the global torch RNG.
        Returns input_ids / target_ids (B, L) int64, weights (B, L) float, and for the auxiliary loss
        real_index (R, 2) (image, object slot) and real_crops (R, 1, s, s) binary float; slot_objects
        (B, max_objects) int64: the index (into the image's input objects) of each slot's real object, -1 for
        padding slots.
        """
        images = batch["image"]
        boxes_list, labels_list = batch["boxes"], batch["labels"]
        num_images = images.shape[0]
        if len(boxes_list) != num_images or len(labels_list) != num_images:
            raise ValueError(
                f"expected {num_images} boxes/labels entries (one per image), received "
                f"{len(boxes_list)} and {len(labels_list)}"
            )
        device = images.device
        masks_list = batch.get("masks") if self.task == "insseg" else None
        if self.task == "insseg" and (masks_list is None or len(masks_list) != num_images):
            raise ValueError(f"task 'insseg' needs 'masks': one (N, H, W) entry per image ({num_images})")
        # One generator per image when the batch carries per-sample seeds (the training data does) and the
        # caller passes none: an image's sequence then depends on its sample only, not on the batch or rank.
        seeds = batch.get("sequence_seed") if generator is None else None
        if seeds is not None:
            generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        else:
            generators = [generator] * num_images
        # the real image area of each image (before the canvas padding), where noise boxes are drawn
        image_sizes = batch.get("image_size")
        if image_sizes is not None:
            image_sizes = torch.as_tensor(image_sizes).reshape(num_images, 2).tolist()
        padded_all, kept_all = [], []
        for index, (boxes, labels) in enumerate(zip(boxes_list, labels_list, strict=True)):
            generator = generators[index]
            boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).cpu()
            labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1).cpu()
            if masks_list is not None:
                shape = tuple(masks_list[index].shape)
                if len(shape) != 3 or shape[0] != boxes.shape[0]:
                    raise ValueError(
                        f"image {index}: expected masks (N, H, W) with N = {boxes.shape[0]} (one per box), "
                        f"received {shape}"
                    )
            kept = torch.arange(boxes.shape[0])
            if boxes.shape[0] > self.max_objects:  # no room in the sequence: keep a random subset
                kept = torch.randperm(boxes.shape[0], generator=generator)[: self.max_objects].sort().values
            padded_all.append(
                pad_instances(
                    boxes[kept],
                    labels[kept],
                    self.max_objects,
                    self.canvas,
                    generator,
                    image_size=None if image_sizes is None else tuple(image_sizes[index]),
                    order=self.object_order,
                    duplicates=self.duplicate_boxes,
                )
            )
            kept_all.append(kept)

        mask_codes_all = [None] * num_images
        real_index = torch.zeros(0, 2, dtype=torch.long)
        real_crops = torch.zeros(0, 1, 1, 1)
        if self.task == "insseg":
            mask_codes_all, real_index, real_crops = self._mask_targets(
                masks_list, kept_all, padded_all, device
            )

        slot_objects = torch.full((num_images, self.max_objects), -1, dtype=torch.long)
        for index, (padded, kept) in enumerate(zip(padded_all, kept_all, strict=True)):
            real = padded.kind == 0
            slot_objects[index, real] = kept[_source_of_slots(padded)[real]]

        inputs, targets, weights = [], [], []
        for padded, codes, generator in zip(padded_all, mask_codes_all, generators, strict=True):
            seq_in, seq_out, seq_w = instances_to_sequence(
                padded,
                None if codes is None else codes.cpu(),  # None: a detection sequence (no mask tokens)
                self.vocab,
                self.canvas,
                generator,
                corrupt_class_p=self.corrupt_class_p,
                box_weight=self.box_weight,
                class_weight=self.class_weight,
                mask_weight=self.mask_weight,
            )
            inputs.append(seq_in)
            targets.append(seq_out)
            weights.append(seq_w)
        return {
            "input_ids": torch.stack(inputs).to(device),
            "target_ids": torch.stack(targets).to(device),
            "weights": torch.stack(weights).to(device),
            "real_index": real_index.to(device),
            "real_crops": real_crops.to(device),
            "slot_objects": slot_objects,
        }

    def _mask_targets(self, masks_list, kept_all, padded_all, device):
        """roi_align crops for real objects and duplicates (one call for the batch), encoded in one call."""
        full_masks, rois, owners = [], [], []  # owners: (image, slot, kind) per roi
        offset = 0
        for image_idx, (masks, kept, padded) in enumerate(zip(masks_list, kept_all, padded_all, strict=True)):
            masks = torch.as_tensor(masks).to(device)
            masks = masks[kept.to(device)]  # the objects that fit the sequence, in pad_instances' input order
            source = _source_of_slots(padded)
            for slot in torch.nonzero(padded.kind != 2).flatten().tolist():
                rois.append(
                    torch.cat([torch.tensor([offset + int(source[slot])]), padded.boxes[slot].float()])
                )
                owners.append((image_idx, slot, int(padded.kind[slot])))
            full_masks.append(masks)
            offset += masks.shape[0]

        empty = self._empty_mask_code(device)
        codes_all = [empty.expand(self.max_objects, -1).clone() for _ in padded_all]
        if not rois:
            return codes_all, torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 1, *self.mask_size)
        rois = torch.stack(rois).to(device=device, dtype=torch.float32)
        crops = crop_masks(torch.cat(full_masks), rois, self.mask_size)
        with torch.autocast(device_type=crops.device.type, enabled=False):  # fp32 nearest-code search
            codes = self.tokenizer.encode(crops).flatten(1)  # (R, tokens_per_mask)
        for (image_idx, slot, _), code in zip(owners, codes, strict=True):
            codes_all[image_idx][slot] = code
        real = [i for i, owner in enumerate(owners) if owner[2] == 0]
        real_index = torch.tensor([owners[i][:2] for i in real], dtype=torch.long).reshape(-1, 2)
        return codes_all, real_index, crops[real]

    # --------------------------------------------------------------------------------------------- loss
    def mask_code_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, L, V) -> (B, M, tokens_per_mask, K): the mask-codebook logits of every object's mask slots."""
        start, stop = self.vocab.mask_codes
        per_object = logits.view(logits.shape[0], self.max_objects, self.per_object, -1)
        return per_object[:, :, 5:, start:stop]

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weighted CE sum, supervised-token count, and the (already weighted) auxiliary mask sum."""
        if self.coord_sigma > 0:
            ce_sum, count = self._smoothed_coordinate_ce(logits, targets["target_ids"], targets["weights"])
        else:
            ce_sum, count = token_cross_entropy(logits, targets["target_ids"], targets["weights"])
        aux_sum = torch.zeros((), device=logits.device)
        real_index = targets["real_index"]
        if self.task == "insseg" and self.soft_token and self.mask_aux_weight > 0 and len(real_index):
            code_logits = self.mask_code_logits(logits)[real_index[:, 0], real_index[:, 1]]  # (R, n, K)
            # unclamped, as the original's decode_soft: the Dice term clips, the MSE keeps its gradient
            # fp32 under autocast, as the original's force_fp32 loss
            with torch.autocast(device_type=code_logits.device.type, enabled=False):
                pred = self.tokenizer.decode_soft(
                    code_logits.float(), self.tau, grid=self.mask_grid, clamp=False
                )
            per_object = mask_aux_loss(pred, targets["real_crops"])
            # Each supervised mask token of a real object carries its object's Dice + MSE, weighted
            # mask_aux_weight x mask_weight (5.0 x 0.2), before the task's token-count normalisation.
            weights = targets["weights"].view(-1, self.max_objects, self.per_object)[:, :, 5:]
            supervised_tokens = (weights[real_index[:, 0], real_index[:, 1]] > 0).sum(1).float()
            aux_sum = self.mask_aux_weight * self.mask_weight * (supervised_tokens * per_object).sum()
        return {"ce_sum": ce_sum, "count": count, "aux_sum": aux_sum}

    def _smoothed_coordinate_ce(
        self, logits: torch.Tensor, target_ids: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """token_cross_entropy, except that each box coordinate's target is a Gaussian over the coordinate
        bins (standard deviation `coord_sigma` bins, centred on the true bin, normalised over the bins)."""
        log_probs = logits.float().log_softmax(-1)
        nll = -log_probs.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)
        is_box = (self.roles == BOX).repeat(self.max_objects)[: target_ids.shape[1]]
        start, stop = self.vocab.coord
        centre = target_ids[:, is_box].clamp(start, stop - 1).float().unsqueeze(-1)  # (B, nbox, 1)
        bins = torch.arange(start, stop, device=logits.device, dtype=torch.float32)
        soft = torch.exp(-0.5 * ((bins - centre) / self.coord_sigma) ** 2)
        soft = soft / soft.sum(-1, keepdim=True)
        nll[:, is_box] = -(soft * log_probs[:, is_box, start:stop]).sum(-1)
        weights = weights.to(nll.dtype)
        return (nll * weights).sum(), (weights > 0).sum().to(nll.dtype)

    # ---------------------------------------------------------------------------------------- inference
    def soft_positions(self) -> torch.Tensor:
        """bool (L,): the positions whose next decoder input is the soft embedding (mask slots)."""
        return (self.roles == MASK).repeat(self.max_objects)

    def parse(self, ids: torch.Tensor, logits: torch.Tensor, scale=1.0, orig_size=None) -> list[dict]:
        """Decoded ids (B, L) + raw logits (B, L, V) -> per image {"boxes", "labels", "scores"[, "masks"]}.

        Boxes, labels and scores come from `ait_decoder.sequences.parse_instances` (the one parser: canvas
        bins -> canvas pixels with ordered corners; the sampled class's probability under a softmax over the
        class logits and the noise logit, the noise column dropped without renormalising); here they are
        divided by the resize scale and clipped to the original image. Masks (insseg) are the soft mixture
        (or the sampled codes without soft token) decoded and pasted into the boxes: bool (N, H, W).
        """
        num_images = ids.shape[0]
        scales = _per_image(scale, num_images, "scale")
        sizes = (
            _per_image(orig_size, num_images, "orig_size") if orig_size is not None else [None] * num_images
        )
        parsed = parse_instances(ids, logits, self.vocab, self.canvas, task=self.task)
        boxes, labels, scores = parsed["boxes"], parsed["labels"], parsed["scores"]

        masks = None
        if self.task == "insseg":
            if self.soft_token:
                obj_logits = logits.view(num_images, self.max_objects, self.per_object, -1).float()
                code_logits = self.mask_code_logits(obj_logits.flatten(1, 2))
                masks = self.tokenizer.decode_soft(code_logits.flatten(0, 1), self.tau, grid=self.mask_grid)
            else:
                codes = parsed["mask_codes"].clamp(0, self.vocab.num_mask_codes - 1)
                masks = self.tokenizer.decode(codes.flatten(0, 1).view(-1, *self.mask_grid))
            masks = masks.view(num_images, self.max_objects, 1, *self.mask_size)

        results = []
        for b in range(num_images):
            image_boxes = boxes[b] / float(scales[b])
            if sizes[b] is not None:
                height, width = int(sizes[b][0]), int(sizes[b][1])
            else:
                height, width = round(self.canvas / float(scales[b])), round(self.canvas / float(scales[b]))
            # the mask fills the predicted box, also where the box leaves the image (the original pastes
            # into the unclipped box); only the reported box is clipped
            pasted = paste_masks(masks[b], image_boxes, height, width).cpu() if masks is not None else None
            image_boxes[:, 0::2] = image_boxes[:, 0::2].clamp(0, width)
            image_boxes[:, 1::2] = image_boxes[:, 1::2].clamp(0, height)
            result = {"boxes": image_boxes.cpu(), "labels": labels[b].cpu(), "scores": scores[b].cpu()}
            if pasted is not None:
                result["masks"] = pasted
            results.append(result)
        return results


def crop_masks(
    masks: torch.Tensor, rois: torch.Tensor, size: tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """Binary box crops of full-resolution masks, as the original's mask targets (mmdet crop_and_resize).

    masks (K, H, W) 0/1; rois (R, 5) rows (mask index, x1, y1, x2, y2) in mask pixels -> (R, 1, *size) float
    0/1: roi_align (aligned=True, adaptive sampling), thresholded at `threshold`. Boxes smaller than `size`
    are upsampled, so a mask that ends exactly at its box edge loses the outermost corner samples (they
    interpolate with the outside); boxes of at least `size` pixels reproduce it exactly.
    """
    if masks.dim() != 3 or rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(
            f"expected masks (K, H, W) and rois (R, 5), received {tuple(masks.shape)} and {tuple(rois.shape)}"
        )
    crops = roi_align(
        masks.float()[:, None],
        rois.float(),
        output_size=size,
        spatial_scale=1.0,
        sampling_ratio=0,
        aligned=True,
    )
    return (crops >= threshold).float()


def paste_masks(
    masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int, threshold: float = 0.5, chunk: int = 16
) -> torch.Tensor:
    """Paste (N, 1, s, s) masks in [0, 1] into their xyxy boxes of an (height, width) image -> bool (N, H, W).

    Each image pixel centre is mapped into its box's normalised [-1, 1] coordinates and bilinearly sampled
    (grid_sample, align_corners=False: the box edges are the mask's outer pixel edges, as roi_align aligned);
    outside the box the mask is 0. Objects are processed in chunks to bound the (chunk, H, W, 2) grid.
    """
    if masks.dim() != 4 or masks.shape[1] != 1 or boxes.shape != (masks.shape[0], 4):
        raise ValueError(
            f"expected masks (N, 1, s, s) and boxes (N, 4), received {tuple(masks.shape)} and {tuple(boxes.shape)}"
        )
    device = masks.device
    out = torch.zeros(masks.shape[0], height, width, dtype=torch.bool, device=device)
    xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    boxes = boxes.to(device=device, dtype=torch.float32)
    for start in range(0, masks.shape[0], chunk):
        b = boxes[start : start + chunk]
        box_w = (b[:, 2] - b[:, 0]).clamp(min=1e-6)
        box_h = (b[:, 3] - b[:, 1]).clamp(min=1e-6)
        gx = (xs[None, :] - b[:, 0:1]) / box_w[:, None] * 2 - 1  # (n, W)
        gy = (ys[None, :] - b[:, 1:2]) / box_h[:, None] * 2 - 1  # (n, H)
        n = b.shape[0]
        grid = torch.stack(
            [gx[:, None, :].expand(n, height, width), gy[:, :, None].expand(n, height, width)], -1
        )
        sampled = F.grid_sample(
            masks[start : start + chunk].float(),
            grid,
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        out[start : start + chunk] = sampled[:, 0] >= threshold
    return out


def _source_of_slots(padded) -> torch.Tensor:
    """Index of the real object whose mask each slot uses (real: itself; duplicate: the object it copies)."""
    source = padded.source.clone().long()
    real = padded.kind == 0
    if (source[real] < 0).any():  # builders that mark only duplicates: real slots keep the input order
        source[real] = torch.arange(int(real.sum()))
    return source


def _per_image(value, num_images: int, name: str) -> list:
    """A scalar / (H, W) pair for all images, or a per-image sequence/tensor -> list of length num_images."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return [float(value)] * num_images
        value = value.tolist()
    if isinstance(value, (int, float)):
        return [value] * num_images
    value = list(value)
    if name == "orig_size" and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return [tuple(value)] * num_images
    if len(value) != num_images:
        raise ValueError(f"{name} must be one value or one per image ({num_images}), received {len(value)}")
    return value
