"""Evaluation glue: depth with the protocol's test-time augmentation, COCO AP, the results table.

Depth (DESIGN §4 "Evaluation protocol"): two windows of the model's crop width at x = 0 and x = W - crop
(480-wide windows at x = 0 and 160 on NYU's 480x640), each averaged with its horizontally flipped
prediction, overlaps averaged by count; then `ait_eval.DepthMetrics` (per-image mean), merged across ranks
when torch.distributed is initialised. Both augmentations can be switched off in `EvalConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist

from ait.config.schema import EvalConfig
from ait_eval import DepthMetrics, detections_from_arrays, evaluate_coco, fuse_detections

DepthPredictor = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------- depth TTA
def window_positions(width: int, window: int, sliding_window: bool = True) -> list[int]:
    """Left edges of the evaluation windows: [0, width - window] (one window if it covers the image)."""
    if not sliding_window or width <= window:
        return [0]
    return sorted({0, width - window})


@torch.no_grad()
def predict_depth_tta(
    predict: DepthPredictor,
    images: torch.Tensor,
    window_width: int | None = None,
    sliding_window: bool = True,
    flip: bool = True,
) -> torch.Tensor:
    """Depth (B, 1, H, W) of images (B, 3, H, W) with sliding windows and flip averaging.

    `predict` maps (B, 3, H, w) -> (B, 1, H, w) (e.g. `solver.predict_depth`). Without sliding windows (or
    when window_width is None or >= W) the whole image goes through `predict` in one piece.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (B, 3, H, W), received {tuple(images.shape)}")
    batch, _, height, width = images.shape
    window = width if window_width is None or not sliding_window else min(int(window_width), width)
    total = torch.zeros(batch, 1, height, width, device=images.device)
    count = torch.zeros(1, 1, 1, width, device=images.device)
    for left in window_positions(width, window, sliding_window):
        crop = images[..., left : left + window]
        if flip:
            # One call for a window and its mirror image; the mirror's prediction is flipped back.
            both = predict(torch.cat([crop, crop.flip(-1)]))
            pred = (both[:batch] + both[batch:].flip(-1)) / 2
        else:
            pred = predict(crop)
        total[..., left : left + window] += pred.float()
        count[..., left : left + window] += 1
    return total / count


def depth_window_width(cfg) -> int:
    """The sliding-window width of a config: eval.window_width, else the depth training crop's width.

    That is 480 for the NYU configs and for the joint config too: each 480x480 window is zero-padded to the
    640x640 image canvas (model.depth_image_size, as its training crops were) and decodes to a 480x480 depth
    map from 225 tokens, rather than one window over the whole image.
    """
    if cfg.eval.window_width:
        return int(cfg.eval.window_width)
    return min(int(cfg.data.crop_size[1]), int(cfg.model.depth_size[1]))


def _all_gather_objects(obj) -> list:
    if dist.is_available() and dist.is_initialized():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, obj)
        return gathered
    return [obj]


def _gather_to_main(obj) -> list | None:
    """Every rank's `obj` on rank 0 (in rank order), None elsewhere; `[obj]` in a single process."""
    if dist.is_available() and dist.is_initialized():
        gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
        dist.gather_object(obj, gathered, dst=0)
        return gathered
    return [obj]


