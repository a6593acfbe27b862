"""Engine: schedules, optimiser groups, checkpoints, resume, NaN handling, accumulation, data streams.

The training-loop tests use a tiny stand-in module (a 1x1 conv regressing depth) so they run in seconds;
the real task-solver goes through the same loop in integration_tests/.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ait.config import create_config
from ait.config.schema import OptimConfig
from ait.data import TaskStream, rank_share
from ait.engine import (
    NonFiniteLossError,
    Trainer,
    atomic_torch_save,
    build_optimizer,
    list_checkpoints,
    load_checkpoint,
    lr_factor,
    read_metrics,
)
from ait.engine.checkpoint import capture_rng_state, restore_rng_state
from ait.engine.ema import delivered_weights


class StandIn(nn.Module):
    """Regresses depth from the image with a 1x1 conv; `nan_at` makes the loss NaN on that call."""

    def __init__(self, nan_at: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.head = nn.Conv2d(3, 1, 1)
        self.dropout = nn.Dropout(dropout)
        self.calls = 0
        self.nan_at = nan_at

    def forward(self, batch):
        self.calls += 1
        depth = batch["depth"]
        pred = self.head(self.dropout(depth["image"]))
        loss = ((pred - depth["depth"]) ** 2).mean()
        if self.nan_at is not None and self.calls == self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss, "depth_mse": float(loss.detach())}

    training_step = forward


def _dataset(n: int = 24, size: int = 4, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        image = torch.rand(3, size, size, generator=g)
        out.append({"image": image, "depth": 1.0 + 2.0 * image[:1] + 0.5 * image[1:2], "image_id": i})
    return out


def _cfg(tmp_path, name="run", **overrides):
    base = {
        "work_dir": str(tmp_path / name),
        "optim.max_iters": 8,
        "optim.lr": 0.05,
        "optim.warmup_iters": 2,
        "data.depth_batch": 4,
        "checkpoint_interval": 2,
        "keep_checkpoints": 0,
        "log_interval": 2,
        "progress": False,
    }
    base.update(overrides)
    return create_config("cpu_depth_tiny", base)


def _trainer(cfg, make=StandIn, **kwargs) -> Trainer:
    # the model is built inside the trainer, after it seeds the RNGs (as build_task_solver is)
    return Trainer(
        cfg,
        model_factory=lambda _: make(),
        datasets={"depth": _dataset()},
        evaluate=False,
        log=lambda _: None,
        **kwargs,
    )


def _dropout(p: float = 0.3):
    return lambda: StandIn(dropout=p)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------- schedules


def test_step_schedule_hand_worked():
    cfg = OptimConfig(
        schedule="step", max_iters=100, warmup_iters=10, warmup_ratio=0.1, step_milestones=(50, 80)
    )
    assert lr_factor(0, cfg) == pytest.approx(0.1)  # warm-up starts at 0.1x
    assert lr_factor(5, cfg) == pytest.approx(1 - 0.5 * 0.9)  # halfway: 0.55
    assert lr_factor(10, cfg) == 1.0
    assert lr_factor(49, cfg) == 1.0
    assert lr_factor(50, cfg) == pytest.approx(0.1)
    assert lr_factor(80, cfg) == pytest.approx(0.01)


def test_linear_schedule_hand_worked():
    cfg = OptimConfig(schedule="linear", max_iters=100, warmup_iters=0, min_lr_ratio=0.01, step_milestones=())
    assert lr_factor(0, cfg) == 1.0
    assert lr_factor(50, cfg) == pytest.approx(1 - 0.99 * 0.5)
    assert lr_factor(100, cfg) == pytest.approx(0.01)


def test_paper_depth_schedule_numbers():
    optim = create_config("swinv2b_480reso_depthonly").optim
    assert lr_factor(0, optim) == pytest.approx(0.1)
    assert lr_factor(500, optim) == 1.0
    assert lr_factor(18179, optim) == 1.0 and lr_factor(18180, optim) == pytest.approx(0.1)


def test_optimizer_layer_decay_groups_cover_each_trainable_parameter_once():
    from ait_backbone import create_backbone

    model = nn.Module()
    model.backbone = create_backbone("swinv2-tiny-cpu")
    model.head = nn.Linear(4, 4)
    model.frozen = nn.Linear(4, 4).requires_grad_(False)
    optim = build_optimizer(model, OptimConfig(lr=1e-3, weight_decay=0.05, layer_decay=0.5))
    seen = [id(p) for g in optim.param_groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable) and len(seen) == len(set(seen))
    head_groups = [g for g in optim.param_groups if any(p is model.head.weight for p in g["params"])]
    assert head_groups[0]["lr"] == pytest.approx(1e-3) and head_groups[0]["weight_decay"] == 0.05
    bias_group = next(g for g in optim.param_groups if any(p is model.head.bias for p in g["params"]))
    assert bias_group["weight_decay"] == 0.0
    assert min(g["lr"] for g in optim.param_groups) < 1e-3 * 0.5  # deep layer decay applied to the stem


# ------------------------------------------------------------------------------------------ data order


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 30), batch=st.integers(1, 12), world=st.integers(1, 4), steps=st.integers(1, 6))
def test_rank_shares_partition_the_single_process_batches(length, batch, world, steps):
    single = TaskStream(length, batch, seed=3, task="depth")
    ranks = [TaskStream(length, batch, seed=3, task="depth", rank=r, world_size=world) for r in range(world)]
    for _ in range(steps):
        expected = single.next_keys()
        got = [key for stream in ranks for key in stream.next_keys()]
        assert got == expected
    sizes = [rank_share(batch, r, world) for r in range(world)]
    assert sizes[0][0] == 0 and sizes[-1][1] == batch


def test_stream_epochs_are_permutations_and_differ():
    stream = TaskStream(10, 5, seed=0, task="depth")
    first = [i for _ in range(2) for i, _ in stream.next_keys()]
    second = [i for _ in range(2) for i, _ in stream.next_keys()]
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second and stream.epoch == 2


# ----------------------------------------------------------------------------------------- checkpoints


def test_atomic_save_leaves_no_temp_file_and_loads_weights_only(tmp_path):
    path = atomic_torch_save({"format": "ait-checkpoint-v1", "x": torch.arange(3)}, tmp_path / "a" / "c.pt")
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["c.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3))


def test_load_checkpoint_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bad\.pt"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not an AiT task-solver checkpoint"):
        load_checkpoint(other)


def test_rng_state_round_trip():
    state = capture_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(2))  # noqa: NPY002
    restore_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(2))  # noqa: NPY002
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


# --------------------------------------------------------------------------------------------- training


def test_training_writes_metrics_config_and_weights_only_checkpoints(tmp_path):
    cfg = _cfg(tmp_path)
    result = _trainer(cfg).train()
    assert result.step == 8
    steps = [s for s, _ in list_checkpoints(cfg.work_dir)]
    assert steps == [2, 4, 6, 8]
    state = load_checkpoint(result.checkpoint)
    assert state["step"] == 8 and state["data"] == {"depth": 32}
    assert json.loads(state["config"])["optim"]["max_iters"] == 8
    records = [r for r in read_metrics(cfg.work_dir) if r["kind"] == "train"]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    assert all(math.isfinite(r["loss"]) and r["images_per_s"] > 0 and r["lr"] > 0 for r in records)
    assert records[-1]["loss"] < records[0]["loss"]  # it learns
    assert json.loads((tmp_path / "run" / "config.json").read_text())["name"] == "cpu_depth_tiny"


def test_seeded_runs_are_identical(tmp_path):
    a, b = _trainer(_cfg(tmp_path, "a"), _dropout()), _trainer(_cfg(tmp_path, "b"), _dropout())
    a.train()
    b.train()
    a, b = a.model, b.model
    for key, value in _weights(a).items():
        assert torch.equal(value, _weights(b)[key])


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path):
    # dropout on: the restored RNG state matters too
    full = _trainer(_cfg(tmp_path, "full"), _dropout())
    full.train()
    full = full.model

    interrupted = _cfg(tmp_path, "part")
    # interrupted after step 5: the last checkpoint is at step 4, step 5 is lost
    _trainer(interrupted, _dropout()).train(stop_at_step=5)
    assert [s for s, _ in list_checkpoints(interrupted.work_dir)] == [2, 4]
    resumed = _trainer(_cfg(tmp_path, "part"), _dropout())
    result = resumed.train(resume=True)
    resumed_model = resumed.model
    assert result.step == 8
    for key, value in _weights(full).items():
        assert torch.equal(value, _weights(resumed_model)[key]), key


def test_resume_with_another_config_is_a_clear_error(tmp_path):
    _trainer(_cfg(tmp_path, "r")).train()
    other = _cfg(tmp_path, "r", **{"optim.lr": 0.01})
    with pytest.raises(ValueError, match=r"(?s)another config.*optim.lr: 0.05 \(checkpoint\) vs 0.01"):
        _trainer(other).train(resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _trainer(_cfg(tmp_path, "empty")).train(resume=True)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, "nan")
    trainer = _trainer(cfg, lambda: StandIn(nan_at=5))  # the 5th forward: step 5
    with pytest.raises(NonFiniteLossError, match="step 5") as info:
        trainer.train()
    assert info.value.step == 5
    assert [s for s, _ in list_checkpoints(cfg.work_dir)] == [2, 4]
    good = load_checkpoint(info.value.last_checkpoint)
    assert good["step"] == 4 and all(torch.isfinite(v).all() for v in good["model"].values())
    assert not [p for p in (tmp_path / "nan" / "checkpoints").iterdir() if p.name.startswith(".")]


def test_gradient_accumulation_matches_the_bigger_batch(tmp_path):
    # the global batch stays 4 images; accumulation runs it as two passes of 2
    big = _trainer(_cfg(tmp_path, "big", **{"data.depth_batch": 4}))
    accumulated = _trainer(_cfg(tmp_path, "acc", **{"data.depth_batch": 4, "optim.accumulate": 2}))
    big.train()
    accumulated.train()
    big, accumulated = big.model, accumulated.model
    for key, value in _weights(big).items():
        torch.testing.assert_close(_weights(accumulated)[key], value, rtol=1e-5, atol=1e-6)


def test_missing_dataset_paths_are_clear_errors(tmp_path):
    from ait.data import build_train_dataset

    cfg = create_config("swinv2b_480reso_depthonly", {"data.nyu_root": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_train_dataset(cfg, "depth")
    cfg = create_config("swinv2b_480reso_depthonly")
    with pytest.raises(FileNotFoundError, match=r"data\.nyu_root"):
        build_train_dataset(cfg, "depth")
    cfg = create_config("swinv2b_640reso_inssegonly", {"data.coco_root": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="train2017"):
        build_train_dataset(cfg, "insseg")


def test_load_from_missing_file_names_it(tmp_path):
    cfg = _cfg(tmp_path, "lf", load_from=str(tmp_path / "det.pth"))
    with pytest.raises(FileNotFoundError, match=r"det\.pth"):
        _trainer(cfg)


def test_augmented_samples_depend_on_the_draw_not_on_the_order_or_process_state():
    from ait.data import build_train_dataset

    cfg = create_config("cpu_depth_tiny", {"data.synthetic_train_length": 3})
    dataset = build_train_dataset(cfg, "depth")
    forward = [dataset[(i % 3, i)] for i in range(6)]
    torch.manual_seed(123)  # global RNG state must not matter
    backward = [dataset[(i % 3, i)] for i in reversed(range(6))][::-1]
    for a, b in zip(forward, backward):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["depth"], b["depth"])
    # the same room drawn again later (another epoch) gets other augmentation
    assert not torch.equal(forward[0]["image"], forward[3]["image"])


def test_training_crop_stays_when_augmentation_is_off():
    from ait.data import build_train_dataset

    cfg = create_config(
        "cpu_depth_tiny",
        {
            "data.synthetic_train_length": 2,
            "data.augment": False,
            "data.image_size": (64, 96),
            "data.crop_size": (64, 64),
        },
    )
    sample = build_train_dataset(cfg, "depth")[(0, 0)]
    assert sample["image"].shape[-2:] == (64, 64) and sample["depth"].shape[-2:] == (64, 64)


def test_evaluation_may_change_decoding_settings_but_not_the_architecture():
    from ait.engine.checkpoint import config_differences

    saved = create_config("cpu_joint_tiny")
    decoding = create_config(
        "cpu_joint_tiny",
        {
            "model.top_p": 0.5,
            "model.tau_depth": 0.5,
            "model.soft_input": False,
            "model.decode_weights": "int8",
        },
    )
    assert config_differences(saved, decoding, architecture_only=True) == []
    # resuming training: tau / top_p / soft input are part of the run; the decoding weights are not
    resumed = config_differences(saved, decoding)
    assert [d.split(":")[0] for d in resumed] == ["model.soft_input", "model.tau_depth", "model.top_p"]
    wider = create_config("cpu_joint_tiny", {"model.d_model": 32})
    assert [d.split(":")[0] for d in config_differences(saved, wider, architecture_only=True)] == [
        "model.d_model"
    ]


def test_a_solver_checkpoint_rebuilds_its_tokenizer_trained_with_preset_overrides(tmp_path):
    # the demo's depth tokenizer is `depth-small` with other channels: a solver checkpoint must rebuild that
    # architecture by itself (`ait predict|eval --checkpoint`), not the preset's
    from ait.engine.inference import load_solver
    from ait_tokenizer import create_tokenizer, save_tokenizer

    tokenizer = create_tokenizer("depth-small", channels=(8, 16), mask_patch_size=4)
    save_tokenizer(tokenizer.eval(), tmp_path / "depth.safetensors")
    cfg = create_config(
        "cpu_depth_tiny",
        {
            "model.depth_tokenizer.checkpoint": str(tmp_path / "depth.safetensors"),
            "work_dir": str(tmp_path / "run"),
            "optim.max_iters": 1,
            "optim.warmup_iters": 0,
            "data.depth_batch": 2,
            "data.synthetic_train_length": 4,
            "data.synthetic_val_length": 2,
            "progress": False,
            "checkpoint_interval": 1,
        },
    )
    trainer = Trainer(cfg, evaluate=False, log=lambda message: None)
    trainer.train()
    (tmp_path / "depth.safetensors").unlink()  # the checkpoint alone must do
    solver, _ = load_solver(trainer.last_checkpoint)
    assert solver.depth_head.tokenizer.config.channels == (8, 16)
    images = torch.rand(1, 3, 64, 64)
    expected = trainer.model.eval().predict_depth(images)
    assert torch.equal(solver.predict_depth(images), expected)


def test_malformed_stored_tokenizer_architectures_name_the_file(tmp_path):
    from ait.engine.checkpoint import stored_tokenizer_configs

    assert stored_tokenizer_configs({}, "old.pt") is None  # written before they were saved: the presets
    with pytest.raises(ValueError, match=r"bad\.pt: the stored tokenizer architectures are malformed"):
        stored_tokenizer_configs({"tokenizers": "[1, 2]"}, "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt"):
        stored_tokenizer_configs({"tokenizers": "{not json"}, "bad.pt")


# -------------------------------------------------------------------------------------- weight average


def _ema_cfg(tmp_path, name, **overrides):
    return _cfg(tmp_path, name, **{"optim.ema_decay": 0.5, **overrides})


def test_weight_average_is_delivered_and_checkpointed(tmp_path):
    plain = _trainer(_cfg(tmp_path, "plain"))
    plain.train()
    averaged = _trainer(_ema_cfg(tmp_path, "ema"))
    result = averaged.train()
    state = load_checkpoint(result.checkpoint)
    # the same raw run (the average does not touch training), and the average beside it
    for key, value in _weights(plain.model).items():
        assert torch.equal(state["model"][key], value)
    assert set(state["ema"]) == {"head.weight", "head.bias"}
    assert not torch.equal(state["ema"]["head.weight"], state["model"]["head.weight"])
    # the trainer's model after the run is the average, as is what inference and load_from take
    for key, value in state["ema"].items():
        assert torch.equal(averaged.model.state_dict()[key], value)
        assert torch.equal(delivered_weights(state)[key], value)


def test_a_run_without_the_average_delivers_its_last_weights(tmp_path):
    trainer = _trainer(_cfg(tmp_path, "plain"))
    state = load_checkpoint(trainer.train().checkpoint)
    assert "ema" not in state
    assert delivered_weights(state) is state["model"]


def test_resume_continues_the_weight_average_exactly(tmp_path):
    full = _trainer(_ema_cfg(tmp_path, "full"), _dropout())
    full.train()
    _trainer(_ema_cfg(tmp_path, "part"), _dropout()).train(stop_at_step=5)
    assert [s for s, _ in list_checkpoints(tmp_path / "part")] == [2, 4]
    resumed = _trainer(_ema_cfg(tmp_path, "part"), _dropout())
    resumed.train(resume=True)
    final_full = load_checkpoint(list_checkpoints(tmp_path / "full")[-1][1])
    final_resumed = load_checkpoint(list_checkpoints(tmp_path / "part")[-1][1])
    for part in ("model", "ema"):
        for key, value in final_full[part].items():
            assert torch.equal(final_resumed[part][key], value), (part, key)


def test_resume_refuses_a_checkpoint_without_or_with_a_broken_average(tmp_path):
    _trainer(_ema_cfg(tmp_path, "r")).train(stop_at_step=3)
    path = list_checkpoints(tmp_path / "r")[-1][1]
    state = load_checkpoint(path)
    state["ema"]["head.weight"] = state["ema"]["head.weight"] * float("nan")
    atomic_torch_save(state, path)
    with pytest.raises(ValueError, match=r"(?i)non-finite|nan"):
        _trainer(_ema_cfg(tmp_path, "r")).train(resume=True)
    del state["ema"]
    atomic_torch_save(state, path)
    with pytest.raises(ValueError, match=r"no weight average.*optim\.ema_decay"):
        _trainer(_ema_cfg(tmp_path, "r")).train(resume=True)


def test_load_from_takes_the_weight_average(tmp_path):
    source = _trainer(_ema_cfg(tmp_path, "source")).train().checkpoint
    average = load_checkpoint(source)["ema"]
    trainer = _trainer(_cfg(tmp_path, "next", load_from=str(source)))
    for key, value in average.items():
        assert torch.equal(trainer.model.state_dict()[key], value)


def test_evaluation_during_training_scores_the_weight_average(tmp_path, monkeypatch):
    import ait.engine.evaluate as evaluate_module

    seen = []

    def record(cfg, model, dist=None):
        seen.append(model.head.weight.detach().clone())
        return {}

    monkeypatch.setattr(evaluate_module, "evaluate_solver", record)
    cfg = _ema_cfg(tmp_path, "ev", eval_interval=4)
    trainer = Trainer(
        cfg, model_factory=lambda _: StandIn(), datasets={"depth": _dataset()}, log=lambda _: None
    )
    trainer.train(stop_at_step=5)  # evaluates at step 4, then stops without the final evaluation
    assert len(seen) == 1
    state = load_checkpoint(list_checkpoints(tmp_path / "ev")[-1][1])  # step 4
    assert torch.equal(seen[0], state["ema"]["head.weight"])
    assert not torch.equal(seen[0], state["model"]["head.weight"])
    # the evaluation gave the raw weights back: step 5 trained on from them, as a run without the average does
    plain = _trainer(_cfg(tmp_path, "plain", eval_interval=4))
    plain.train(stop_at_step=5)
    for key, value in _weights(plain.model).items():
        assert torch.equal(_weights(trainer.model)[key], value), key


def test_load_solver_takes_the_weight_average(tmp_path, untrained_run):
    from ait.engine.inference import load_solver

    path = untrained_run(tmp_path / "run")
    state = torch.load(path, weights_only=True)
    average = {
        k: v + 1.0 for k, v in state["model"].items() if k.startswith("decoder.") and v.is_floating_point()
    }
    atomic_torch_save({**state, "ema": average}, path)
    solver, _ = load_solver(path)
    for key, value in average.items():
        assert torch.equal(solver.state_dict()[key], value), key
    untouched = next(
        k for k in state["model"] if k.startswith("backbone.") and state["model"][k].is_floating_point()
    )
    assert torch.equal(solver.state_dict()[untouched], state["model"][untouched])
    # a broken average is refused like broken weights
    atomic_torch_save({**state, "ema": {k: v * float("nan") for k, v in average.items()}}, path)
    with pytest.raises(ValueError, match=r"(?i)non-finite|nan"):
        load_solver(path)
