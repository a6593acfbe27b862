"""Traps that cost a user hours or files: each is one `ait: error:` line before any time is spent, or is
handled as the picture / folder / key the user meant (docs/RELIABILITY.md, "Traps")."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from ait.cli import main
from ait.config import ConfigError
from ait.outputs import check_output_file
from ait_data.io import read_rgb, to_rgb
from ait_tokenizer import create_tokenizer
from ait_tokenizer.locking import LOCK_FILE, FolderInUseError, RunLock


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line, never a traceback
    assert err.startswith("ait: error: "), err
    return err


# ------------------------------------------------------------------------------------------- --debug


def test_debug_is_accepted_anywhere_on_the_line(capsys):
    assert main(["show-config", "no_such_config"]) == 2
    assert "no_such_config" in _error_line(capsys)
    # after the command and after its options too, as "rerun with --debug" invites: the traceback shows
    for argv in (
        ["show-config", "no_such_config", "--debug"],
        ["show-config", "--debug", "no_such_config"],
        ["--debug", "show-config", "no_such_config"],
    ):
        with pytest.raises(ConfigError, match="no_such_config"):
            main(argv)


# ---------------------------------------------------------------------------------------------- demo


def test_demo_never_deletes_a_folder_it_did_not_make(tmp_path, capsys):
    user = tmp_path / "my_results"
    user.mkdir()
    (user / "thesis.tex").write_text("months of work")
    code = main(["demo", "--out", str(tmp_path / "demo"), "--cfg-options", f"work_dir={user}"])
    assert code == 2
    line = _error_line(capsys)
    assert str(user) in line and "not made by ait demo" in line and "nothing was deleted" in line
    assert (user / "thesis.tex").read_text() == "months of work"
    assert not (tmp_path / "demo").exists()  # refused before anything was written or trained


def test_demo_replaces_only_its_own_folders(tmp_path):
    from ait.demo import DEMO_MARK, _check_demo_folder, _fresh_demo_folder

    made = tmp_path / "solver"
    _fresh_demo_folder(made)  # new: created and marked
    (made / "checkpoints").mkdir()
    (made / "checkpoints" / "iter_0000010.pt").write_bytes(b"old run")
    _fresh_demo_folder(made)  # the demo's own previous run: replaced
    assert sorted(p.name for p in made.iterdir()) == [DEMO_MARK]
    empty = tmp_path / "empty"
    empty.mkdir()
    _check_demo_folder(empty)  # an empty folder holds nothing to lose
    (empty / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="nothing was deleted"):
        _fresh_demo_folder(empty)
    assert (empty / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------ samples_per_gpu


def test_samples_per_gpu_is_refused_naming_the_global_batch_keys(capsys):
    for name in ("swinv2b_480reso_depthonly", "swinv2b_640reso_inssegonly"):
        assert main(["show-config", name, "--cfg-options", "data.samples_per_gpu=2"]) == 2
        line = _error_line(capsys)
        assert "data.samples_per_gpu" in line and "data.depth_batch" in line and "data.insseg_batch" in line


# ------------------------------------------------------------------------------------------- locks


def test_a_second_training_into_a_locked_work_dir_refuses_before_building_anything(tmp_path, capsys):
    work_dir = tmp_path / "run"
    with RunLock(work_dir, "--work-dir"):
        code = main(["train", "cpu_depth_tiny", "--work-dir", str(work_dir), "--device", "cpu"])
        assert code == 2
        line = _error_line(capsys)
        assert str(work_dir) in line and "in use by another training run" in line and "--work-dir" in line
        assert f"pid {os.getpid()}" in line  # the holder is named
        assert not (work_dir / "config.json").exists() and not (work_dir / "checkpoints").exists()
    RunLock(work_dir, "--work-dir").acquire().release()  # released: free again


def test_a_second_tokenizer_training_into_a_locked_folder_refuses(tmp_path, capsys):
    from ait_tokenizer.train import main as tokenizer_main

    out = tmp_path / "tok"
    with RunLock(out, "--out"):
        with pytest.raises(SystemExit) as exit_info:
            tokenizer_main(
                ["--config", "depth-small", "--out", str(out), "--max-steps", "1", "--no-progress"]
            )
        assert exit_info.value.code == 2
        line = _error_line(capsys)
        assert "in use by another tokenizer training" in line and "--out" in line
        assert not (out / "train_config.json").exists()
        assert main(["tokenizer", "train", "cpu_depth_vqvae", "--out", str(out)]) == 2
        assert "in use by another tokenizer training" in _error_line(capsys)


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    from ait_tokenizer import locking

    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import importlib.util, time
            # the lock module alone (no torch import): the test waits on the kill, not on imports
            spec = importlib.util.spec_from_file_location("locking", {locking.__file__!r})
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            module.RunLock({str(folder)!r}, "--work-dir").acquire()
            print("locked", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderInUseError, match=f"pid {holder.pid}"):
            RunLock(folder, "--work-dir").acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    RunLock(folder, "--work-dir").acquire().release()  # the kernel dropped the dead run's lock
    assert (folder / LOCK_FILE).is_file()


# ------------------------------------------------------------------------------------------ outputs


def test_an_output_never_replaces_an_input_or_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    checkpoint = run / "checkpoints" / "iter_0000600.pt"
    checkpoint.write_bytes(b"weights")
    with pytest.raises(ValueError, match=r"--out .*iter_0000600\.pt is this command's input"):
        check_output_file(checkpoint, "--out", inputs=[checkpoint])
    with pytest.raises(ValueError, match="among the checkpoints of the run"):
        check_output_file(run / "checkpoints" / "metrics.json", "--out", inputs=[run])
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"weights")
    with pytest.raises(ValueError, match="existing checkpoint file"):
        check_output_file(other, "--out")
    with pytest.raises(ValueError, match="is a folder"):
        check_output_file(run, "--out")
    assert (
        check_output_file(tmp_path / "metrics.json", "--out", inputs=[checkpoint])
        == tmp_path / "metrics.json"
    )
    assert checkpoint.read_bytes() == b"weights" and other.read_bytes() == b"weights"


# ------------------------------------------------------------------------------------------- images


def _png(image: Image.Image, fmt: str = "PNG") -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    buffer.seek(0)
    return Image.open(buffer)


def test_images_of_every_mode_and_bit_depth_read_as_the_picture_they_show(tmp_path):
    ramp16 = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (32, 1))
    expected_grey = np.round(ramp16 / 257.0)
    grey16 = _png(Image.fromarray(ramp16))
    assert grey16.mode.startswith("I;16")
    got = to_rgb(grey16)
    assert got.dtype == np.uint8 and got.shape == (32, 64, 3)
    assert np.abs(got[..., 0].astype(int) - expected_grey).max() <= 1  # was: almost white (clipped at 255)
    as_i = Image.fromarray(ramp16.astype(np.int32))  # mode "I" (32-bit) holding 16-bit values
    assert np.abs(to_rgb(as_i)[..., 1].astype(int) - expected_grey).max() <= 1
    as_f = Image.fromarray((ramp16 / 65535.0).astype(np.float32))  # mode "F" in [0, 1]
    assert np.abs(to_rgb(as_f)[..., 2].astype(int) - expected_grey).max() <= 1

    colour = np.zeros((32, 64, 3), np.uint8)
    colour[..., 0], colour[..., 1], colour[..., 2] = 200, 100, 30
    rgba = np.concatenate([colour, np.full((32, 64, 1), 255, np.uint8)], axis=2)
    rgba[:, :8, 3] = 0  # transparent strip: shown on white, as a viewer shows it
    out = to_rgb(_png(Image.fromarray(rgba, "RGBA")))
    assert (out[:, :8] == 255).all() and (out[:, 8:] == colour[:, 8:]).all()
    grey8 = expected_grey.astype(np.uint8)
    assert (to_rgb(_png(Image.fromarray(grey8, "L")))[..., 0] == grey8).all()
    la = Image.fromarray(np.stack([grey8, np.full_like(grey8, 255)], axis=2), "LA")
    assert (to_rgb(_png(la))[..., 2] == grey8).all()
    palette = _png(Image.fromarray(colour).convert("P", palette=Image.Palette.ADAPTIVE))
    assert palette.mode == "P" and (to_rgb(palette) == colour).all()
    cmyk = _png(Image.fromarray(colour).convert("CMYK"), "TIFF")
    assert cmyk.mode == "CMYK" and np.abs(to_rgb(cmyk).astype(int) - colour).max() <= 2

    path = tmp_path / "depth_like_photo.png"
    Image.fromarray(ramp16).save(path)
    assert np.abs(read_rgb(path)[..., 0].astype(int) - expected_grey).max() <= 1  # the dataset readers too


# ---------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_encode_takes_float64_maps():
    torch.manual_seed(0)
    tokenizer = create_tokenizer("depth-small").eval()
    size = tokenizer.config.input_size
    depth = torch.rand(1, 1, *size, dtype=torch.float64) * 5
    assert torch.equal(tokenizer.encode(depth), tokenizer.encode(depth.float()))