def _from_main(obj):
    """Rank 0's `obj` on every rank."""
    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def _model_device(solver) -> torch.device:
    try:
        return next(solver.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _depth_metrics_from(eval_cfg: EvalConfig) -> DepthMetrics:
    return DepthMetrics(
        min_depth=eval_cfg.min_depth,
        max_depth=eval_cfg.max_depth,
        eigen_crop=eval_cfg.eigen_crop,
        clip_max=eval_cfg.clip_max,
    )


def _merged_metrics(metrics: DepthMetrics) -> dict[str, float]:
    """Merge every rank's aggregator (exact: DepthMetrics sums with fsum) and compute per-image means."""
    states = _all_gather_objects(metrics.state_dict())
    merged = DepthMetrics.from_state_dict(states[0])
    for state in states[1:]:
        merged.merge(DepthMetrics.from_state_dict(state))
    result = merged.compute(mode="macro")
    result["num_images"] = float(merged.num_images)
    return result


def evaluate_depth(
    solver,
    loader: Iterable[dict],
    eval_cfg: EvalConfig | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Depth metrics of `solver` over `loader` batches {"image" (B,3,H,W), "depth" (B,1,H,W)}.

    The solver is put in eval mode for the loop and restored after. Returns the ait_eval metric dict
    (d1 d2 d3 abs_rel sq_rel rmse rmse_log log10 silog_ait silog_bts) plus num_images, over all ranks.
    """
    eval_cfg = eval_cfg or EvalConfig()
    was_training = solver.training
    solver.eval()
    device = _model_device(solver)
    window = eval_cfg.window_width or depth_window_width(solver.cfg)
    metrics = _depth_metrics_from(eval_cfg)
    try:
        for index, batch in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            images = batch["image"].to(device)
            pred = predict_depth_tta(
                solver.predict_depth,
                images,
                window_width=window,
                sliding_window=eval_cfg.sliding_window,
                flip=eval_cfg.flip,
            )
            if not bool(torch.isfinite(pred).all()):
                bad = int((~torch.isfinite(pred)).sum())
                raise ValueError(
                    f"evaluation batch {index}: the solver predicted {bad} non-finite depth value(s) of "
                    f"{pred.numel()}; the metrics would clean them to min_depth and look plausible, so "
                    "evaluation stops: check the checkpoint's weights"
                )
            metrics.update(pred[:, 0].cpu().numpy(), batch["depth"][:, 0].cpu().numpy())
    finally:
        solver.train(was_training)
    result = _merged_metrics(metrics)
    if result["num_images"] == 0:
        raise ValueError("the depth evaluation split is empty: no image to evaluate (check the split file)")
    return result


def mean_depth_baseline(
    train: float | Iterable[dict], loader: Iterable[dict], eval_cfg: EvalConfig | None = None
) -> dict[str, float]:
    """Metrics of predicting one constant everywhere: the mean valid training depth (or a given value).

    `train` is a number (metres) or a loader whose batches carry "depth" (B,1,H,W) (0 = invalid). Returns the
    metric dict plus "mean_depth".
    """
    if isinstance(train, (int, float)):
        mean = float(train)
    else:
        total, count = 0.0, 0
        for batch in train:
            depth = batch["depth"].double()
            valid = depth > 0
            total += float(depth[valid].sum())
            count += int(valid.sum())
        if count == 0:
            raise ValueError("the training loader has no valid depth pixel (depth > 0) to average")
        mean = total / count
    if not (math.isfinite(mean) and mean > 0):
        raise ValueError(f"the baseline depth must be a positive finite number of metres, received {mean}")
    metrics = _depth_metrics_from(eval_cfg or EvalConfig())
    for batch in loader:
        gt = batch["depth"][:, 0].cpu().numpy()
        metrics.update(np.full_like(gt, mean, dtype=np.float32), gt)
    result = _merged_metrics(metrics)
    result["mean_depth"] = mean
    return result


# ------------------------------------------------------------------------------------------- instances
def _find_label_map(loader) -> list[int] | None:
    """The dataset's label_to_category_id, looked up through wrappers (Subset, transform datasets)."""
    obj = getattr(loader, "dataset", loader)
    for _ in range(5):
        mapping = getattr(obj, "label_to_category_id", None)
        if mapping is not None:
            return list(mapping)
        obj = getattr(obj, "dataset", None) or getattr(obj, "base", None)
        if obj is None:
            break
    return None


def _image_areas(
    canvas: tuple[int, int], count: int, scales, orig_sizes, image_size
) -> list[tuple[int, int]]:
    """Each image's real area (h, w) on the canvas (top-left): `image_size` where given, else the original
    size times the scale as the eval transform rounds it, else the whole canvas."""
    from ait.model.instance_head import _per_image

    if image_size is not None:
        return _per_image(image_size, count, "image_size")
    areas = []
    for factor, size in zip(scales, orig_sizes, strict=True):
        if size is None:
            areas.append(canvas)
        else:
            height, width = (max(1, round(side * factor)) for side in size)
            areas.append((min(height, canvas[0]), min(width, canvas[1])))
    return areas


def instance_decoding(eval_cfg: EvalConfig) -> dict:
    """`predict_instances_fused`'s decoding arguments as an `EvalConfig` sets them."""
    return {
        "samples": eval_cfg.instance_samples,
        "flip": eval_cfg.instance_flip,
        "fusion_iou": eval_cfg.instance_fusion_iou,
    }


def mirror_image_area(images: torch.Tensor, areas: list[tuple[int, int]]) -> torch.Tensor:
    """Each canvas with its real image area (top-left, (h, w) per image) mirrored left to right, the padding
    left where it is."""
    mirrored = images.clone()
    for index, (height, width) in enumerate(areas):
        mirrored[index, :, :height, :width] = images[index, :, :height, :width].flip(-1)
    return mirrored


def predict_instances_fused(
    solver,
    images: torch.Tensor,
    scale=1.0,
    orig_size=None,
    image_size=None,
    generator: torch.Generator | None = None,
    samples: int = 1,
    flip: bool = False,
    fusion_iou: float = 0.55,
) -> list[dict]:
    """`solver.predict_instances` over several decodes per image, fused (`ait_eval.fuse_detections`).

    Each image is decoded `samples` times (nucleus sampling draws differ) and, with `flip`, as many times
    more from its mirror image, whose detections are mirrored back. The mirror flips the real image area
    only, which the eval transform places at the canvas's top-left: `image_size` (h, w) per image in canvas
    pixels where given, else `orig_size` times `scale`, else the whole canvas. All decodes run as one batch.
    Returns what `predict_instances` returns, per image: "boxes", "labels", "scores"[, "masks"], best score
    first, the scores fused (each decode's best member, summed, over the decodes). One sample without flip
    is `predict_instances` itself. Every decode's masks are held at once (decodes x objects x H x W).
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, received {samples}")
    if samples == 1 and not flip:
        return solver.predict_instances(images, scale=scale, orig_size=orig_size, generator=generator)
    from ait.model.instance_head import _per_image

    count = images.shape[0]
    scales = _per_image(scale, count, "scale")
    sizes = _per_image(orig_size, count, "orig_size") if orig_size is not None else [None] * count
    areas = _image_areas(tuple(images.shape[-2:]), count, scales, sizes, image_size)
    views = [images, mirror_image_area(images, areas)] if flip else [images]
    stacked = torch.cat([view.repeat(samples, 1, 1, 1) for view in views])
    decodes = len(views) * samples
    per_decode = solver.predict_instances(
        stacked,
        scale=scales * decodes,
        orig_size=None if orig_size is None else sizes * decodes,
        generator=generator,
    )
    fused = []
    for index in range(count):
        parts = [per_decode[d * count + index] for d in range(decodes)]
        if flip:  # the second half of the decodes saw the mirror image: mirror their detections back
            # the mirror axis is the real area's, in original pixels; the head clipped boxes to this width
            axis = areas[index][1] / scales[index]
            width = sizes[index][1] if sizes[index] is not None else images.shape[-1] / scales[index]
            for d in range(samples, decodes):
                boxes = parts[d]["boxes"].clone()
                boxes[:, [0, 2]] = (axis - parts[d]["boxes"][:, [2, 0]]).clamp(0, width)
                parts[d] = dict(parts[d], boxes=boxes)
                if "masks" in parts[d]:
                    masks = parts[d]["masks"].clone()
                    real = min(round(axis), masks.shape[-1])
                    masks[..., :real] = parts[d]["masks"][..., :real].flip(-1)
                    parts[d]["masks"] = masks
        with_masks = "masks" in parts[0]
        result = fuse_detections(
            torch.cat([p["boxes"] for p in parts]).cpu().numpy(),
            torch.cat([p["scores"] for p in parts]).float().cpu().numpy(),
            torch.cat([p["labels"] for p in parts]).cpu().numpy(),
            decode_ids=torch.cat(
                [torch.full((len(p["scores"]),), d, dtype=torch.long) for d, p in enumerate(parts)]
            ).numpy(),
            decodes=decodes,
            iou_threshold=fusion_iou,
            masks=torch.cat([p["masks"] for p in parts]).cpu().numpy() if with_masks else None,
        )
        fused.append({key: torch.from_numpy(value) for key, value in result.items()})
    return fused


def evaluate_instances(
    solver,
    loader: Iterable[dict],
    coco_gt,
    eval_cfg: EvalConfig | None = None,
    label_to_category_id: list[int] | None = None,
    generator: torch.Generator | None = None,
    max_batches: int | None = None,
) -> dict[str, dict[str, float]]:
    """COCO AP of `solver.predict_instances` over an instance loader (InstanceTransform(train=False) batches);
    with `eval_cfg.instance_samples` > 1 or `instance_flip`, of several decodes per image fused
    (`predict_instances_fused`).

    Batches carry "image" (B,3,canvas,canvas), "scale", "orig_size", "image_id". Contiguous labels map back
    to category ids through `label_to_category_id` (default: the loader's dataset's). Returns
    {"bbox": {...}, "segm": {...}} ("segm" only for instance segmentation), detections of all ranks.
    """
    eval_cfg = eval_cfg or EvalConfig()
    label_map = label_to_category_id if label_to_category_id is not None else _find_label_map(loader)
    if label_map is None:
        raise ValueError("pass label_to_category_id: the loader's dataset has no label_to_category_id")
    with_masks = solver.instance_head.task == "insseg"
    was_training = solver.training
    solver.eval()
    device = _model_device(solver)
    detections = []
    try:
        for index, batch in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            results = predict_instances_fused(
                solver,
                batch["image"].to(device),
                scale=batch.get("scale", 1.0),
                orig_size=batch.get("orig_size"),
                image_size=batch.get("image_size"),
                generator=generator,
                **instance_decoding(eval_cfg),
            )
            image_ids = batch["image_id"]
            image_ids = image_ids.tolist() if isinstance(image_ids, torch.Tensor) else list(image_ids)
            for image_id, result in zip(image_ids, results, strict=True):
                keep = result["scores"] >= eval_cfg.score_threshold
                labels = result["labels"][keep].tolist()
                category_ids = np.asarray([label_map[label] for label in labels], dtype=np.int64)
                detections += detections_from_arrays(
                    int(image_id),
                    result["boxes"][keep].numpy(),
                    result["scores"][keep].numpy(),
                    category_ids,
                    masks=result["masks"][keep].numpy() if with_masks else None,
                )
    finally:
        solver.train(was_training)
    # COCOeval over all detections runs once, on rank 0 (every rank running it costs each the whole
    # evaluation, for 5000 val images minutes of CPU), and the few numbers go back to every rank
    parts = _gather_to_main(detections)
    result: dict | Exception | None = None
    if parts is not None:
        iou_types = ("bbox", "segm") if with_masks else ("bbox",)
        try:
            result = evaluate_coco(coco_gt, [d for part in parts for d in part], iou_types=iou_types)
        except Exception as error:  # sent to every rank: the others would wait for a result forever
            result = error
    result = _from_main(result)
    if isinstance(result, Exception):
        raise result
    return result


# ---------------------------------------------------------------------------------------------- table
def _cell(value, digits: int, factor: float = 1.0) -> str:
    if value is None or not math.isfinite(float(value)):
        return "-"
    return f"{float(value) * factor:.{digits}f}"


def format_results_table(
    depth_metrics: dict | None,
    coco_metrics: dict | None,
    name: str = "AiT",
    baseline: dict | None = None,
    extra_rows: Iterable[tuple[str, dict | None, dict | None]] = (),
    ap50: bool = False,
) -> str:
    """Markdown table in the original README's format: D1 D2 D3 Abs Rel RMSE Log10 | Box AP Mask AP.

    Depth metrics with three decimals; AP in percent with one decimal ("-" where a task was not run).
    `baseline`: depth metrics of the predict-the-mean baseline, added as a row; `extra_rows`: more
    (label, depth, coco) rows after it (e.g. the tokenizer oracle); `ap50`: add Box AP50 / Mask AP50 columns.
    """
    header = "| Model | D1 | D2 | D3 | Abs Rel | RMSE | Log10 | Box AP | Mask AP |"
    rule = "|---|---|---|---|---|---|---|---|---|"
    if ap50:
        header += " Box AP50 | Mask AP50 |"
        rule += "---|---|"

    def row(label: str, depth: dict | None, coco: dict | None) -> str:
        depth = depth or {}
        coco = coco or {}
        cells = [_cell(depth.get(k), 3) for k in ("d1", "d2", "d3", "abs_rel", "rmse", "log10")]
        keys = ("AP", "AP50") if ap50 else ("AP",)
        for key in keys:
            cells.append(_cell(coco.get("bbox", {}).get(key), 1, 100.0))
            cells.append(_cell(coco.get("segm", {}).get(key), 1, 100.0))
        return "| " + " | ".join([label, *cells]) + " |"

    lines = [header, rule, row(name, depth_metrics, coco_metrics)]
    if baseline is not None:
        lines.append(row("predict-the-mean", baseline, None))
    for label, depth, coco in extra_rows:
        lines.append(row(label, depth, coco))
    return "\n".join(lines)
