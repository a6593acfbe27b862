import dataclasses
import json
import math
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ait_tokenizer import create_tokenizer, load_tokenizer
from ait_tokenizer.testing import train_worker
from ait_tokenizer.train import (
    FINAL_CHECKPOINT,
    METRICS_FILE,
    TokenizerTrainConfig,
    learning_rate,
    main,
    train_config,
    train_tokenizer,
)

# 12 synthetic maps in batches of 4: three steps per epoch, so five steps cross an epoch boundary.
TINY_DEPTH = {
    "train_size": 12,
    "val_size": 2,
    "batch_size": 4,
    "val_every": 0,
    "checkpoint_every": 0,
    "log_every": 1,
    "progress": False,
    "device": "cpu",
}


def test_paper_depth_schedule_decays_on_multiples_of_500_within_each_epoch():
    cfg = train_config("depth-paper")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs) == ("adam", 3e-4, 0.0, 8, 20)
    steps_per_epoch = 1200  # indices 0, 500, 1000 decay: three per epoch

    def lr(epoch, i):
        return learning_rate(cfg, epoch * steps_per_epoch + i, epoch, i, steps_per_epoch)

    assert lr(0, 0) == 3e-4  # the first step runs at the base rate, then index 0 decays it
    assert lr(0, 1) == pytest.approx(3e-4 * 0.98)
    assert lr(0, 500) == pytest.approx(3e-4 * 0.98)
    assert lr(0, 501) == pytest.approx(3e-4 * 0.98**2)
    assert lr(1, 0) == pytest.approx(3e-4 * 0.98**3)
    assert lr(1, 1) == pytest.approx(3e-4 * 0.98**4)


def test_paper_mask_schedule_warms_up_then_cosine_to_1e6():
    cfg = train_config("mask-paper")
    assert (cfg.optimizer, cfg.batch_size, cfg.weight_decay) == ("adamw", 512, 0.0)
    steps_per_epoch = 100
    total = cfg.epochs * steps_per_epoch

    def lr(step):
        return learning_rate(cfg, step, *divmod(step, steps_per_epoch), steps_per_epoch)

    assert lr(0) == pytest.approx(3e-7)
    assert lr(250) == pytest.approx(3e-7 + (3e-4 - 3e-7) / 2)
    assert lr(500) == pytest.approx(3e-4)
    middle = 500 + (total - 500) // 2
    assert lr(middle) == pytest.approx(1e-6 + (3e-4 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 0.5)), rel=1e-3)
    assert lr(total) == pytest.approx(1e-6)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = TokenizerTrainConfig(tokenizer="depth-small", max_steps=5, **TINY_DEPTH)
    straight = train_tokenizer(cfg, tmp_path / "straight")
    train_tokenizer(dataclasses.replace(cfg, max_steps=2), tmp_path / "resumed")
    resumed = train_tokenizer(cfg, tmp_path / "resumed")

    a, b = load_tokenizer(straight), load_tokenizer(resumed)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / METRICS_FILE).read_text().splitlines()
             if "val" not in json.loads(line)]  # fmt: skip
    assert steps == [1, 2, 3, 4, 5]  # the second run continued at step 3


def test_seeded_runs_are_identical_and_seeds_matter(tmp_path):
    cfg = TokenizerTrainConfig(tokenizer="depth-small", max_steps=2, **TINY_DEPTH)
    first = load_tokenizer(train_tokenizer(cfg, tmp_path / "a")).state_dict()
    again = load_tokenizer(train_tokenizer(cfg, tmp_path / "b")).state_dict()
    other = load_tokenizer(train_tokenizer(dataclasses.replace(cfg, seed=1), tmp_path / "c")).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_channels_last_trains_the_same_tokenizer_in_another_summation_order(tmp_path):
    cfg = TokenizerTrainConfig(tokenizer="depth-small", max_steps=3, **TINY_DEPTH)
    nhwc = load_tokenizer(train_tokenizer(cfg, tmp_path / "nhwc")).state_dict()
    nchw = load_tokenizer(
        train_tokenizer(dataclasses.replace(cfg, channels_last=False), tmp_path / "nchw")
    ).state_dict()
    assert nhwc.keys() == nchw.keys()
    for name in nhwc:
        assert nhwc[name].is_contiguous(), name  # the files hold plain NCHW tensors either way
        torch.testing.assert_close(nhwc[name], nchw[name], rtol=1e-3, atol=1e-4, msg=name)


def test_a_non_boolean_switch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"channels_last='yes' is invalid, expected true or false"):
        TokenizerTrainConfig(tokenizer="depth-small", channels_last="yes").validate()


