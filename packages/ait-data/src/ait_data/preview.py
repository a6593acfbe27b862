"""Render a few synthetic rooms to a PNG grid: RGB | depth (colour map, invalid black) | instance overlay.

python -m ait_data.preview --out rooms.png --num 4 --size 240x320 --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ait_data.synthetic import CATEGORY_NAMES, SyntheticRooms


def colorize_depth(depth: np.ndarray, max_depth: float | None = None, cmap: str = "turbo") -> np.ndarray:
    """Depth (H,W) metres -> uint8 RGB (H,W,3) with a matplotlib colour map; invalid (<= 0) pixels black."""
    from matplotlib import colormaps

    valid = depth > 0
    top = max_depth if max_depth is not None else (float(depth[valid].max()) if valid.any() else 1.0)
    rgb = colormaps[cmap](np.clip(depth / max(top, 1e-6), 0, 1))[..., :3]
    rgb = (rgb * 255).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def instance_palette(n: int) -> np.ndarray:
    """n well-separated colours (golden-ratio hues)."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    k = (np.array([5.0, 3.0, 1.0])[None] + hues[:, None] * 6) % 6
    return ((1 - 0.75 * np.clip(np.minimum(k, 4 - k), 0, 1)) * 255).astype(np.uint8)


def overlay_instances(
    image: np.ndarray, masks: np.ndarray, boxes: np.ndarray, labels: np.ndarray
) -> Image.Image:
    """Image with each instance mask tinted, its box outlined and its category written."""
    out = image.astype(np.float32)
    colors = instance_palette(len(masks))
    for mask, color in zip(masks, colors):
        out[mask] = 0.45 * out[mask] + 0.55 * color
    canvas = Image.fromarray(out.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for box, label, color in zip(boxes, labels, colors):
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=tuple(int(c) for c in color))
        draw.text((x1 + 2, y1 + 1), CATEGORY_NAMES[int(label)], fill=(255, 255, 255))
    return canvas


def preview_grid(dataset, indices) -> Image.Image:
    """One row per sample: RGB | depth | overlay."""
    rows = []
    for i in indices:
        s = dataset[i]
        depth = colorize_depth(s["depth"], max_depth=float(s["depth_complete"].max()))
        overlay = np.asarray(overlay_instances(s["image"], s["masks"], s["boxes"], s["labels"]))
        rows.append(np.concatenate([s["image"], depth, overlay], axis=1))
    return Image.fromarray(np.concatenate(rows, axis=0))


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HxW (e.g. 240x320), got {text!r}") from None
    return h, w


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="ait-data-preview", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("synthetic_rooms_preview.png"))
    parser.add_argument("--num", type=int, default=4, help="number of scenes (rows)")
    parser.add_argument("--size", type=_parse_size, default=(240, 320), help="HxW of each scene")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="train")
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f"--num must be >= 1, got {args.num}")
    height, width = args.size
    try:
        dataset = SyntheticRooms(
            length=args.num, height=height, width=width, seed=args.seed, split=args.split
        )
    except ValueError as err:
        parser.error(str(err))

    def body() -> Path:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        preview_grid(dataset, range(args.num)).save(args.out)
        print(f"wrote {args.out} ({args.num} scenes at {height}x{width}: RGB | depth | instances)")
        return args.out

    from ait_data._cli import run_command

    return run_command(body)


def cli(argv: list[str] | None = None) -> int:
    """The console script: `main`, then exit status 0 (a script's `sys.exit(main())` would turn the returned
    path into status 1); failures exit inside `main` with their one-line message."""
    main(argv)
    return 0


if __name__ == "__main__":
    main()
