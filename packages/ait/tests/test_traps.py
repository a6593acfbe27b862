"""Traps that cost a user hours or files: each is one `ait: error:` line before any time is spent, or is
handled as the picture / folder / key the user meant (docs/RELIABILITY.md, "Traps")."""

from __future__ import annotations

import argparse
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


# ------------------------------------------------------------------------- files a run starts from


def test_training_without_its_tokenizer_files_refuses_before_the_model_is_built(tmp_path, capsys):
    work_dir = tmp_path / "run"
    assert main(["train", "cpu_joint_demo", "--work-dir", str(work_dir), "--device", "cpu"]) == 2
    line = _error_line(capsys)  # was: a warning, then hours of training over an untrained tokenizer
    assert "model.depth_tokenizer.checkpoint is not set" in line and "=untrained" in line
    assert not (work_dir / "checkpoints").exists() and not (work_dir / "config.json").exists()
    missing = tmp_path / "nowhere" / "depth.safetensors"
    options = [f"model.depth_tokenizer.checkpoint={missing}", "model.mask_tokenizer.checkpoint=untrained"]
    assert main(["train", "cpu_joint_demo", "--work-dir", str(work_dir), "--cfg-options", *options]) == 2
    line = _error_line(capsys)
    assert "model.depth_tokenizer.checkpoint" in line and str(missing) in line and "not found" in line


def test_paper_configs_need_their_backbone_and_load_from_files_or_an_explicit_choice(tmp_path, monkeypatch):
    from ait.config import create_config
    from ait.engine.preflight import check_training_files

    monkeypatch.chdir(tmp_path)
    depth_tok, mask_tok = tmp_path / "depth.safetensors", tmp_path / "mask.safetensors"
    depth_tok.write_bytes(b"x")
    mask_tok.write_bytes(b"x")
    tokenizers = {
        "model.depth_tokenizer.checkpoint": str(depth_tok),
        "model.mask_tokenizer.checkpoint": str(mask_tok),
    }
    depth = create_config("swinv2b_480reso_depthonly", {"model.depth_tokenizer.checkpoint": str(depth_tok)})
    with pytest.raises(ConfigError, match=r"model\.backbone_checkpoint is not set.*=scratch"):
        check_training_files(depth)  # was: SwinV2-B trained from random weights without a word
    depth.model.backbone_checkpoint = "scratch"
    check_training_files(depth)  # explicit: accepted
    depth.model.backbone_checkpoint = "swin_v2_base_densesimmim.pth"
    with pytest.raises(FileNotFoundError, match=r"model\.backbone_checkpoint.*densesimmim\.pth not found"):
        check_training_files(depth)

    joint = create_config("swinv2b_640reso_joint", tokenizers)
    with pytest.raises(
        FileNotFoundError,
        match=rf"load_from: .*ait_det_swinv2b_wodec\.pth not found \(relative to {tmp_path}",
    ):
        check_training_files(joint)  # was: found out after data and model were built
    joint.load_from = None
    with pytest.raises(ConfigError, match=r"model\.backbone_checkpoint is not set"):
        check_training_files(joint)
    (tmp_path / "ait_det_swinv2b_wodec.pth").write_bytes(b"x")
    check_training_files(
        create_config("swinv2b_640reso_joint", tokenizers)
    )  # the detection model holds the backbone
    check_training_files(
        create_config("cpu_joint_tiny")
    )  # the tiny test configs ask for untrained tokenizers


def test_explicit_untrained_tokenizers_and_scratch_backbones_build_without_warnings():
    import warnings

    from ait.config import create_config
    from ait.model import build_task_solver

    cfg = create_config("cpu_joint_tiny", {"model.backbone_checkpoint": "scratch"})
    assert cfg.model.depth_tokenizer.checkpoint == cfg.model.mask_tokenizer.checkpoint == "untrained"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit choice is not warned about
        build_task_solver(cfg)


# ---------------------------------------------------------------------------------- tokenizer commands


