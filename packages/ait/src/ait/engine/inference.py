"""Loading a trained solver (a checkpoint, a run folder, an original file) and reading images for it.

Prediction itself is `ait.api.Solver.predict`; `ait predict` is `ait.predict.predict_to_folder`.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ait.config.schema import Config
from ait.engine.checkpoint import (
    check_config_compatible,
    check_finite_weights,
    load_checkpoint,
    load_model_weights,
    resolve_checkpoint,
    saved_config,
    stored_tokenizer_configs,
)
from ait.engine.ema import delivered_weights

__all__ = ["check_finite_predictions", "load_image", "load_solver"]


def load_solver(
    checkpoint: str | os.PathLike,
    cfg: Config | None = None,
    device: str | torch.device = "cpu",
    overrides: list[str] | dict | None = None,
) -> tuple[torch.nn.Module, Config]:
    """The solver stored in `checkpoint`, in eval mode, and the config it runs with.

    `checkpoint`: one of our solver checkpoints, a run folder (its newest checkpoint) or one of the original
    release's files. The run's own saved config is used unless `cfg` is given (e.g. `--config NAME`, needed
    for the original's ablations whose weights match another config's); `overrides` (`--cfg-options`, e.g.
    data paths on another machine, model.top_p, eval.flip) apply on top. The result must have the checkpoint's
    architecture (model.* keys, file paths and decoding settings aside) or this is a ValueError listing the
    differences. The checkpoint holds the frozen tokenizers' weights, so their original files are not needed.
    """
    from ait.config import ConfigError, apply_overrides, create_config
    from ait.model import build_task_solver
    from ait.original import infer_original_config, load_original_solver, read_original_solver

    checkpoint = resolve_checkpoint(checkpoint)
    original = read_original_solver(checkpoint)  # the original release's files, recognised by content
    if original is not None:
        if cfg is None and overrides:
            name, _ = infer_original_config(original, str(checkpoint))
            cfg = create_config(name)
        if cfg is not None and overrides:
            cfg = apply_overrides(copy.deepcopy(cfg), overrides).validate()
        return load_original_solver(checkpoint, cfg, device, state=original)
    state = load_checkpoint(checkpoint, map_location="cpu")
    weights = delivered_weights(state)  # the run's weight average where it kept one
    check_finite_weights(weights, checkpoint)
    run_cfg = saved_config(state, checkpoint) if cfg is None else copy.deepcopy(cfg)
    if overrides:
        run_cfg = apply_overrides(run_cfg, overrides).validate()
    if cfg is not None or overrides:
        try:
            check_config_compatible(state, run_cfg, checkpoint, architecture_only=True)
        except ConfigError:
            # a saved config this version cannot read: the named config stands in for it, and the strict
            # weight load below still names every tensor that does not fit
            if cfg is None:
                raise
    build_cfg = copy.deepcopy(run_cfg)
    # weights come from the checkpoint: build from presets only, do not look for the original files
    build_cfg.model.backbone_checkpoint = None
    for ref in (build_cfg.model.depth_tokenizer, build_cfg.model.mask_tokenizer):
        if ref is not None:
            ref.checkpoint = None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*UNTRAINED.*")
        solver = build_task_solver(build_cfg, tokenizer_configs=stored_tokenizer_configs(state, checkpoint))
    load_model_weights(solver, weights, checkpoint)
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
            from ait_data.io import to_rgb  # 16-bit grey, alpha, palette, CMYK: the picture they show

            return to_rgb(image)
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
