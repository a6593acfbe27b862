"""The tokenizer oracle: what a solver would score if it predicted the ground truth's own tokens.

The solver only ever emits token ids, so a tokenizer's reconstruction of the ground truth bounds what the
solver can reach (UViM calls it the oracle). Both figures use the evaluation's own data and metrics:

- depth: each held-out depth map (holes and all, as the solver's metric sees it) is encoded, decoded, and
  scored with the same `DepthMetrics` settings as the solver (valid ground-truth pixels); where the split
  carries ``depth_complete`` (synthetic rooms) the reconstruction is also scored against the complete
  depth on every pixel (``rmse_complete``), i.e. how well the tokenizer fills the sensor's holes;
- instances: each true instance is cropped to its true box (roi_align 64x64, thresholded, as the training
  targets), encoded, decoded, pasted back into that box at the original image size, and scored by COCO
  segm AP with score 1 and the true category (bbox AP is 1 by construction and not reported).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ait.config.schema import EvalConfig
from ait.evaluation import _depth_metrics_from, _find_label_map, _merged_metrics
from ait_eval import detections_from_arrays, evaluate_coco

__all__ = ["depth_tokenizer_oracle", "mask_tokenizer_oracle"]


@torch.no_grad()
def reconstruct_depth(tokenizer, depth: torch.Tensor) -> torch.Tensor:
    """decode(encode(depth)) of (B, 1, H, W) metres; maps are zero-padded (invalid) to the downsample."""
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"depth must be (B, 1, H, W), received {tuple(depth.shape)}")
    height, width = depth.shape[-2:]
    step = tokenizer.downsample
    pad_h, pad_w = (-height) % step, (-width) % step
    padded = F.pad(depth.float(), (0, pad_w, 0, pad_h)) if pad_h or pad_w else depth.float()
    return tokenizer.decode(tokenizer.encode(padded))[..., :height, :width]


@torch.no_grad()
def depth_tokenizer_oracle(
    tokenizer, loader: Iterable[dict], eval_cfg: EvalConfig | None = None, max_batches: int | None = None
) -> dict[str, float]:
    """Depth metrics of the tokenizer's reconstruction of each batch's "depth" (the solver's metric rules).

    Adds ``rmse_complete`` (pixel-pooled over every pixel against ``depth_complete``) when batches carry it.
    """
    metrics = _depth_metrics_from(eval_cfg or EvalConfig())
    device = tokenizer.codebook.device
    squared, pixels = 0.0, 0
    for index, batch in enumerate(loader):
        if max_batches is not None and index >= max_batches:
            break
        depth = batch["depth"].to(device)
        recon = reconstruct_depth(tokenizer, depth)
        metrics.update(recon[:, 0].cpu().numpy(), depth[:, 0].cpu().numpy())
        complete = batch.get("depth_complete")
        if complete is not None:
            diff = recon.double().cpu() - complete.double()
            squared += float(diff.pow(2).sum())
            pixels += diff.numel()
    result = _merged_metrics(metrics)
    result["rmse_complete"] = math.sqrt(squared / pixels) if pixels else float("nan")
    return result


@torch.no_grad()
def mask_tokenizer_oracle(
    tokenizer,
    loader: Iterable[dict],
    coco_gt,
    label_to_category_id: list[int] | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """COCO segm metrics ({"AP", "AP50", ...}) of the true instances after a trip through the mask tokenizer.

    Batches are InstanceTransform(train=False) batches: "boxes"/"labels"/"masks" per image in canvas pixels,
    "scale" and "orig_size" to map back to the annotated image.
    """
    from ait.model.instance_head import _per_image, crop_masks, paste_masks

    label_map = label_to_category_id if label_to_category_id is not None else _find_label_map(loader)
    if label_map is None:
        raise ValueError("pass label_to_category_id: the loader's dataset has no label_to_category_id")
    size = tuple(tokenizer.config.input_size)
    device = tokenizer.codebook.device
    detections = []
    for index, batch in enumerate(loader):
        if max_batches is not None and index >= max_batches:
            break
        image_ids = batch["image_id"]
        image_ids = image_ids.tolist() if isinstance(image_ids, torch.Tensor) else list(image_ids)
        scales = _per_image(batch["scale"], len(image_ids), "scale")
        sizes = _per_image(batch["orig_size"], len(image_ids), "orig_size")
        for b, image_id in enumerate(image_ids):
            boxes = torch.as_tensor(batch["boxes"][b], dtype=torch.float32)
            if boxes.numel() == 0:
                continue
            masks = torch.as_tensor(batch["masks"][b]).to(device)
            labels = torch.as_tensor(batch["labels"][b]).tolist()
            rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes], 1).to(device)
            crops = crop_masks(masks, rois, size)
            recon = tokenizer.decode(tokenizer.encode(crops))
            height, width = (int(v) for v in sizes[b])
            image_boxes = boxes / float(scales[b])
            pasted = paste_masks(recon, image_boxes.to(device), height, width).cpu().numpy()
            detections += detections_from_arrays(
                int(image_id),
                image_boxes.numpy(),
                np.ones(len(boxes), dtype=np.float32),
                np.asarray([label_map[label] for label in labels], dtype=np.int64),
                masks=pasted,
            )
    return evaluate_coco(coco_gt, detections, iou_types=("segm",))["segm"]
