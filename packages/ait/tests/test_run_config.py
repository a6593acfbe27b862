"""A run carries its config: `ait train --resume RUN_DIR` continues with the saved one, options on top.

(The whole train -> kill -> resume -> eval -> predict chain runs in integration_tests/test_user_workflow.py.)
"""

from __future__ import annotations

import json

import pytest

from ait.cli import _resumed_config, main
from ait.config import ConfigError, create_config
from ait.engine.checkpoint import read_saved_config


def _run_with(tmp_path, untrained_run, **changes):
    """A run folder whose saved cpu_joint_tiny config differs from the registry's by `changes`."""
    cfg = create_config("cpu_joint_tiny", {"work_dir": "/elsewhere/on/the/training/machine", **changes})
    run = tmp_path / "run"
    untrained_run(run, step=3, config_json=cfg.to_json())
    return run


def test_resume_continues_with_the_saved_config_in_the_run_folder(tmp_path, untrained_run):
    run = _run_with(tmp_path, untrained_run, **{"optim.max_iters": 7, "optim.lr": 3e-4})
    cfg, checkpoint = _resumed_config(str(run), None, [])
    assert checkpoint == run / "checkpoints" / "iter_0000003.pt"
    assert (cfg.optim.max_iters, cfg.optim.lr) == (7, 3e-4)  # not the registry's 20 and 1e-3
    assert cfg.work_dir == str(run)  # the folder it was found in, wherever it was trained
    # options apply on top, a checkpoint file works as the folder does, and a moved work_dir is kept
    cfg, _ = _resumed_config(
        str(checkpoint), "cpu_joint_tiny", ["data.num_workers=2", f"work_dir={tmp_path}"]
    )
    assert cfg.data.num_workers == 2 and cfg.optim.max_iters == 7 and cfg.work_dir == str(tmp_path)


def test_resume_needs_not_the_files_the_run_was_initialised_from(tmp_path, untrained_run, capsys):
    # started elsewhere from a detection model and SimMIM weights: the checkpoint holds every weight now
    moved = {"load_from": "ait_det_swinv2b_wodec.pth", "model.backbone_checkpoint": "simmim.pth"}
    run = _run_with(tmp_path, untrained_run, **moved)
    cfg, _ = _resumed_config(str(run), None, [])
    assert cfg.load_from is None and cfg.model.backbone_checkpoint == "scratch"
    out = capsys.readouterr().out
    assert "load_from ait_det_swinv2b_wodec.pth is not here" in out and "simmim.pth is not here" in out
    (tmp_path / "simmim.pth").write_bytes(b"present")  # a file that is there stays what the run recorded
    cfg, _ = _resumed_config(str(run), None, [f"model.backbone_checkpoint={tmp_path / 'simmim.pth'}"])
    assert cfg.model.backbone_checkpoint == str(tmp_path / "simmim.pth")


def test_read_saved_config_equals_the_checkpoints(tmp_path, untrained_run):
    run = _run_with(tmp_path, untrained_run, **{"seed": 5})
    assert read_saved_config(run / "checkpoints" / "iter_0000003.pt").seed == 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train"], "needs a config name"),
        (
            ["train", "cpu_depth_tiny", "--resume", "RUN"],
            "trained with config 'cpu_joint_tiny', not 'cpu_depth_tiny'",
        ),
        (["train", "--resume", "RUN", "--cfg-options", "optim.lrr=1"], "did you mean: optim.lr"),
        (["train", "--resume", "EMPTY"], "holds no checkpoint"),
        (["train", "--resume", "EMPTY/nothing.pt"], "checkpoint not found"),
        (["train", "cpu_depth_tiny", "--resume", "--work-dir", "EMPTY"], "no checkpoint in"),
        (["eval", "cpu_depth_tiny", "--config", "cpu_joint_tiny", "--checkpoint", "RUN"], "two config names"),
    ],
)
def test_resume_and_config_mistakes_are_one_error_line(tmp_path, untrained_run, capsys, argv, message):
    run = _run_with(tmp_path, untrained_run)
    (tmp_path / "empty").mkdir()
    argv = [str(run) if a == "RUN" else a.replace("EMPTY", str(tmp_path / "empty")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ait: error:") and message in err[0], err


def test_resume_of_a_run_whose_saved_config_has_unknown_keys_names_the_key(tmp_path, untrained_run, capsys):
    saved = json.loads(create_config("cpu_joint_tiny").to_json())
    saved["optim"]["lookahead"] = True
    run = tmp_path / "run"
    untrained_run(run, config_json=json.dumps(saved))
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ait: error:") and "optim.lookahead" in err and "iter_0000001.pt" in err
    with pytest.raises(ConfigError, match=r"optim\.lookahead"):
        read_saved_config(run / "checkpoints" / "iter_0000001.pt")
