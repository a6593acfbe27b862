"""benchmarks/unseen_rooms.py: a trained solver scored on rooms of other generator seeds."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import unseen_rooms


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory):
    from ait.config import create_config
    from ait.engine import Trainer

    run = tmp_path_factory.mktemp("unseen") / "run"
    cfg = create_config(
        "cpu_joint_tiny", {"work_dir": str(run), "optim.max_iters": 2, "data.synthetic_val_length": 4}
    )
    Trainer(cfg.validate(), device="cpu", evaluate=False).train()
    return run


def test_the_runs_own_rooms_score_as_its_evaluation_and_other_seeds_are_other_rooms(joint_run):
    from ait.engine import evaluate_solver
    from ait.engine.inference import load_solver

    result = unseen_rooms.score(str(joint_run), seeds=[0, 5], rooms=4)
    own, unseen = result["rows"]
    assert own["seed"] == 0 and own["own"] and unseen["seed"] == 5 and not unseen["own"]
    # the run's own seed: exactly what evaluating the run gives
    solver, cfg = load_solver(str(joint_run), overrides=["data.synthetic_val_length=4"])
    expected = evaluate_solver(cfg, solver)
    assert own["depth_rmse"] == pytest.approx(expected["depth"]["rmse"], rel=1e-9)
    for row in (own, unseen):
        assert row["depth_ratio"] == pytest.approx(row["depth_rmse"] / row["baseline_rmse"])
        assert all(math.isfinite(row[key]) for key in ("depth_rmse", "baseline_rmse", "box_ap", "mask_ap"))
    # other rooms: the same constant scores differently on them
    assert unseen["baseline_rmse"] != own["baseline_rmse"]
    text = unseen_rooms.table(result)
    assert "0 (the run's own)" in text and "5 (unseen)" in text


def test_bad_arguments_are_refused(joint_run, capsys):
    with pytest.raises(SystemExit):
        unseen_rooms.main([str(joint_run), "--rooms", "0"])
    assert "--rooms must be >= 1" in capsys.readouterr().err
