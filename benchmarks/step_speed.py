"""The demo's training step, variant against variant, side by side in one process.

    python benchmarks/step_speed.py [--threads 2] [--blocks 4] [--steps 8] --tokenizers DIR [--out FILE]

Builds `cpu_joint_demo` once per variant (same seed, same tokenizers: a demo run's `tokenizers/` folder),
warms each up, then times blocks of `--steps` training steps round-robin (variant A's block, B's, C's, A's
again...) so that a neighbour's load falls on every variant alike; the figure per variant is its fastest
block. Variants:

- `eager`: the demo's step as it runs today (fp32);
- `compile_backbone`: the backbone under `torch.compile` (inductor's CPU code generation; needs a C++
  compiler; the first steps include compiling, reported apart as `compile_s`);
- `bf16`: the step under bf16 autocast (`optim.amp=bf16`), which pays off where the CPU has AMX.

Two one-thread DDP processes are timed by the training log instead (`torchrun --nproc-per-node 2 -m ait
train cpu_joint_demo --cfg-options num_threads=1 ...`), as separate processes cannot share a round-robin.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

VARIANTS = ("eager", "compile_backbone", "bf16")


def build(variant: str, tokenizers: Path, work_dir: Path, threads: int):
    from ait.config import create_config
    from ait.engine.trainer import Trainer

    overrides = {
        "work_dir": str(work_dir),
        "progress": False,
        "num_threads": threads,
        "model.depth_tokenizer.checkpoint": str(tokenizers / "depth" / "final.safetensors"),
        "model.mask_tokenizer.checkpoint": str(tokenizers / "mask" / "final.safetensors"),
    }
    if variant == "bf16":
        overrides["optim.amp"] = "bf16"
    cfg = create_config("cpu_joint_demo", overrides).validate()
    trainer = Trainer(cfg, device="cpu", evaluate=False)
    if variant == "compile_backbone":
        import torch

        trainer.model.backbone = torch.compile(trainer.model.backbone)
    return trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizers", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ait_step_speed_"))
    # a fresh compile cache: the first steps pay the whole compilation, as on a fresh machine
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor_cache")

    import torch
    from run import cpu_kind

    torch.set_num_threads(args.threads)
    trainers, warmup_s = {}, {}
    try:
        for variant in args.variants:
            trainer = build(variant, args.tokenizers, root / variant, args.threads)
            start = time.perf_counter()
            for _ in range(3):
                trainer._train_step()
            warmup_s[variant] = time.perf_counter() - start
            trainers[variant] = trainer
        blocks: dict[str, list[float]] = {v: [] for v in trainers}
        for _ in range(args.blocks):
            for variant, trainer in trainers.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    trainer._train_step()
                blocks[variant].append((time.perf_counter() - start) / args.steps)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    images = 16  # 8 depth + 8 instance images per demo step
    eager = min(blocks["eager"]) if "eager" in blocks else None
    rows = {}
    for variant, times in blocks.items():
        best = min(times)
        rows[variant] = {
            "step_ms": 1000 * best,
            "images_per_s": images / best,
            "speedup_vs_eager": (eager / best) if eager else None,
            "first_3_steps_s": warmup_s[variant],
            "blocks_ms": [round(1000 * t, 1) for t in times],
        }
        print(
            f"{variant:17s} {1000 * best:7.1f} ms/step  {images / best:5.1f} img/s  "
            f"x{(eager / best) if eager else float('nan'):.2f} vs eager  (first 3 steps {warmup_s[variant]:.1f} s)",
            flush=True,
        )
    record = {"threads": args.threads, "cpu_kind": cpu_kind(), "torch": torch.__version__, "variants": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
