"""Shared fixtures of the application's tests."""

from __future__ import annotations

import json
import warnings

import pytest
import torch


def save_untrained_run(run_dir, name="cpu_joint_tiny", step=1, config_json=None, overrides=None):
    """A run folder with one solver checkpoint of config `name` + `overrides` (untrained weights: the
    mechanics only); `config_json` replaces the config saved in it."""
    from ait.config import create_config
    from ait.engine import CHECKPOINT_FORMAT
    from ait.model import build_task_solver

    cfg = create_config(name, {"work_dir": str(run_dir), **(overrides or {})})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_task_solver(cfg)
    path = run_dir / "checkpoints" / f"iter_{step:07d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": CHECKPOINT_FORMAT,
        "config": config_json or cfg.to_json(),
        "config_name": cfg.name,
        "tokenizers": json.dumps(model.tokenizer_configs()),
        "step": step,
        "model": model.state_dict(),
    }
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def untrained_run():
    """save_untrained_run(run_dir, name, step, config_json, overrides) -> the checkpoint's path."""
    return save_untrained_run
