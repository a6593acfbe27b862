"""Prediction figures: one row per image, columns input | ground truth | prediction | instance overlay.

Rendered with matplotlib's Agg backend (no display needed). Depth uses one colour scale per row (from the
valid ground truth, else the prediction); invalid depth (0 / non-finite) is drawn black.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Rectangle

COCO_MEAN = np.array([123.675, 116.28, 103.53]) / 255.0
COCO_STD = np.array([58.395, 57.12, 57.375]) / 255.0


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def image_for_display(image) -> np.ndarray:
    """(3, H, W) or (H, W, 3) image as float (H, W, 3) in [0, 1]; COCO-normalised inputs are un-normalised."""
    raw = _to_numpy(image)
    array = raw.astype(np.float64)
    if array.ndim != 3:
        raise ValueError(f"expected an image (3, H, W) or (H, W, 3), received shape {array.shape}")
    if array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if raw.dtype == np.uint8 or (array.max() > 1.5 and array.min() >= 0):
        array = array / 255.0
    elif array.min() < 0:  # mean/std normalised (COCO): undo it
        array = array * COCO_STD + COCO_MEAN
    return np.clip(array, 0.0, 1.0)


def _depth_panel(ax, depth: np.ndarray, vmin: float, vmax: float, title: str):
    depth = np.squeeze(depth)
    invalid = ~np.isfinite(depth) | (depth <= 0)
    # magma_r without its near-black far end, so that far surfaces never look like invalid (black) pixels
    cmap = ListedColormap(plt.get_cmap("magma_r")(np.linspace(0.0, 0.8, 256))).with_extremes(bad="black")
    ax.imshow(np.ma.masked_where(invalid, depth), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=8)


# a box label's height as a share of its panel's height (fontsize 5 on the grid's panels), with a margin
LABEL_HEIGHT = 0.1


def _overlay_panel(
    ax,
    image: np.ndarray,
    instances: dict,
    score_threshold: float,
    max_instances: int,
    class_names: list[str] | None = None,
):
    ax.imshow(image)
    scores = _to_numpy(instances.get("scores", np.ones(len(_to_numpy(instances["boxes"])))))
    order = np.argsort(-scores)
    order = [i for i in order if scores[i] >= score_threshold][:max_instances]
    boxes = _to_numpy(instances["boxes"])
    masks = _to_numpy(instances["masks"]) if instances.get("masks") is not None else None
    colours = plt.get_cmap("tab20")
    overlay = np.zeros((*image.shape[:2], 4))
    for rank, i in enumerate(order):
        colour = colours(rank % 20)
        if masks is not None and masks[i].shape == image.shape[:2]:
            overlay[masks[i].astype(bool)] = (*colour[:3], 0.45)
        x1, y1, x2, y2 = boxes[i]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1))
        # the label sits on the box's top edge, outside it; where that is the image's top (a tall object),
        # the panel would clip it away, so it goes just inside the box instead
        inside = y1 < LABEL_HEIGHT * image.shape[0]
        ax.text(
            x1,
            y1,
            f"{_class_name(instances, i, class_names)} {scores[i]:.2f}",
            fontsize=5,
            color="white",
            va="top" if inside else "bottom",
            bbox={"facecolor": colour, "alpha": 0.8, "pad": 0.5, "linewidth": 0},
            clip_on=True,
        )
    ax.imshow(overlay)
    ax.set_title(f"instances ({len(order)} shown)", fontsize=8)


def _class_name(instances: dict, index: int, class_names: list[str] | None) -> str:
    if "names" in instances:
        return str(instances["names"][index])
    labels = instances.get("labels")
    if labels is None:
        return "object"
    label = int(_to_numpy(labels)[index])
    if class_names is not None and 0 <= label < len(class_names):
        return class_names[label]
    return f"class {label}"


def save_prediction_grid(
    path: str | os.PathLike,
    images,
    gt_depths,
    pred_depths,
    instances: list[dict] | None = None,
    score_threshold: float = 0.3,
    max_instances: int = 20,
    dpi: int = 150,
    class_names: list[str] | None = None,
) -> Path:
    """Write a PNG grid, one row per image: input | ground truth | prediction [| instance overlay].

    images (B, 3, H, W) ([0, 1] or COCO-normalised); gt_depths / pred_depths (B, 1, H, W) metres or None;
    instances: per image {"boxes" xyxy (N, 4), "scores", optional "labels" / "names", optional "masks" bool
    (N, H, W)} in the image's pixels, each labelled with its class name (`class_names[label]`) and score.
    Instances below score_threshold are hidden; at most max_instances drawn per image.
    """
    images = _to_numpy(images)
    if images.ndim != 4:
        raise ValueError(f"expected images (B, 3, H, W), received shape {images.shape}")
    num = images.shape[0]
    for name, value in (("gt_depths", gt_depths), ("pred_depths", pred_depths), ("instances", instances)):
        if value is not None and len(value) != num:
            raise ValueError(f"{name} must have one entry per image ({num}), received {len(value)}")
    gt = None if gt_depths is None else _to_numpy(gt_depths)
    pred = None if pred_depths is None else _to_numpy(pred_depths)
    columns = ["input"]
    if gt is not None:
        columns.append("ground truth")
    if pred is not None:
        columns.append("prediction")
    if instances is not None:
        columns.append("instances")
    height, width = images.shape[-2:]
    panel = 2.4
    fig, axes = plt.subplots(
        num, len(columns), figsize=(panel * len(columns), panel * height / width * num + 0.3), squeeze=False
    )
    try:
        for row in range(num):
            image = image_for_display(images[row])
            reference = gt[row] if gt is not None else (pred[row] if pred is not None else None)
            valid = (
                reference[np.isfinite(reference) & (reference > 0)] if reference is not None else np.zeros(0)
            )
            if valid.size == 0 and pred is not None:
                valid = pred[row][np.isfinite(pred[row]) & (pred[row] > 0)]
            vmin, vmax = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 1.0)
            col = 0
            axes[row, col].imshow(image)
            axes[row, col].set_title("input", fontsize=8)
            col += 1
            if gt is not None:
                _depth_panel(axes[row, col], gt[row], vmin, vmax, "ground truth")
                col += 1
            if pred is not None:
                _depth_panel(axes[row, col], pred[row], vmin, vmax, "prediction")
                col += 1
            if instances is not None:
                _overlay_panel(
                    axes[row, col], image, instances[row], score_threshold, max_instances, class_names
                )
            for ax in axes[row]:
                ax.set_axis_off()
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
    return path
