"""Run by the integration tests, alone or under torchrun: train a config, then save this rank's weights.

    python integration_tests/_train_worker.py CONFIG OUT_DIR KEY=VALUE ...
    torchrun --nproc-per-node 2 integration_tests/_train_worker.py CONFIG OUT_DIR KEY=VALUE ...

Writes OUT_DIR/rank{RANK}.pt (the model's state_dict after training) so the test can compare ranks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ait.config import create_config
from ait.engine import Trainer, cleanup_distributed, init_distributed


def main() -> None:
    name, out_dir, *options = sys.argv[1:]
    cfg = create_config(name, [*options, f"work_dir={out_dir}"])
    dist_info = init_distributed("cpu")
    try:
        trainer = Trainer(cfg, dist_info=dist_info, evaluate=False)
        trainer.train()
        torch.save(trainer.model.state_dict(), Path(out_dir) / f"rank{dist_info.rank}.pt")
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()
