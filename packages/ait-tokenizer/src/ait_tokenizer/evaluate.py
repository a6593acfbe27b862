"""Reconstruction quality of a trained tokenizer: decode(encode(x)) against the ground truth.

    python -m ait_tokenizer.evaluate synthetic --checkpoint /tmp/tok/depth/final.safetensors --maps 256
    python -m ait_tokenizer.evaluate nyu --checkpoint ... --root fixtures/nyu_sample
    python -m ait_tokenizer.evaluate coco --checkpoint ... --ann-file fixtures/coco_sample/annotations/instances_train2017_coco8.json

- synthetic: held-out rooms (split "test"); the input is the depth with sensor holes, the reconstruction is
  scored against the complete depth the generator knows (everywhere, and on the holes alone) and against
  the valid input pixels;
- nyu: every 16-bit depth PNG under ``--root``; the Eigen crop (rows 45:471, columns 41:601) is shrunk by
  nearest neighbour (holes stay holes) to ``--height`` rows and a width divisible by the downsample, run
  through the tokenizer fully convolutionally, and the reconstruction is scored both at that size and
  upsampled (bilinear) to full resolution, on the valid ground-truth pixels;
- coco: maskcoco crops (64x64, boxes >= 2 px, non-crowd) of a COCO annotation file: mean IoU and boundary IoU.

Each also reports the codebook utilisation (perplexity, fraction of codes used) over the evaluated tokens.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ait_tokenizer.checkpoint import load_tokenizer
from ait_tokenizer.model import VQVAETokenizer
from ait_tokenizer.quantizer import utilisation


@torch.no_grad()
def reconstruct(
    tokenizer: VQVAETokenizer, x: torch.Tensor, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstructions (B,1,H,W), ids (B,h,w)) in eval mode, batch by batch."""
    tokenizer.eval()
    recons, ids = [], []
    for start in range(0, len(x), batch_size):
        codes = tokenizer.encode(x[start : start + batch_size])
        ids.append(codes)
        recons.append(tokenizer.decode(codes))
    return torch.cat(recons), torch.cat(ids)


def _usage(tokenizer: VQVAETokenizer, ids: torch.Tensor) -> dict[str, float]:
    return utilisation(torch.bincount(ids.flatten(), minlength=tokenizer.num_codes).float())


def _rmse(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a[where] - b[where]) ** 2))) if where.any() else float("nan")


def evaluate_synthetic(
    tokenizer: VQVAETokenizer,
    maps: int = 256,
    split: str = "test",
    seed: int = 0,
    extra_hole_ratio: float = 0.0,
    extra_hole_size: int = 8,
) -> dict:
    """Held-out synthetic maps; ``extra_hole_ratio`` > 0 also blanks that share of ``extra_hole_size`` squares
    of each input (seeded), a stand-in for the large dropouts real sensors have (windows, black surfaces)."""
    from ait_eval import depth_reconstruction_scores
    from ait_tokenizer.augment import mask_augment
    from ait_tokenizer.data import SyntheticDepthMaps

    dataset = SyntheticDepthMaps(maps, tokenizer.config.input_size, split, seed, flip=False)
    samples = [dataset[i] for i in range(len(dataset))]
    x = torch.stack([s["x"] for s in samples])
    if extra_hole_ratio > 0:
        generator = torch.Generator().manual_seed(seed)
        x = mask_augment(x, ratio=extra_hole_ratio, patch_size=extra_hole_size, generator=generator)
    complete = torch.stack([s["complete"] for s in samples])[:, 0].numpy()
    recon, ids = reconstruct(tokenizer, x)
    recon, depth = recon[:, 0].numpy(), x[:, 0].numpy()
    holes = depth <= 0
    versus_complete = depth_reconstruction_scores(recon, complete, eigen_crop=False)
    versus_valid = depth_reconstruction_scores(recon, depth, eigen_crop=False)
    return {
        "maps": maps,
        "extra_hole_ratio": extra_hole_ratio,
        "hole_fraction": float(holes.mean()),
        "rmse_complete": versus_complete["rmse"],  # macro over maps, all pixels vs the complete depth
        "abs_rel_complete": versus_complete["abs_rel"],
        "d1_complete": versus_complete["d1"],
        "rmse_holes": _rmse(recon, complete, holes),  # pooled over the invalid input pixels only
        "rmse_valid": versus_valid["rmse"],  # macro, the valid input pixels vs themselves
        **_usage(tokenizer, ids),
    }