def test_mask_tokenizer_trains_on_synthetic_instance_crops_and_validates(tmp_path):
    cfg = TokenizerTrainConfig(
        tokenizer="mask-small",
        train_size=3,
        val_size=1,
        instance_room_size=64,
        batch_size=4,
        max_steps=2,
        optimizer="adamw",
        schedule="cosine",
        warmup_steps=1,
        **{k: v for k, v in TINY_DEPTH.items() if k not in {"train_size", "val_size", "batch_size"}},
    )
    final = train_tokenizer(cfg, tmp_path)
    lines = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    validation = next(line["val"] for line in lines if "val" in line)
    assert {"mean_iou", "mean_boundary_iou", "perplexity", "codes_used"} <= set(validation)
    assert 0 <= validation["mean_iou"] <= 1
    assert load_tokenizer(final, expected_preset="mask-small").kind == "mask"


def test_command_line_overrides(tmp_path):
    final = main([
        "--config", "depth-small", "--out", str(tmp_path), "--max-steps", "1", "--batch-size", "2",
        "--no-progress", "--no-mask-aug", "--set", "train_size=2", "val_size=1", "log_every=1",
        "--tokenizer-set", "dead_code_threshold=0",
    ])  # fmt: skip
    assert final == tmp_path / FINAL_CHECKPOINT
    tokenizer = load_tokenizer(final, expected_preset="depth-small")
    assert tokenizer.config.mask_ratio == 0.0 and tokenizer.config.dead_code_threshold == 0
    saved = json.loads((tmp_path / "train_config.json").read_text())
    assert saved["batch_size"] == 2 and saved["max_steps"] == 1


def test_a_global_batch_that_does_not_split_over_the_processes_is_refused():
    from ait_tokenizer.train import per_process_batch

    assert per_process_batch(512, 8) == 64 and per_process_batch(8, 1) == 8
    with pytest.raises(ValueError, match=r"batch_size=6 .* over 4 processes.*one of \[4, 8, 12"):
        per_process_batch(6, 4)


def test_unknown_data_is_a_clear_error(tmp_path):
    cfg = TokenizerTrainConfig(tokenizer="depth-small", data="maskcoco", **TINY_DEPTH)
    with pytest.raises(ValueError, match="'synthetic' or 'nyu', got 'maskcoco'"):
        train_tokenizer(cfg, tmp_path)


def test_two_process_training_keeps_ranks_identical(tmp_path):
    """The torchrun path (env://, gloo): averaged gradients and all-reduced EMA keep one model.

    batch_size is global, as the original's (batch_size // world_size per GPU): one epoch of 16 maps in
    global batches of 4 is 4 steps on 2 processes too (2 maps each), the schedule the config describes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = {**TINY_DEPTH, "tokenizer": "depth-small", "train_size": 16, "epochs": 1}
    mp.spawn(train_worker, args=(2, port, config, str(tmp_path / "run"), str(tmp_path)), nprocs=2)
    records = [json.loads(line) for line in (tmp_path / "run" / METRICS_FILE).read_text().splitlines()]
    assert max(r["step"] for r in records if "step" in r) == 16 // 4
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for name, tensor in rank0["state"].items():
        assert torch.equal(tensor, rank1["state"][name]), name
    saved = load_tokenizer(rank0["final"]).state_dict()
    assert all(torch.equal(saved[name], tensor) for name, tensor in rank0["state"].items())
    assert not torch.equal(rank0["state"]["quantizer.embed"], create_tokenizer("depth-small").quantizer.embed)


def test_trains_on_nyu_layout_written_by_ait_data(tmp_path):
    from ait_data import SyntheticRooms, write_nyu

    rooms = SyntheticRooms(length=4, height=64, width=96, seed=0)
    split_file = write_nyu(rooms, tmp_path / "nyu")
    cfg = TokenizerTrainConfig(
        tokenizer="depth-small",
        data="nyu",
        nyu_root=str(tmp_path / "nyu"),
        nyu_split_file=str(split_file),
        nyu_columns=None,  # the paper's 41..600 columns assume 640-wide maps
        max_steps=2,
        **{k: v for k, v in TINY_DEPTH.items() if k not in {"train_size", "val_size"}},
    )
    final = train_tokenizer(cfg, tmp_path / "run")
    validation = json.loads((tmp_path / "run" / METRICS_FILE).read_text().splitlines()[-1])["val"]
    assert (
        math.isfinite(validation["rmse"]) and "complete_rmse" not in validation
    )  # real data: no complete map
    assert load_tokenizer(final).kind == "depth"


def test_console_script_exits_zero_on_success(tmp_path):
    """`ait-tokenizer-train` runs `sys.exit(cli())`: a finished run is status 0, not the returned path's 1."""
    import subprocess
    import sys

    executable = Path(sys.executable).parent / "ait-tokenizer-train"
    run = subprocess.run(
        [str(executable), "--config", "depth-small", "--out", str(tmp_path), "--max-steps", "1",
         "--batch-size", "2", "--no-progress", "--set", "train_size=2", "val_size=1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / FINAL_CHECKPOINT).is_file()
