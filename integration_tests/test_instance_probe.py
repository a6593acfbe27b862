"""benchmarks/instance_probe.py: teacher-forced accuracy per token role against the image-blind guess."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import instance_probe

PER_OBJECT = 7  # 4 coordinates, class, 2 mask tokens
NOISE = 99


def _sequences(seed: int, images: int = 5, objects: int = 3):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 20, (images, objects * PER_OBJECT), generator=generator)
    weights = torch.ones_like(targets, dtype=torch.float32)
    targets.view(images, objects, PER_OBJECT)[:, -1, 4] = NOISE  # the last slot of every image is padding
    weights.view(images, objects, PER_OBJECT)[:, -1, :4] = 0  # a padding object's box is not supervised
    return targets, weights


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_an_oracle_scores_one_and_a_constant_answer_scores_the_guess(seed):
    targets, weights = _sequences(seed)
    oracle = instance_probe.role_accuracy(targets, targets.clone(), weights, PER_OBJECT, NOISE)
    assert set(oracle) == {"x1", "y1", "x2", "y2", "class", "class_real", "mask_1"}
    for row in oracle.values():
        assert row["accuracy"] == 1.0
        assert 0.0 < row["image_blind_guess"] <= 1.0
    # answering each role's most frequent target everywhere is exactly the image-blind guess
    role_of = torch.arange(targets.shape[1]) % PER_OBJECT
    constant = targets.clone()
    for role in (0, 3, 5):  # x1, y2, mask_1
        chosen = (weights > 0) & (role_of == role)[None]
        constant[chosen] = targets[chosen].mode().values
    blind = instance_probe.role_accuracy(targets, constant, weights, PER_OBJECT, NOISE)
    for name in ("x1", "y2", "mask_1"):
        assert blind[name]["accuracy"] == pytest.approx(blind[name]["image_blind_guess"])


def test_only_supervised_positions_and_real_classes_count():
    targets, weights = _sequences(0)
    result = instance_probe.role_accuracy(targets, targets, weights, PER_OBJECT, NOISE)
    images = targets.shape[0]
    assert result["x1"]["positions"] == 2 * images  # the padding object's box has weight 0
    assert result["class"]["positions"] == 3 * images  # every object's class token is supervised
    assert result["class_real"]["positions"] == 2 * images
    assert "within_2" in result["x2"] and "within_2" not in result["class"]
    # off by one bin on every x2: no exact hit, all within 2
    shifted = targets.clone()
    shifted.view(images, 3, PER_OBJECT)[..., 2] += 1
    moved = instance_probe.role_accuracy(targets, shifted, weights, PER_OBJECT, NOISE)["x2"]
    assert moved["accuracy"] == 0.0 and moved["within_2"] == 1.0


def test_mismatched_shapes_are_refused():
    targets, weights = _sequences(0)
    with pytest.raises(ValueError, match="share one"):
        instance_probe.role_accuracy(targets, targets[:, :-1], weights, PER_OBJECT)
    with pytest.raises(ValueError, match="multiple of"):
        instance_probe.role_accuracy(targets[:, :-1], targets[:, :-1], weights[:, :-1], PER_OBJECT)


def test_probe_reads_a_trained_run(tmp_path):
    from ait.config import create_config
    from ait.engine import Trainer

    run = tmp_path / "run"
    cfg = create_config(
        "cpu_insseg_tiny", {"work_dir": str(run), "optim.max_iters": 2, "data.synthetic_val_length": 4}
    )
    Trainer(cfg.validate(), device="cpu", evaluate=False).train()
    result = instance_probe.probe(str(run), images=3)
    assert set(result) == {"x1", "y1", "x2", "y2", "class", "class_real", "mask_1"}
    for row in result.values():
        assert row["positions"] > 0 and 0.0 <= row["accuracy"] <= 1.0


def test_where_it_looks_reports_attention_per_block_and_the_memorys_corners(tmp_path):
    from ait.config import create_config
    from ait.engine import Trainer

    run = tmp_path / "run"
    options = {
        "work_dir": str(run),
        "optim.max_iters": 2,
        "data.synthetic_val_length": 4,
        "loss.memory_box_weight": 0.5,
    }
    Trainer(create_config("cpu_insseg_tiny", options).validate(), device="cpu", evaluate=False).train()
    looks = instance_probe.where_it_looks(str(run), images=3)
    solver_blocks = len(looks["attention"])
    assert solver_blocks >= 1
    for row in looks["attention"]:
        assert set(row) == {"x1", "y1", "x2", "y2", "class", "mask_1"}
        assert all(0.0 <= mass <= 1.0 for mass in row.values())
    assert 0.0 < looks["uniform"] <= 1.0
    assert all(0.0 <= share <= 1.0 for share in looks["x1_within_2_by_object"])
    corners = looks["memory_corners_within_2"]
    assert len(corners) == 4 and all(0.0 <= share <= 1.0 for share in corners)
