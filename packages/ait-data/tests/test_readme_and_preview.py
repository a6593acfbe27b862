import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ait_data.preview import colorize_depth, main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})


def test_preview_grid(tmp_path):
    out = main(["--out", str(tmp_path / "grid.png"), "--num", "2", "--size", "64x96", "--seed", "3"])
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 * 64, 3 * 96, 3)
    depth_panel = grid[:64, 96:192]
    assert (depth_panel == 0).all(axis=-1).any()  # invalid depth drawn black
    assert not np.array_equal(grid[:64, :96], grid[64:, :96])  # two different scenes


def test_colorize_depth_marks_invalid_black():
    depth = np.array([[0.0, 1.0], [2.0, 4.0]], np.float32)
    rgb = colorize_depth(depth, max_depth=4.0)
    assert rgb.dtype == np.uint8 and (rgb[0, 0] == 0).all() and (rgb[1:, :] > 0).any(axis=-1).all()


@pytest.mark.filterwarnings("ignore:'ait_data.preview' found in sys.modules:RuntimeWarning")
def test_preview_module_entry_point(tmp_path, monkeypatch, capsys):
    # `python -m ait_data.preview ...` without paying for a second interpreter (and torch import)
    out = tmp_path / "p.png"
    monkeypatch.setattr(sys, "argv", ["ait_data.preview", "--out", str(out), "--num", "1", "--size", "64x64"])
    runpy.run_module("ait_data.preview", run_name="__main__")
    assert Image.open(out).size == (3 * 64, 64)
    monkeypatch.setattr(sys, "argv", ["ait_data.preview", "--size", "12x12"])
    with pytest.raises(SystemExit):
        runpy.run_module("ait_data.preview", run_name="__main__")
    assert "between 64x64" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["ait-data-preview", "ait-maskcoco"])
def test_console_scripts_exit_zero_on_success(tmp_path, script):
    """The installed scripts run `sys.exit(cli())`: success must be status 0, not the returned path's 1."""
    import subprocess

    from ait_data import SyntheticRooms, write_coco

    executable = Path(sys.executable).parent / script
    if script == "ait-data-preview":
        args = ["--out", str(tmp_path / "grid.png"), "--num", "1", "--size", "64x64"]
    else:
        ann = write_coco(SyntheticRooms(length=2, height=64, width=64, seed=0), tmp_path / "coco", [0, 1])
        args = [str(ann), "--out", str(tmp_path / "masks.npz"), "--no-progress"]
    run = subprocess.run([str(executable), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert any(tmp_path.glob("*.png")) or (tmp_path / "masks.npz").is_file()
