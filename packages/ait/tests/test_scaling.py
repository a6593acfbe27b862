"""Fitting the paper's recipes on fewer GPUs: gradient accumulation and backbone activation checkpointing.

Accumulation splits the global batch into micro-batches and normalises every micro-batch's loss by the
token counts of the whole global batch, so k micro-batches give the gradient of one step on the full batch
(with a task absent from one micro-batch); the depth SILog, a per-batch statistic,
follows the original's per-GPU grouping (each micro-batch is one "GPU" of the original's larger cluster).
Checkpointing recomputes the backbone's blocks in the backward pass and must not change a gradient.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch import nn

from ait.config import ConfigError, create_config
from ait.config.validation import resolve_accumulation
from ait.data import build_task_streams
from ait.engine import Trainer
from ait.engine.distributed import DistInfo
from ait.engine.trainer import split_micro_batches
from ait.model import build_task_solver


def assert_same_gradient(actual, expected, name):
    """float32 equality up to summation order. The task-solver cannot run in float64: its fp32 islands
    under autocast (backbone features into the decoder, tokenizer encode and soft decode) cast to float32.
    A wrong normalisation is off by a factor (0.5 for the lone depth image below), far outside this."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * scale + 1e-12, msg=name)


class Solver(nn.Module):
    """The task-solver built with a fixed seed (an engine model factory)."""

    def __init__(self, cfg):
        super().__init__()
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # untrained tokenizers
            self.solver = build_task_solver(cfg)

    def training_step(self, batch, normalisers=None):
        return self.solver.training_step(batch, normalisers=normalisers)

    forward = training_step

    def token_counts(self, batch):
        return self.solver.token_counts(batch)


def _joint_cfg(tmp_path, name, **overrides):
    base = {
        "work_dir": str(tmp_path / name),
        # one NYU image and three COCO-like images per step: the first micro-batch of two holds no depth
        "data.depth_batch": 1,
        "data.insseg_batch": 3,
        "model.dropout": 0.0,
        "model.drop_path": 0.0,
        "model.backbone_drop_path": 0.0,
        "optim.grad_clip": None,
        "data.augment": False,
        "progress": False,
    }
    base.update(overrides)
    return create_config("cpu_joint_tiny", base)


class PerMicroBatch(nn.Module):
    """The same solver without `token_counts`: the engine then normalises each micro-batch alone."""

    def __init__(self, cfg):
        super().__init__()
        self.inner = Solver(cfg)

    def training_step(self, batch, normalisers=None):
        return self.inner.training_step(batch, normalisers)

    forward = training_step


def _step_gradients(cfg, factory=Solver) -> dict[str, torch.Tensor]:
    """The gradients one engine step leaves (the optimiser's update itself skipped: AdamW's first step is
    about lr x sign(g), blind to a wrong normalisation)."""
    trainer = Trainer(cfg, model_factory=factory, evaluate=False, log=lambda message: None)
    trainer.optimizer.step = lambda *args, **kwargs: None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the scheduler notices the patched step
        trainer._train_step()
    return {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}


def test_split_micro_batches_cuts_every_per_sample_entry_and_drops_empty_tasks(tmp_path):
    cfg = _joint_cfg(tmp_path, "split")
    batch = build_task_streams(cfg).next_batch()
    first, second = split_micro_batches(batch, 2)
    assert set(first) == {"insseg"} and set(second) == {"depth", "insseg"}
    assert first["insseg"]["image"].shape[0] == 1 and second["insseg"]["image"].shape[0] == 2
    assert list(second["insseg"]["sequence_seed"]) == list(batch["insseg"]["sequence_seed"][1:])
    assert len(second["insseg"]["boxes"]) == len(second["insseg"]["masks"]) == 2
    assert torch.equal(second["depth"]["depth"], batch["depth"]["depth"])


def test_accumulation_equals_one_step_on_the_full_batch(tmp_path):
    # Without the depth SILog every loss term is a per-token sum: k micro-batches normalised by the global
    # batch's token counts give exactly the gradient of the full batch, even with depth in one micro-batch
    # only (normalising each micro-batch alone would weigh that depth image twice as much).
    overrides = {"loss.depth_aux_weight": 0.0}
    full = _step_gradients(_joint_cfg(tmp_path, "full", **overrides))
    accumulated = _step_gradients(_joint_cfg(tmp_path, "acc", **overrides, **{"optim.accumulate": 2}))
    assert set(accumulated) == set(full)
    for name, grad in full.items():
        assert_same_gradient(accumulated[name], grad, name)
    # normalising each micro-batch alone (a model that cannot count its tokens up front) would not pass:
    # the lone depth image weighs twice as much
    mean = _step_gradients(
        _joint_cfg(tmp_path, "mean", **overrides, **{"optim.accumulate": 2}), PerMicroBatch
    )
    name = "solver.decoder.task_prompts.depth"
    assert full[name].abs().max() > 1e-6
    assert_same_gradient(mean["inner." + name], full[name] * 0.5, name)