def nyu_depth_files(root: Path) -> list[Path]:
    files = sorted(p for p in root.rglob("*depth*.png"))
    if not files:
        raise FileNotFoundError(f"no depth PNG found under {root}")
    return files


def evaluate_nyu(tokenizer: VQVAETokenizer, root: str | Path, height: int = 64) -> dict:
    from ait_eval import depth_reconstruction_scores

    files = nyu_depth_files(Path(root))
    from ait_data.io import read_depth_png  # checks the PNG really is 16-bit millimetres
    from ait_eval import EIGEN_CROP_480x640

    top, bottom, left, right = EIGEN_CROP_480x640
    gts = [read_depth_png(p)[top:bottom, left:right] for p in files]
    full_size = gts[0].shape
    ds = tokenizer.downsample
    height = max(ds, round(height / ds) * ds)
    width = max(ds, round(height * full_size[1] / full_size[0] / ds) * ds)
    gt = torch.from_numpy(np.stack(gts))[:, None]
    small = F.interpolate(gt, size=(height, width), mode="nearest")  # holes stay 0, depths unmixed
    recon, ids = reconstruct(tokenizer, small)
    upsampled = F.interpolate(recon, size=full_size, mode="bilinear", align_corners=False)
    at_size = depth_reconstruction_scores(recon[:, 0].numpy(), small[:, 0].numpy(), eigen_crop=False)
    full = depth_reconstruction_scores(upsampled[:, 0].numpy(), gt[:, 0].numpy(), eigen_crop=False)
    keys = ("rmse", "abs_rel", "d1", "rmse_log", "silog_ait")
    return {
        "maps": [str(p.relative_to(root)) for p in files],
        "tokenizer_size": [height, width],
        "hole_fraction": float((gt <= 0).float().mean()),
        **{f"{k}_at_tokenizer_size": at_size[k] for k in keys},
        **{f"{k}_full_resolution": full[k] for k in keys},
        **_usage(tokenizer, ids),
    }


def evaluate_coco(tokenizer: VQVAETokenizer, ann_file: str | Path) -> dict:
    from ait_eval import mask_reconstruction_scores
    from ait_tokenizer.data import coco_instance_crops

    size = tokenizer.config.input_size[0]
    crops = coco_instance_crops(str(ann_file), size)
    recon, ids = reconstruct(tokenizer, torch.from_numpy(crops).float()[:, None])
    scores = mask_reconstruction_scores(crops, recon[:, 0].numpy())
    return {"masks": len(crops), **scores, **_usage(tokenizer, ids)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m ait_tokenizer.evaluate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("target", choices=["synthetic", "nyu", "coco"])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--maps", type=int, default=256, help="synthetic: held-out maps")
    parser.add_argument("--seed", type=int, default=0, help="synthetic: data seed")
    parser.add_argument("--extra-holes", type=float, default=0.0, help="synthetic: share of squares blanked")
    parser.add_argument(
        "--extra-hole-size", type=int, default=8, help="synthetic: side of those squares (px)"
    )
    parser.add_argument("--root", type=Path, help="nyu: folder searched for *depth*.png")
    parser.add_argument("--height", type=int, default=64, help="nyu: rows fed to the tokenizer")
    parser.add_argument("--ann-file", type=Path, help="coco: instances json")
    args = parser.parse_args(argv)
    tokenizer = load_tokenizer(args.checkpoint)
    if args.target == "synthetic":
        result = evaluate_synthetic(
            tokenizer,
            args.maps,
            seed=args.seed,
            extra_hole_ratio=args.extra_holes,
            extra_hole_size=args.extra_hole_size,
        )
    elif args.target == "nyu":
        if args.root is None:
            parser.error("nyu needs --root")
        result = evaluate_nyu(tokenizer, args.root, args.height)
    else:
        if args.ann_file is None:
            parser.error("coco needs --ann-file")
        result = evaluate_coco(tokenizer, args.ann_file)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
