"""The `ait` command line: listing, showing, option errors (the training commands run in integration_tests)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ait.cli import main
from ait.config import list_configs


def test_configs_lists_every_registered_name(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    for name in list_configs():
        assert name in out


def test_show_config_applies_typed_options(capsys):
    assert (
        main(
            [
                "show-config",
                "swinv2b_480reso_depthonly",
                "--cfg-options",
                "optim.lr=1e-5",
                "data.image_size=480,720",
            ]
        )
        == 0
    )
    shown = json.loads(capsys.readouterr().out)
    assert shown["optim"]["lr"] == 1e-5 and shown["data"]["image_size"] == [480, 720]


def test_show_config_of_a_tokenizer_config(capsys):
    assert main(["show-config", "ait_depth_vqvae"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tokenizer"] == "depth-paper" and shown["lr"] == 3e-4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show-config", "swinv2b_480reso_depthonlyy"], "did you mean: swinv2b_480reso_depthonly"),
        (["show-config", "cpu_depth_tiny", "--cfg-options", "optim.lrr=3"], "did you mean: optim.lr"),
        (["show-config", "cpu_depth_tiny", "--cfg-options", "optim.lr=fast"], "expected float"),
        (["train", "ait_depth_vqvae"], "ait tokenizer train"),
        (["tokenizer", "train", "cpu_depth_tiny"], "ait train"),
        (
            ["train", "swinv2b_480reso_depthonly", "--cfg-options", "data.nyu_root=/nonexistent/nyu"],
            "/nonexistent/nyu",
        ),
        (["eval", "cpu_depth_tiny", "--checkpoint", "/nonexistent/ckpt.pt"], "checkpoint not found"),
        (["predict", "--checkpoint", "/nonexistent/ckpt.pt", "/nonexistent/room.png"], "image not found"),
    ],
)
def test_bad_input_is_one_clear_error_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ait: error:") and message in err
    assert "Traceback" not in err


def test_undecodable_image_is_named(tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    assert main(["predict", "--checkpoint", str(tmp_path / "c.pt"), str(broken)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"ait: warning: skipping {broken}: not an image")
    assert err[1].startswith("ait: error: no image to predict") and str(broken) in err[1]


def test_python_dash_m_ait_runs():
    out = subprocess.run(
        [sys.executable, "-m", "ait", "configs", "--kind", "tokenizer"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "ait_insseg_vqvae" in out.stdout and "swinv2b_480reso_depthonly" not in out.stdout
