"""Per-task decoding (`model.decoding`): a joint solver decodes depth with AiT-P and instances with AiT.

The named configs keep the original's meaning (AiT-P configs parallel, every other autoregressive); a
mixed solver trains and decodes each task exactly as a solver of that single mode with the same weights;
a key naming an unknown task or mode is a ConfigError / one `ait: error:` line naming the allowed values.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from ait.cli import main
from ait.config import Config, ConfigError, ModelConfig, TokenizerRef, create_config, list_configs
from ait.model import build_task_solver

SIZE = 64
MIXED = {"depth": "parallel", "insseg": "autoregressive"}


def tiny_config(**model_overrides) -> Config:
    model = ModelConfig(
        backbone="swinv2-tiny-cpu",
        backbone_drop_path=0.0,
        backbone_overrides={"img_size": SIZE},
        d_model=32,
        nhead=2,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dim_feedforward=64,
        dropout=0.0,
        drop_path=0.0,
        num_bins=SIZE,
        num_classes=5,
        tasks=("depth", "insseg"),
        max_objects=2,
        canvas=SIZE,
        depth_size=(SIZE, SIZE),
        depth_tokenizer=TokenizerRef("depth-small"),
        mask_tokenizer=TokenizerRef("mask-small"),
    )
    return Config(model=dataclasses.replace(model, **model_overrides))


def build(cfg: Config):
    torch.manual_seed(0)  # the same weights for every decoding mode (the architecture does not change)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained tokenizer presets: expected here
        return build_task_solver(cfg).eval()


# ------------------------------------------------------------------------------------------ named configs
@pytest.mark.parametrize("name", [n for n in list_configs("solver") if not n.startswith("cpu_")])
def test_the_originals_configs_keep_their_meaning(name):
    cfg = create_config(name)
    expected = "parallel" if "_parallel_" in name else "autoregressive"
    assert cfg.model.decoding == {}
    assert {cfg.model.decoding_mode(task) for task in cfg.model.tasks} == {expected}


def test_decoding_names_a_task_and_overrides_parallel_for_it_only():
    model = tiny_config(parallel=True, decoding={"insseg": "autoregressive"}).model
    assert model.decoding_mode("insseg") == "autoregressive"
    assert model.decoding_mode("depth") == "parallel"
    cfg = create_config("cpu_joint_tiny", {"model.decoding": MIXED})
    assert [cfg.model.decoding_mode(t) for t in ("depth", "insseg")] == ["parallel", "autoregressive"]
    # the key survives the JSON stored with every checkpoint
    assert Config.from_json(cfg.to_json()).model.decoding == MIXED


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("decoding", "message"),
    [
        (
            {"dept": "parallel"},
            "model.decoding: expected keys among model.tasks ('depth', 'insseg'), got 'dept'",
        ),
        ({"det": "parallel"}, "got 'det'"),  # a task this config does not train
        (
            {"depth": "paralel"},
            "model.decoding['depth']: expected one of ('autoregressive', 'parallel'), got 'paralel'",
        ),
        ({"insseg": True}, "one of ('autoregressive', 'parallel'), got True"),
    ],
)
def test_unknown_task_or_mode_is_a_config_error_naming_the_allowed_values(decoding, message):
    with pytest.raises(ConfigError) as error:
        create_config("cpu_joint_tiny", {"model.decoding": decoding})
    assert message in str(error.value)


def test_the_solver_refuses_an_unvalidated_bad_decoding_too():
    with pytest.raises(ValueError, match=r"model.decoding must map tasks of model.tasks .* 'warp'"):
        build(tiny_config(decoding={"depth": "warp"}))


def test_a_bad_decoding_key_on_the_command_line_is_one_error_line(capsys):
    argv = [
        "show-config",
        "cpu_joint_tiny",
        "--cfg-options",
        "model.decoding={'depth': 'parallel', 'seg': 'ar'}",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ait: error: model.decoding: expected keys among model.tasks ('depth', 'insseg')")
    assert err.count("\n") == 1 and "Traceback" not in err


# ------------------------------------------------------------------------------------------ mixed solver
def _batches():
    gen = torch.Generator().manual_seed(0)
    depth = torch.rand(2, 1, SIZE, SIZE, generator=gen) * 4 + 0.5
    boxes = [torch.tensor([[4.0, 6.0, 30.0, 40.0]]), torch.tensor([[10.0, 10.0, 50.0, 60.0], [0, 0, 9, 9]])]
    masks = []
    for image_boxes in boxes:
        m = torch.zeros(len(image_boxes), SIZE, SIZE, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(image_boxes.long().tolist()):
            m[i, y1:y2, x1:x2] = 1
        masks.append(m)
    return {
        "depth": {"image": torch.rand(2, 3, SIZE, SIZE, generator=gen), "depth": depth},
        "insseg": {
            "image": torch.randn(2, 3, SIZE, SIZE, generator=gen),
            "boxes": boxes,
            "labels": [torch.tensor([1]), torch.tensor([0, 4])],
            "masks": masks,
        },
    }


def test_a_mixed_solver_decodes_each_task_as_the_single_mode_solver_with_the_same_weights():
    mixed = build(tiny_config(decoding=MIXED))
    parallel = build(tiny_config(parallel=True, soft_input=False))
    autoregressive = build(tiny_config(parallel=False))
    for other in (parallel, autoregressive):
        other.load_state_dict(mixed.state_dict())
    images = _batches()["depth"]["image"]
    torch.testing.assert_close(mixed.predict_depth(images), parallel.predict_depth(images), rtol=0, atol=0)
    assert not torch.equal(mixed.predict_depth(images), autoregressive.predict_depth(images))

    def instances(solver):
        return solver.predict_instances(images, generator=torch.Generator().manual_seed(3))

    for ours, theirs in zip(instances(mixed), instances(autoregressive), strict=True):
        for key in ("boxes", "labels", "scores", "masks"):
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)


def test_a_mixed_solver_trains_depth_in_one_masked_pass_and_instances_by_teacher_forcing(monkeypatch):
    solver = build(tiny_config(decoding=MIXED)).train()
    calls = []
    forward = solver.decoder.forward

    def spy(memory, input_ids, task, parallel=False, **kwargs):
        calls.append((task, parallel, input_ids is None))
        return forward(memory, input_ids, task, parallel=parallel, **kwargs)

    monkeypatch.setattr(solver.decoder, "forward", spy)
    out = solver.training_step(_batches(), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"])
    assert sorted(calls) == [("depth", True, True), ("insseg", False, False)]


def test_demo_label_names_each_tasks_decoding():
    from ait.config import create_config
    from ait.demo import demo_label

    assert demo_label(create_config("cpu_joint_demo")) == "AiT demo (joint; depth AiT-P)"
    assert demo_label(create_config("cpu_joint_tiny")) == "AiT demo (joint)"
    assert demo_label(create_config("cpu_depth_tiny", {"model.parallel": True})) == "AiT-P demo (depth)"
