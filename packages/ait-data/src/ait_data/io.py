"""Image and depth file reading with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


def read_rgb(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB; grey or RGBA files are converted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))  # writable (torch.from_numpy warns otherwise)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode image file {path}: {err}") from err


def read_depth_png(path: Path, scale: float = 1000.0) -> np.ndarray:
    """float32 (H, W) metres from a 16-bit PNG holding millimetres (``value / scale``); 0 stays 0 (invalid)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"depth file not found: {path}")
    try:
        with Image.open(path) as img:
            mode = img.mode
            raw = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode depth file {path}: {err}") from err
    if raw.ndim != 2 or mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise ValueError(
            f"depth file {path} must be a single-channel 16-bit PNG in millimetres, "
            f"got mode {mode!r} with shape {raw.shape}"
        )
    return raw.astype(np.float32) / np.float32(scale)
