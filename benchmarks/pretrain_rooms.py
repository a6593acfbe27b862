"""Self-supervised backbone for the demo: SimMIM-style masked image modelling on rendered rooms.

    python benchmarks/pretrain_rooms.py --out DIR [--steps 3000] [--batch 64] [--rooms 4000] [--threads 1]

Pretrains `cpu_joint_demo`'s backbone (`swinv2-convstem-cpu`) without labels: only the RGB images of the
synthetic rooms' *train* split are read (never a depth map, a mask or a class; never a held-out room), with
60 % of the 8x8 squares of each image hidden and predicted back (`ait_backbone.simmim`). The solver sees two
kinds of input (depth images in [0, 1], instance images normalised with the COCO mean and std), so every
batch holds both. Writes `DIR/backbone.safetensors` (`model.backbone_checkpoint=` loads it) and
`DIR/pretrain.json` (settings, loss curve, CPU minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def render_rooms(count: int):
    """(count, 3, 64, 64) uint8 images of the demo's train split (the same renderer and settings)."""
    import numpy as np
    import torch

    from ait.config import create_config
    from ait_data import SyntheticRooms

    data = create_config("cpu_joint_demo").data
    height, width = data.image_size
    rooms = SyntheticRooms(
        length=count,
        height=height,
        width=width,
        seed=data.synthetic_seed,
        split="train",
        num_objects=tuple(data.synthetic_objects),
    )
    images = np.stack([rooms[i]["image"] for i in range(count)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def batches(images, batch: int, seed: int):
    """Endless random batches, flipped at random; half of each batch COCO-normalised, half in [0, 1]."""
    import torch

    from ait_data import COCO_MEAN, COCO_STD

    mean = torch.tensor(COCO_MEAN).view(1, 3, 1, 1) / 255
    std = torch.tensor(COCO_STD).view(1, 3, 1, 1) / 255
    generator = torch.Generator().manual_seed(seed)
    while True:
        index = torch.randint(len(images), (batch,), generator=generator)
        x = images[index].float() / 255
        flip = torch.rand(batch, generator=generator) < 0.5
        x[flip] = x[flip].flip(-1)
        half = batch // 2
        x[half:] = (x[half:] - mean) / std
        yield x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rooms", type=int, default=4000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--mask-ratio", type=float, default=0.6)
    parser.add_argument("--mask-patch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.steps, args.batch, args.rooms, args.threads) <= 0:
        parser.error("--steps, --batch, --rooms and --threads must be positive")

    import torch

    from ait.config import create_config
    from ait_backbone import create_backbone
    from ait_backbone.simmim import SimMIM, pretrain_simmim, save_backbone

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model_cfg = create_config("cpu_joint_demo").model
    backbone = create_backbone(
        model_cfg.backbone, drop_path_rate=model_cfg.backbone_drop_path, **model_cfg.backbone_overrides
    )
    mim = SimMIM(backbone, mask_patch=args.mask_patch, mask_ratio=args.mask_ratio)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    images = render_rooms(args.rooms)

    def log(step: int, loss: float) -> None:
        if step % 100 == 0 or step == 1:
            print(
                f"step {step}/{args.steps} loss {loss:.4f} ({time.perf_counter() - wall_start:.0f} s)",
                flush=True,
            )

    losses = pretrain_simmim(
        mim, batches(images, args.batch, args.seed), args.steps, lr=args.lr, seed=args.seed, log=log
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = save_backbone(backbone, args.out / "backbone.safetensors")
    record = {
        "backbone": model_cfg.backbone,
        "steps": args.steps,
        "batch": args.batch,
        "rooms": args.rooms,
        "lr": args.lr,
        "mask_ratio": args.mask_ratio,
        "mask_patch": args.mask_patch,
        "seed": args.seed,
        "torch_threads": args.threads,
        "cpu_minutes": (time.process_time() - cpu_start) / 60,
        "wall_minutes": (time.perf_counter() - wall_start) / 60,
        "loss_first_100": sum(losses[:100]) / min(100, len(losses)),
        "loss_last_100": sum(losses[-100:]) / min(100, len(losses)),
        "loss_every_100": [
            round(sum(losses[i : i + 100]) / len(losses[i : i + 100]), 4) for i in range(0, len(losses), 100)
        ],
    }
    (args.out / "pretrain.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in record.items() if k != "loss_every_100"}), flush=True)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
