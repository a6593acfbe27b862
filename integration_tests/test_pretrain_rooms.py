"""The demo's self-supervised backbone: benchmarks/pretrain_rooms.py reads no labels and no held-out room,
and what it writes is what a solver config loads with model.backbone_checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pretrain_rooms


def test_pretraining_uses_train_images_only(monkeypatch):
    from ait_data import SyntheticRooms

    seen = []
    original = SyntheticRooms.__getitem__

    def spy(self, index):
        sample = original(self, index)
        seen.append(self.split)
        return sample

    monkeypatch.setattr(SyntheticRooms, "__getitem__", spy)
    images = pretrain_rooms.render_rooms(6)
    assert images.shape == (6, 3, 64, 64) and images.dtype == torch.uint8
    assert seen and set(seen) == {"train"}


def test_pretrained_backbone_loads_into_the_demo_solver(tmp_path):
    out = tmp_path / "mim"
    assert pretrain_rooms.main(["--out", str(out), "--steps", "3", "--rooms", "8", "--batch", "4"]) == 0
    record = json.loads((out / "pretrain.json").read_text())
    assert record["steps"] == 3 and len(record["loss_every_100"]) == 1
    weights = out / "backbone.safetensors"

    from safetensors.torch import load_file

    from ait.config import create_config
    from ait.model import build_task_solver

    cfg = create_config(
        "cpu_joint_demo",
        {
            "model.backbone_checkpoint": str(weights),
            "model.depth_tokenizer.checkpoint": "untrained",
            "model.mask_tokenizer.checkpoint": "untrained",
        },
    ).validate()
    solver = build_task_solver(cfg)
    stored = load_file(str(weights))
    name = "layers.0.blocks.0.attn.qkv.weight"
    assert torch.equal(solver.backbone.state_dict()[name], stored[name])
