"""benchmarks/levers.py: every lever is a valid variant of the demo's config, and the stored runs render."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import levers

BENCHMARKS = Path(levers.__file__).resolve().parent


@pytest.mark.parametrize("name", sorted(levers.LEVERS))
def test_every_lever_is_a_valid_demo_config(name, tmp_path):
    from ait.config import create_config

    options, note = levers.LEVERS[name]
    assert note
    options = [option.replace("{pretrained}", str(tmp_path / "backbone.safetensors")) for option in options]
    base = [*levers.LEVER_BASE, "optim.max_iters=2000"]
    config_options, restart = levers.split_restart(levers.resolve_options(options, 2000))
    assert restart is None or 0 < restart < 2000
    cfg = create_config("cpu_joint_demo", base + config_options)
    baseline = create_config("cpu_joint_demo", base)
    # a lever changes something, except the unchanged demo itself
    assert (cfg.to_json() != baseline.to_json() or restart is not None) == (name != "demo")


def test_the_demo_lever_on_top_of_the_base_is_the_demo():
    from ait.config import create_config

    options, _ = levers.LEVERS[levers.DEMO_LEVER]
    steps = ["optim.max_iters=2000"]
    demo = create_config("cpu_joint_demo", steps)
    assert create_config("cpu_joint_demo", [*levers.LEVER_BASE, *steps, *options]).to_json() == demo.to_json()
    # and the base alone is not the demo: the pins move what the demo has moved
    assert create_config("cpu_joint_demo", [*levers.LEVER_BASE, *steps]).to_json() != demo.to_json()


def test_stored_runs_render_one_row_per_lever():
    stored = sorted((BENCHMARKS / "levers").glob("*.json"))
    assert stored
    table = levers.table(stored).splitlines()
    names = {line.split("|")[1].strip() for line in table[2:]}
    for name in names:
        assert name in levers.LEVERS or name.removesuffix("_p2") in levers.LEVERS
    assert len(table) == 2 + len(names)


def test_a_detection_phase_given_as_a_fraction_becomes_steps():
    resolved = levers.resolve_options(["curriculum.detection_iters=0.3", "model.object_order=area"], 2000)
    assert resolved == ["curriculum.detection_iters=600", "model.object_order=area"]
    assert levers.resolve_options(["curriculum.detection_iters=500"], 2000) == [
        "curriculum.detection_iters=500"
    ]


def test_a_restart_splits_the_run_into_two_schedules(tmp_path):
    from ait.config import create_config
    from ait.engine import read_metrics

    options, restart = levers.split_restart(
        levers.resolve_options(["lever.restart_at=0.5", "model.object_order=area"], 6)
    )
    assert options == ["model.object_order=area"] and restart == 3
    cfg = create_config(
        "cpu_joint_tiny",
        {
            "progress": False,
            "optim.max_iters": 6,
            "optim.warmup_iters": 2,
            "checkpoint_interval": 0,
            "log_interval": 1,
            "work_dir": str(tmp_path / "run"),
        },
    )
    messages: list[str] = []
    trainer, result = levers.train_with_restart(cfg, restart, evaluate=False, log=messages.append)
    first = tmp_path / "run" / "first_part"
    assert (first / "first_part_final.pt").is_file()
    # the second part: the rest of the steps, from the first part's weights, with a fresh warm-up
    assert trainer.cfg.optim.max_iters == 3 and result.step == 3
    assert trainer.cfg.optim.warmup_iters == 1  # the run's 2 warm-up steps over 6, scaled to the part's 3
    assert trainer.cfg.load_from == str(first / "first_part_final.pt")
    assert any("first_part_final.pt" in m and "0 skipped" in m for m in messages)
    first_lrs = [r["lr"] for r in read_metrics(first) if r.get("kind") == "train"]
    second_lrs = [r["lr"] for r in read_metrics(tmp_path / "run") if r.get("kind") == "train"]
    assert len(first_lrs) == 3 and len(second_lrs) == 3
    assert first_lrs[-1] < first_lrs[1] and second_lrs[1] > first_lrs[-1]  # warmed up again after the decay


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["loss.attention_guide_weight=1.0"],
        ["loss.memory_rank_weight=0.5"],
        ["model.coordinate_embedding=sine"],
    ],
)
def test_an_instance_only_run_is_a_valid_demo_config_without_depth(extra, tmp_path):
    import instance_only

    from ait.config import create_config

    cfg = create_config("cpu_joint_demo", instance_only.options(2000, 0, tmp_path, extra)).validate()
    assert cfg.model.tasks == ("insseg",) and cfg.data.depth_batch == 0 and cfg.model.depth_tokenizer is None
    assert cfg.optim.max_iters == 2000 and cfg.num_threads == 1


def test_the_last_weights_are_scored_from_the_checkpoint_and_the_average_is_put_back(tmp_path):
    import torch

    from ait.engine.checkpoint import CHECKPOINT_FORMAT, atomic_torch_save

    solver = torch.nn.Linear(3, 2)
    last = {key: torch.full_like(value, 2.0) for key, value in solver.state_dict().items()}
    checkpoint = atomic_torch_save(
        {"format": CHECKPOINT_FORMAT, "model": last, "config": "{}", "step": 7}, tmp_path / "final.pt"
    )
    averaged = {key: value.clone() for key, value in solver.state_dict().items()}

    seen = levers.score_checkpoint_weights(solver, checkpoint, lambda: float(solver.weight.detach().sum()))
    assert seen == 2.0 * solver.weight.numel()
    for key, value in solver.state_dict().items():
        assert torch.equal(value, averaged[key])

    def failing_score():
        raise RuntimeError("evaluation failed")

    with pytest.raises(RuntimeError, match="evaluation failed"):
        levers.score_checkpoint_weights(solver, checkpoint, failing_score)
    for key, value in solver.state_dict().items():
        assert torch.equal(value, averaged[key])
