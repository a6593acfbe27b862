"""Loading a trained solver from a checkpoint and predicting on image files (`ait eval`, `ait predict`)."""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ait.config.schema import Config
from ait.engine.checkpoint import (
    check_config_compatible,
    check_finite_weights,
    load_checkpoint,
    load_model_weights,
    stored_tokenizer_configs,
)

__all__ = ["load_image", "load_solver", "predict_files"]


def load_solver(
    checkpoint: str | os.PathLike, cfg: Config | None = None, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Config]:
    """The solver stored in `checkpoint`, in eval mode, and the config it runs with.

    With `cfg` (e.g. `ait eval CONFIG`), the checkpoint must have the same architecture (model.* keys,
    file paths aside) or this is a ValueError listing the differences; evaluation settings come from `cfg`.
    Without it, the config saved in the checkpoint is used. The checkpoint holds the frozen tokenizers'
    weights too, so their original files are not needed.
    """
    from ait.model import build_task_solver
    from ait.original import load_original_solver, read_original_solver

    original = read_original_solver(checkpoint)  # the original release's files, recognised by content
    if original is not None:
        return load_original_solver(checkpoint, cfg, device, state=original)
    state = load_checkpoint(checkpoint, map_location="cpu")
    check_finite_weights(state["model"], checkpoint)
    saved = Config.from_json(state["config"])
    if cfg is not None:
        check_config_compatible(state, cfg, checkpoint, architecture_only=True)
    run_cfg = copy.deepcopy(cfg if cfg is not None else saved)
    build_cfg = copy.deepcopy(run_cfg)
    # weights come from the checkpoint: build from presets only, do not look for the original files
    build_cfg.model.backbone_checkpoint = None
    for ref in (build_cfg.model.depth_tokenizer, build_cfg.model.mask_tokenizer):
        if ref is not None:
            ref.checkpoint = None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*UNTRAINED.*")
        solver = build_task_solver(build_cfg, tokenizer_configs=stored_tokenizer_configs(state, checkpoint))
    load_model_weights(solver, state["model"], checkpoint)
    if hasattr(solver, "cfg"):
        solver.cfg = run_cfg  # inference settings (top_p, eval windows...) of the run, not of the build
    return solver.to(device).eval(), run_cfg


MIN_IMAGE_SIDE = 16  # pixels: smaller images carry no usable content at the model's resolution
MAX_IMAGE_PIXELS = 64 * 2**20  # 64 megapixels: beyond that the resize alone needs gigabytes


def load_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 (H, W, 3) RGB; FileNotFoundError / ValueError name the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            width, height = image.size  # from the header: a huge image is refused before it is decoded
            if min(width, height) < MIN_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
                raise ValueError(
                    f"image {path} is {width}x{height} pixels; ait predict takes images of at least "
                    f"{MIN_IMAGE_SIDE} pixels a side and at most {MAX_IMAGE_PIXELS // 2**20} megapixels: resize it"
                )
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot decode image {path}: {error}") from error


def check_finite_predictions(pred: torch.Tensor, what: str) -> None:
    """ValueError when a prediction holds NaN/inf: it is reported, never cleaned into plausible numbers."""
    finite = torch.isfinite(pred)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(
            f"the solver predicted {bad} non-finite value(s) of {pred.numel()} for the {what}: its weights or "
            "inputs are broken (check the checkpoint; nothing was written for this image)"
        )


def _write_depth_png(path: Path, depth: np.ndarray) -> None:
    """NYU convention: uint16 millimetres."""
    from PIL import Image

    millimetres = np.clip(np.nan_to_num(depth, nan=0.0) * 1000.0, 0, 65535).round().astype(np.uint16)
    Image.fromarray(millimetres).save(path)


@torch.no_grad()
def predict_files(
    solver: torch.nn.Module, cfg: Config, paths: list[str | os.PathLike], out_dir: str | os.PathLike
) -> list[Path]:
    """For each image: depth as a 16-bit PNG (mm) and/or instances, plus a PNG figure; returns written files.

    Every image is decoded first, so an undecodable file fails before any prediction is written.
    """
    from ait.evaluation import depth_window_width, predict_depth_tta
    from ait.visualize import save_prediction_grid

    images = [(Path(p), load_image(p)) for p in paths]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = next(solver.parameters()).device
    tasks = cfg.model.tasks
    written: list[Path] = []
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    for path, array in images:
        height, width = array.shape[:2]
        rgb = torch.from_numpy(array).permute(2, 0, 1).float().div(255.0)[None]
        pred_depth = None
        instances = None
        if "depth" in tasks:
            # As in evaluation: the training crop's height and, with sliding windows, the image's aspect
            # (width a multiple of the backbone stride, at least one window); without them, one window.
            window = depth_window_width(cfg)
            net_h = int(cfg.data.crop_size[0])
            net_w = window
            if cfg.eval.sliding_window:
                net_w = max(window, round(width * net_h / height / 32) * 32)
            resized = F.interpolate(rgb, size=(net_h, net_w), mode="bilinear", align_corners=False)
            pred = predict_depth_tta(
                solver.predict_depth,
                resized.to(device),
                window_width=window,
                sliding_window=cfg.eval.sliding_window,
                flip=cfg.eval.flip,
            )
            check_finite_predictions(pred, f"depth of {path}")
            pred_depth = F.interpolate(
                pred.float().cpu(), size=(height, width), mode="bilinear", align_corners=False
            )
            # As the evaluation protocol does, predictions are clipped below at min_depth: in the PNG's NYU
            # convention 0 means "no measurement", which a prediction never is.
            pred_depth = pred_depth.clamp(min=cfg.eval.min_depth)
            target = out_dir / f"{path.stem}_depth.png"
            _write_depth_png(target, pred_depth[0, 0].numpy())
            written.append(target)
        task = next((t for t in tasks if t in ("insseg", "det")), None)
        if task is not None:
            from ait_data import InstanceTransform

            sample = {
                "image": array,
                "boxes": np.zeros((0, 4), np.float32),
                "labels": np.zeros((0,), np.int64),
                "masks": np.zeros((0, height, width), bool),
                "image_id": 0,
            }
            prepared = InstanceTransform(train=False, canvas=cfg.model.canvas, normalize=True)(sample)
            results = solver.predict_instances(
                prepared["image"][None].to(device),
                scale=prepared["scale"],
                orig_size=(height, width),
                generator=generator,
            )
            instances = [{k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in results[0].items()}]
        figure = out_dir / f"{path.stem}_prediction.png"
        save_prediction_grid(
            figure,
            rgb,
            None,
            pred_depth,
            instances=instances,
            score_threshold=cfg.eval.score_threshold or 0.3,
        )
        written.append(figure)
    return written
