"""Image and depth file reading with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# Modes whose pixels are wider than 8 bits. PIL's convert("RGB") clips them at 255 instead of scaling, so
# a 16-bit greyscale photo (values up to 65535) came out almost white.
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_BACKGROUND = (255, 255, 255)  # transparent pixels show as on a white page, as image viewers do


def to_rgb(image: Image.Image) -> np.ndarray:
    """Writable uint8 (H, W, 3) RGB of what ``image`` shows, whatever its mode and bit depth.

    16- and 32-bit greyscale is scaled to 8 bits (a 16-bit file by its full range, 65535 -> 255; an integer
    or float image holding values beyond 16 bits by its own maximum); transparency (RGBA, LA, PA, a palette
    or greyscale image with a transparent colour) is composited over white; palette, 1-bit, greyscale, CMYK
    and YCbCr images convert to the colours they show.
    """
    mode = image.mode
    if mode in _WIDE_GREY:
        grey = np.asarray(image, dtype=np.float64)
        grey = np.nan_to_num(grey, nan=0.0, posinf=0.0, neginf=0.0)
        top = float(grey.max()) if grey.size else 0.0
        if mode == "F" and top <= 1.0:
            full = 1.0  # a float image in [0, 1]
        else:
            full = 65535.0 if top <= 65535 else top
        grey = np.clip(grey / full * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("PA", "LA", "La", "RGBa") or (mode in ("P", "L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        background = Image.new("RGBA", image.size, (*_BACKGROUND, 255))
        image = Image.alpha_composite(background, image)
    return np.array(image.convert("RGB"), dtype=np.uint8)  # np.array: writable (torch.from_numpy warns)


def read_rgb(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB of what the file shows (every mode and bit depth: see ``to_rgb``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            return to_rgb(img)
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
