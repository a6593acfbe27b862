"""The demo's solver trained on instances alone, at the memory-box recipe: a quick proxy for instance levers.

    python benchmarks/instance_only.py NAME --tokenizers DIR [--steps 2000] [--seed 0] [--out DIR]
        [--cfg-options KEY=VALUE ...] [--probe]

`cpu_joint_demo` with `model.tasks=insseg` (8 instance images per step, no depth), `--steps` steps with
their own warm-up and decay, one torch thread, over a demo run's `tokenizers/`; scored on the demo's 64
held-out rooms. Writes `OUT/NAME/result.json` (box AP, AP50, mask AP, AP50, CPU minutes) and, with
`--probe`, prints `instance_probe.py --attention` on the trained solver. An instance step costs about
half a joint one, so a lever screens here in about 6 CPU minutes before a joint run (`levers.py`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import DEMO_KNOBS_BEFORE_TUNING, ONE_DECODE

HERE = Path(__file__).resolve().parent

INSTANCE_ONLY = [
    "model.tasks=insseg",
    "data.depth_batch=0",
    "model.depth_tokenizer=None",
    'model.decoding={"insseg": "autoregressive"}',
]
# the recipe every stored instance-only run and bench_check's held-out instance guard were measured at: the
# memory-box recipe with the demo's knobs before tuning (--cfg-options sets them)
MEASURED_AT = DEMO_KNOBS_BEFORE_TUNING


def base_options(steps: int, seed: int) -> list[str]:
    """`cpu_joint_demo` on instances alone: a complete one-thread run of `steps` steps (also bench_check's)."""
    return [
        *INSTANCE_ONLY,
        *MEASURED_AT,
        *ONE_DECODE,
        f"optim.max_iters={steps}",
        f"optim.warmup_iters={max(1, steps // 20)}",
        "checkpoint_interval=0",
        "num_threads=1",
        f"seed={seed}",
        "progress=False",
    ]


def options(steps: int, seed: int, work_dir: Path, extra: list[str]) -> list[str]:
    """The cfg options of one instance-only run on top of `cpu_joint_demo`."""
    return [*base_options(steps, seed), f"work_dir={work_dir}", "log_interval=250", *extra]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--tokenizers", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("instance_only"))
    parser.add_argument("--cfg-options", nargs="*", default=[])
    parser.add_argument("--probe", action="store_true")
    args = parser.parse_args(argv)
    if args.steps <= 0:
        parser.error("--steps must be positive")
    mask_ckpt = args.tokenizers / "mask" / "final.safetensors"
    if not mask_ckpt.is_file():
        parser.error(f"{mask_ckpt} is missing; pass --tokenizers DIR/tokenizers of a demo run")

    import torch

    from ait.demo import demo_configs
    from ait.engine import evaluate_solver
    from ait.engine.curriculum import train_with_curriculum

    run_dir = args.out / args.name
    torch.set_num_threads(1)
    _, _, solver_cfg = demo_configs(
        run_dir / "tmp", cfg_options=options(args.steps, args.seed, run_dir, args.cfg_options)
    )
    cfg = solver_cfg(args.tokenizers / "depth" / "final.safetensors", mask_ckpt)
    start = time.process_time()
    trainer, _ = train_with_curriculum(cfg, evaluate=False)
    cpu_minutes = (time.process_time() - start) / 60
    metrics = evaluate_solver(cfg, trainer.model.eval())["insseg"]
    result = {
        "name": args.name,
        "steps": args.steps,
        "seed": args.seed,
        "cfg_options": args.cfg_options,
        "cpu_minutes": cpu_minutes,
        "box_ap": metrics["bbox"]["AP"],
        "box_ap50": metrics["bbox"]["AP50"],
        "mask_ap": metrics["segm"]["AP"],
        "mask_ap50": metrics["segm"]["AP50"],
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    if args.probe:
        subprocess.run(
            [sys.executable, str(HERE / "instance_probe.py"), str(run_dir), "--attention"], check=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