def test_accumulation_with_silog_is_the_originals_per_gpu_grouping(tmp_path):
    # With SILog each micro-batch is one "GPU" of the original: task t's gradient is
    # sum_m grad(S_t,m) / sum_m n_t,m, where S_t,m = CE sum (+ aux sum) (+ SILog_m x n_t,m). Restated here
    # from single-micro-batch losses: with the other task's weight at 0, a micro-batch's own step returns
    # S_t,m / n_t,m, so S_t,m = n_t,m x that loss.
    cfg = _joint_cfg(tmp_path, "acc", **{"optim.accumulate": 2})
    accumulated = _step_gradients(cfg)

    model = Solver(cfg)
    batch = build_task_streams(cfg).next_batch()
    micro_batches = split_micro_batches(batch, 2)
    reference: dict[str, torch.Tensor] = {}
    for task, other in (("depth", "insseg_task_weight"), ("insseg", "depth_task_weight")):
        model.solver.cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, **{other: 0.0}))
        model.zero_grad(set_to_none=True)
        total = 0.0
        for micro in micro_batches:
            out = model.training_step(micro)
            tokens = out[f"{task}_tokens"]
            total += tokens
            if tokens:
                (out["loss"] * tokens).backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                reference[name] = reference.get(name, 0.0) + p.grad / total
    assert set(accumulated) == set(reference)
    for name, grad in reference.items():
        assert_same_gradient(accumulated[name], grad, name)


def test_backbone_grad_checkpointing_gives_the_same_gradients(monkeypatch):
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    cfg = create_config("cpu_joint_tiny", {"model.backbone_drop_path": 0.2, "data.augment": False})
    batch = build_task_streams(cfg).next_batch()
    grads = {}
    for enabled in (False, True):
        cfg.model.backbone_grad_checkpointing = enabled
        model = Solver(cfg).train()
        assert all(stage.grad_checkpointing == enabled for stage in model.solver.backbone.layers)
        calls.clear()
        torch.manual_seed(7)  # the same drop-path draws; checkpointing replays them in the recompute
        model.training_step(batch)["loss"].backward()
        blocks = sum(len(stage.blocks) for stage in model.solver.backbone.layers)
        assert len(calls) == (blocks * len(batch) if enabled else 0)  # one backbone pass per task
        grads[enabled] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(grads[True]) == set(grads[False])
    for name, grad in grads[False].items():
        assert_same_gradient(grads[True][name], grad, name)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("optim.accumulate", 0, r"optim\.accumulate: expected an integer >= 1"),
        ("optim.accumulate", -3, r"optim\.accumulate: expected an integer >= 1"),
        ("data.images_per_gpu", 0, r"data\.images_per_gpu: expected None .* or an integer >= 1"),
        (
            "model.backbone_grad_checkpointing",
            "yes",
            r"model\.backbone_grad_checkpointing: expected true or false",
        ),
    ],
)
def test_invalid_accumulation_and_checkpointing_values_name_the_key_and_the_allowed_values(
    key, value, expected
):
    cfg = create_config("swinv2b_480reso_depthonly")
    section, field = key.split(".")
    setattr(getattr(cfg, section), field, value)
    with pytest.raises(ConfigError, match=expected):
        cfg.validate()


@pytest.mark.parametrize(
    "option", ["optim.accumulate=two", "optim.accumulate=1.5", "model.backbone_grad_checkpointing=maybe"]
)
def test_unparsable_values_are_config_errors(option):
    with pytest.raises(ConfigError, match=option.split("=")[0].replace(".", r"\.")):
        create_config("swinv2b_480reso_depthonly", [option])


def test_per_gpu_batches_resolve_to_the_micro_batches_that_keep_the_global_batch():
    depth = create_config("swinv2b_480reso_depthonly")  # 24 NYU images per step
    joint = create_config("swinv2b_640reso_joint")  # 60 COCO + 4 NYU
    assert resolve_accumulation(depth, 8) == 1
    depth.data.images_per_gpu = 1
    assert resolve_accumulation(depth, 8) == 3
    joint.data.images_per_gpu = 2
    assert resolve_accumulation(joint, 8) == 4
    joint.data.images_per_gpu = None
    joint.optim.accumulate = 8
    assert resolve_accumulation(joint, 8) == 8


@pytest.mark.parametrize(
    ("overrides", "world", "expected"),
    [
        (
            {"data.images_per_gpu": 2},
            8,
            r"data\.images_per_gpu: expected a divisor of the per-process share of the global batch "
            r"\(24 images over 8 process\(es\) = 3 each\): one of \[1, 3\], got 2",
        ),
        (
            {"data.images_per_gpu": 1},
            5,
            r"data\.images_per_gpu: the global batch of 24 images does not split",
        ),
        ({"optim.accumulate": 5}, 8, r"optim\.accumulate: expected .* one of \[1, 3\], got 5"),
        ({"data.images_per_gpu": 1, "optim.accumulate": 2}, 8, r"optim\.accumulate: expected 1 or 3"),
    ],
)
def test_a_per_gpu_batch_that_does_not_divide_the_global_batch_is_refused(overrides, world, expected):
    cfg = create_config("swinv2b_480reso_depthonly", overrides)
    with pytest.raises(ConfigError, match=expected):
        resolve_accumulation(cfg, world)


def test_the_trainer_refuses_it_before_data_or_model_are_built(tmp_path):
    def no_model(cfg):
        raise AssertionError("the model was built")

    # no NYU root: building the data would fail with FileNotFoundError, after the check
    cfg = create_config(
        "swinv2b_480reso_depthonly", {"data.images_per_gpu": 2, "work_dir": str(tmp_path / "w")}
    )
    with pytest.raises(ConfigError, match=r"data\.images_per_gpu"):
        Trainer(cfg, model_factory=no_model, dist_info=DistInfo(world_size=8), log=lambda m: None)