def _options(parser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _tokenizer_parsers():
    from ait.cli import build_parser
    from ait_tokenizer.train import add_training_arguments
    from ait_tokenizer.train import build_parser as library_parser

    app = build_parser()
    sub = next(a for a in app._actions if a.dest == "command").choices["tokenizer"]
    train = next(a for a in sub._actions if a.dest == "tokenizer_command").choices["train"]
    shared = argparse.ArgumentParser(add_help=False)
    add_training_arguments(shared)
    return train, library_parser(), _options(shared)


def test_both_tokenizer_commands_take_one_syntax_and_every_hint_names_their_flags():
    import inspect
    import re

    import ait_tokenizer.train as library

    app_train, library_train, shared = _tokenizer_parsers()
    assert shared <= _options(app_train) and shared <= _options(library_train)
    # every flag the training code's messages name (outside the parsers' own help) exists in both commands
    source = inspect.getsource(library).replace(library.__doc__, "")  # its usage lines: ait-tokenizer-train's
    for name in ("build_parser", "add_training_arguments", "config_from_args"):  # the parsers themselves
        source = source.replace(inspect.getsource(getattr(library, name)), "")
    hinted = set(re.findall(r"(--[a-z][a-z-]+)", source))
    assert {"--lr", "--no-resume", "--out", "--device"} <= hinted
    assert hinted <= shared, hinted - shared
    # one syntax: CONFIG --out DIR --cfg-options KEY=VALUE, and the same shared flags
    args = library_train.parse_args(
        ["depth-small", "--out", "d", "--cfg-options", "max_steps=3", "--no-resume"]
    )
    cfg = library.config_from_args(args)
    assert (cfg.tokenizer, cfg.max_steps, cfg.resume) == ("depth-small", 3, False)
    args = app_train.parse_args(
        ["cpu_depth_vqvae", "--out", "d", "--cfg-options", "max_steps=3", "--lr", "1e-3"]
    )
    assert (args.lr, args.no_resume, args.cfg_options) == (1e-3, False, ["max_steps=3"])


def test_both_tokenizer_commands_follow_one_resume_rule(tmp_path, capsys):
    from ait_tokenizer.train import main as library_main

    out = str(tmp_path / "tok")
    small = ["train_size=8", "val_size=2", "batch_size=2", "val_every=100", "checkpoint_every=1"]
    first = ["tokenizer", "train", "cpu_depth_vqvae", "--out", out, "--max-steps", "1", "--no-progress"]
    assert main([*first, "--cfg-options", *small]) == 0
    capsys.readouterr()
    # a run of the same config (cpu_depth_vqvae is depth-small) continues, from either command, and says so
    library_main(["depth-small", "--out", out, "--max-steps", "2", "--no-progress", "--cfg-options", *small])
    assert f"resuming the run in {out} from step 1" in capsys.readouterr().err
    # a run of another config is refused, naming the flags of the command that ran
    code = main(
        ["tokenizer", "train", "cpu_depth_vqvae", "--out", out, "--seed", "7", "--cfg-options", *small]
    )
    assert code == 2
    line = _error_line(capsys)
    assert "holds a run of another config" in line and "--no-resume" in line and "--out" in line


# -------------------------------------------------------------------------------------------- messages


class _Payload:
    """Stands for code in a crafted file: loading it safely must fail, and say so in our words."""


_UNSAFE_WORDS = ("weights_only", "allow_pickle", "trust the source", "can still be loaded")


def test_no_message_passes_on_a_library_advice_to_load_unsafely(tmp_path, capsys):
    from ait.engine.checkpoint import load_checkpoint
    from ait.engine.trainer import load_initial_weights
    from ait_backbone.checkpoint import read_state_dict
    from ait_data import MaskCoco
    from ait_tokenizer import load_tokenizer
    from ait_tokenizer.train import main as tokenizer_main

    crafted = tmp_path / "crafted.pt"
    torch.save({"weights": {"w": torch.zeros(1)}, "payload": _Payload()}, crafted)
    messages = []
    for load in (
        load_checkpoint,
        read_state_dict,
        load_tokenizer,
        lambda path: load_initial_weights(torch.nn.Linear(1, 1), str(path), print),
    ):
        with pytest.raises(ValueError) as info:
            load(crafted)
        messages.append(str(info.value))
    objects = tmp_path / "maskcoco.npz"
    parts = ("masks", "image_id", "ann_id", "category_id", "box", "size")
    np.savez(objects, **{name: np.array([object()], dtype=object) for name in parts})
    with pytest.raises(ValueError) as info:
        MaskCoco(objects)
    messages.append(str(info.value))
    (tmp_path / "tok").mkdir()
    torch.save({"step": 1, "payload": _Payload()}, tmp_path / "tok" / "train_state.pt")
    with pytest.raises(SystemExit):
        tokenizer_main(["depth-small", "--out", str(tmp_path / "tok"), "--max-steps", "1", "--no-progress"])
    messages.append(_error_line(capsys))
    for message in messages:
        assert not any(word in message for word in _UNSAFE_WORDS), message
        assert "crafted.pt" in message or "maskcoco.npz" in message or "train_state.pt" in message, message
    assert all("Python objects" in m or "_Payload" in m for m in messages), messages


def test_a_corrupt_newest_checkpoint_points_at_the_newest_good_one(tmp_path, untrained_run, capsys):
    from ait.engine.checkpoint import load_checkpoint

    run = tmp_path / "run"
    good = untrained_run(run, name="cpu_depth_tiny", step=2)
    newest = untrained_run(run, name="cpu_depth_tiny", step=4)
    newest.write_bytes(newest.read_bytes()[:1000])  # a copy cut short
    with pytest.raises(ValueError, match=rf"newest good checkpoint of the run is {good}"):
        load_checkpoint(newest)
    # what a user meets: `ait train --resume RUN` (and eval/predict) take the newest; the line names the good one
    assert main(["train", "--resume", str(run), "--no-eval", "--device", "cpu"]) == 2
    line = _error_line(capsys)
    assert str(newest) in line and f"--resume {good}" in line and f"--checkpoint {good}" in line


def test_every_trap_listed_in_the_reliability_doc_has_its_test_here():
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[3] / "docs" / "RELIABILITY.md"
    listed = set(re.findall(r"traps::(test_\w+)", doc.read_text(encoding="utf-8")))
    assert len(listed) >= 14
    missing = sorted(name for name in listed if not callable(globals().get(name)))
    assert not missing, missing


def test_no_document_links_outside_the_repository():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    documents = [
        p for p in root.rglob("*.md") if not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    assert len(documents) >= 10
    broken = []
    for document in documents:
        text = document.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"`(\.\./[^`\s]+)`", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor of the same page
            path = (document.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(root) or not path.exists():
                broken.append(f"{document.relative_to(root)}: {target}")
    assert not broken, broken


def test_a_name_whose_extra_is_missing_says_which_to_install():
    # pycocotools made unimportable, as in `pip install ./packages/ait-eval` without the `coco` extra
    code = textwrap.dedent("""
        import sys
        sys.modules["pycocotools"] = None
        import ait_eval
        ait_eval.depth_metrics  # the core works
        try:
            ait_eval.evaluate_coco
        except ModuleNotFoundError as error:
            print(error)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ait_eval.evaluate_coco needs pycocotools" in out.stdout
    assert "pip install './packages/ait-eval[coco]'" in out.stdout
    # a console script without its extra: one line naming it, not an import traceback
    code = textwrap.dedent("""
        import sys
        sys.modules["pycocotools"] = None
        from ait_data._cli import maskcoco
        maskcoco(["instances.json", "--out", "maskcoco.npz"])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip() == (
        "ait: error: pycocotools is not installed: pip install './packages/ait-data[coco]' (from a clone of the "
        "repository)"
    )


def test_messages_name_the_key_or_the_file(tmp_path, capsys):
    from ait_data.nyu import parse_split_file
    from ait_tokenizer.train import train_config

    assert main(["show-config", "cpu_depth_tiny", "--cfg-options", f"seed={10**24}"]) == 2
    assert "seed: expected < 2**63" in _error_line(capsys)  # was: an overflow deep inside torch.manual_seed
    with pytest.raises(ValueError, match=r"seed=1000000000000000000000000 is invalid"):
        train_config("depth-small", seed=10**24).validate()
    split = tmp_path / "train.txt"
    split.write_bytes(b"\xff\xfe/scene/rgb_1.jpg /scene/sync_depth_1.png\n")
    with pytest.raises(ValueError, match=rf"split file {split} is not UTF-8 text"):  # was: a bare codec error
        parse_split_file(split)


@pytest.mark.parametrize("processes", ["0", "9"])
def test_demo_refuses_a_process_count_its_batches_cannot_share_before_any_work(tmp_path, capsys, processes):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--processes", processes])
    assert code == 2
    line = _error_line(capsys)
    assert f"--processes {processes}" in line and "allow 1 to 8 processes" in line
    assert not out.exists()  # refused before any tokenizer or solver training


def test_demo_refuses_micro_batches_its_processes_cannot_share_before_any_work(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--processes", "3", "--cfg-options", "optim.accumulate=2"])
    assert code == 2
    assert "optim.accumulate" in _error_line(capsys)
    assert not out.exists()


def test_demo_process_default_is_the_demos_and_falls_back_to_one_where_processes_cannot_share(monkeypatch):
    from ait.cli import build_parser
    from ait.config import create_config
    from ait.demo import DEMO_PROCESSES, solver_processes

    assert build_parser().parse_args(["demo"]).processes == DEMO_PROCESSES == 2
    cfg = create_config("cpu_joint_demo")
    assert solver_processes(2, cfg) == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # one GPU cannot host two processes
    assert solver_processes(2, cfg) == 1
    assert solver_processes(1, cfg) == 1
