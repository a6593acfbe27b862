"""Config registry, typed `--cfg-options` overrides and the JSON round trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ait.config import (
    Config,
    ConfigError,
    TokenizerRef,
    apply_overrides,
    config_kind,
    create_config,
    get_by_path,
    list_configs,
    valid_keys,
)

SOLVER_CONFIGS = list_configs(kind="solver")
PAPER_CONFIGS = [n for n in SOLVER_CONFIGS if n.startswith("swinv2")]
ORIGINAL_NAMES = [
    "swinv2b_480reso_depthonly",
    "swinv2b_480reso_parallel_depthonly",
    "swinv2l_480reso_depthonly",
    "swinv2l_480reso_parallel_depthonly",
    "swinv2b_640reso_detonly",
    "swinv2b_640reso_inssegonly",
    "swinv2b_640reso_joint",
    "swinv2b_480reso_depthonly_wosoft",
    "swinv2b_640reso_inssegonly_wosoft",
]


def test_registry_holds_every_original_config_and_the_cpu_ones():
    for name in [*ORIGINAL_NAMES, "cpu_depth_tiny", "cpu_joint_tiny", "cpu_joint_demo"]:
        assert name in SOLVER_CONFIGS
        assert config_kind(name) == "solver"


@pytest.mark.parametrize("name", SOLVER_CONFIGS)
def test_every_config_builds_validates_and_round_trips(name):
    cfg = create_config(name)
    assert cfg.name == name
    cfg.validate()
    restored = Config.from_json(cfg.to_json())
    assert restored == cfg
    # fresh objects: mutating one does not leak into the next
    cfg.optim.lr = 123.0
    assert create_config(name).optim.lr != 123.0


# (name) -> DESIGN §4 numbers: lr, wd, layer decay, global batch(es), iterations, warm-up, schedule, clip
PAPER_NUMBERS = {
    "swinv2b_480reso_depthonly": dict(
        lr=2e-4, wd=0.05, ld=0.9, depth=24, coco=0, iters=25250, warm=500, clip=10.0
    ),
    "swinv2l_480reso_depthonly": dict(
        lr=1e-4, wd=0.075, ld=0.9, depth=24, coco=0, iters=25250, warm=500, clip=10.0
    ),
    "swinv2b_640reso_inssegonly": dict(
        lr=1e-4, wd=0.05, ld=0.85, depth=0, coco=16, iters=366500, warm=14660, clip=50.0
    ),
    "swinv2b_640reso_joint": dict(
        lr=8e-4, wd=0.05, ld=0.85, depth=4, coco=60, iters=302875, warm=12115, clip=10.0
    ),
    "swinv2b_640reso_detonly": dict(
        lr=1e-3, wd=0.05, ld=0.85, depth=0, coco=128, iters=183300, warm=18330, clip=1.0
    ),
}


@pytest.mark.parametrize("name", sorted(PAPER_NUMBERS))
def test_paper_configs_carry_the_design_hyperparameters(name):
    cfg, want = create_config(name), PAPER_NUMBERS[name]
    assert cfg.optim.lr == want["lr"]
    assert cfg.optim.weight_decay == want["wd"]
    assert cfg.optim.layer_decay == want["ld"]
    assert cfg.data.depth_batch == want["depth"]
    assert cfg.data.insseg_batch == want["coco"]
    assert cfg.optim.max_iters == want["iters"]
    assert cfg.optim.warmup_iters == want["warm"]
    assert cfg.optim.grad_clip == want["clip"]
    # fp16 with dynamic loss scaling, except detection (no fp16 entry in the original's config)
    assert cfg.optim.amp == ("none" if name == "swinv2b_640reso_detonly" else "fp16")


def test_depth_schedule_is_step_and_coco_schedules_are_linear_to_one_percent():
    depth = create_config("swinv2b_480reso_depthonly")
    assert (depth.optim.schedule, depth.optim.step_milestones, depth.optim.step_gamma) == (
        "step",
        (18180,),
        0.1,
    )
    assert depth.optim.warmup_ratio == 0.1
    for name in ("swinv2b_640reso_inssegonly", "swinv2b_640reso_joint", "swinv2b_640reso_detonly"):
        optim = create_config(name).optim
        assert (optim.schedule, optim.min_lr_ratio) == ("linear", 0.01)


def test_soft_token_tau_drop_path_loss_weights_and_load_from():
    depth = create_config("swinv2b_480reso_depthonly")
    assert depth.model.tau_depth == 0.8 and depth.model.soft_token and depth.model.soft_input
    assert depth.model.backbone_drop_path == 0.1 and depth.loss.depth_aux_weight == 1.0
    assert depth.loss.silog_lambda == 0.5
    assert depth.model.depth_tokenizer == TokenizerRef("depth-paper")
    assert depth.model.reserved_tokens == 0  # vocabulary of 2339

    parallel = create_config("swinv2b_480reso_parallel_depthonly")
    assert parallel.model.parallel and not parallel.model.soft_input

    wosoft = create_config("swinv2b_480reso_depthonly_wosoft")
    assert not wosoft.model.soft_token and wosoft.loss.depth_aux_weight == 0.0

    joint = create_config("swinv2b_640reso_joint")
    assert joint.model.tasks == ("depth", "insseg")
    assert joint.loss.depth_task_weight == 0.2 and joint.model.tau_depth == 1.0
    assert joint.model.backbone_drop_path == 0.3 and joint.model.reserved_tokens == 128  # 2467 ids
    # only the image is padded to 640 (padto); the depth ground truth stays 480x480 -> 225 tokens
    assert joint.model.depth_size == (480, 480) and joint.model.depth_image_size == (640, 640)
    assert joint.load_from == "ait_det_swinv2b_wodec.pth"

    insseg = create_config("swinv2b_640reso_inssegonly")
    assert (insseg.loss.box_weight, insseg.loss.class_weight, insseg.loss.mask_weight) == (1.0, 1.0, 0.2)
    assert insseg.model.top_p == 0.3 and insseg.model.max_objects == 100
    assert insseg.model.mask_tokenizer == TokenizerRef("mask-paper")
    assert create_config("swinv2b_640reso_inssegonly_wosoft").loss.mask_aux_weight == 0.0


def test_cpu_configs_use_the_tiny_backbone_and_small_tokenizers():
    assert create_config("cpu_depth_tiny").model.backbone == "swinv2-tiny-cpu"
    cfg = create_config("cpu_joint_demo")
    assert cfg.model.backbone == "swinv2-convstem-cpu"  # trained from scratch: conv stem, stride 8
    assert cfg.model.depth_tokenizer.preset == "depth-small"
    assert cfg.model.mask_tokenizer.preset == "mask-small"
    assert cfg.data.dataset == "synthetic" and max(cfg.data.image_size) <= 128


# ---------------------------------------------------------------------------------------------------------
# overrides


def test_cfg_options_are_parsed_to_the_field_types():
    cfg = create_config(
        "cpu_joint_tiny",
        [
            "optim.lr=3e-4",
            "optim.max_iters=7",
            "optim.amp=true",
            "optim.grad_clip=None",
            "data.image_size=96,96",
            "data.crop_size=(64, 64)",
            "optim.step_milestones=[3, 5]",
            "optim.schedule=step",
            "model.tasks=depth,insseg",
            "model.backbone_overrides={'window_size': 4}",
            "seed=11",
        ],
    )
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.max_iters == 7 and cfg.optim.amp is True and cfg.optim.grad_clip is None
    assert cfg.data.image_size == (96, 96) and cfg.data.crop_size == (64, 64)
    assert cfg.optim.step_milestones == (3, 5)
    assert cfg.model.tasks == ("depth", "insseg")
    assert cfg.model.backbone_overrides == {"window_size": 4}
    assert cfg.seed == 11


def test_keyword_overrides_and_integral_floats():
    cfg = create_config("cpu_depth_tiny", seed=5, optim__lr=1, optim__max_iters=4.0)
    assert cfg.seed == 5 and cfg.optim.lr == 1.0 and cfg.optim.max_iters == 4


def test_the_original_command_line_spellings_are_aliases():
    cfg = create_config(
        "swinv2b_640reso_joint",
        [
            "model.backbone.init_cfg.checkpoint=swin_v2_base_densesimmim.pth",
            "model.task_heads.insseg.vae_cfg.pretrained=vqvae_insseg.pt",
            "model.task_heads.depth.vae_cfg.pretrained=vqvae_depth.pt",
            "load_from=ait_det_swinv2b_wodec.pth",
        ],
    )
    assert cfg.model.backbone_checkpoint == "swin_v2_base_densesimmim.pth"
    assert cfg.model.mask_tokenizer.checkpoint == "vqvae_insseg.pt"
    assert cfg.model.depth_tokenizer.checkpoint == "vqvae_depth.pt"
    assert get_by_path(cfg, "model.task_heads.depth.vae_cfg.pretrained") == "vqvae_depth.pt"


@pytest.mark.parametrize(
    ("option", "expected_in_message"),
    [
        ("optim.lrr=1", "optim.lr"),
        ("lr=1", "optim.lr"),
        ("modle.tasks=depth", "model.tasks"),
        ("data.depth_bach=3", "data.depth_batch"),
    ],
)
def test_unknown_keys_name_the_nearest_valid_keys(option, expected_in_message):
    with pytest.raises(ConfigError, match="unknown config key") as info:
        create_config("cpu_depth_tiny", [option])
    assert expected_in_message in str(info.value)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("optim.lr=fast", r"optim.lr: expected float, got 'fast'"),
        ("optim.max_iters=2.5", r"optim.max_iters: expected int"),
        ("optim.amp=maybe", r"optim.amp: expected one of \('fp16', 'bf16', 'none'\)"),
        ("data.image_size=1,2,3", r"data.image_size: expected 2 values"),
        ("optim.lr", r"expects key=value"),
        ("optim.lr=-1", r"optim.lr: expected > 0"),
        ("optim.schedule=cosine", r"optim.schedule: expected one of"),
        ("model.tasks=depth,segmentation", r"model.tasks: expected a subset"),
        ("model.mask_tokenizer.checkpoint=m.pt", r"model.mask_tokenizer is None"),
        ("loss.depth_aux_weight=-1", r"loss.depth_aux_weight: expected a finite weight >= 0"),
        ("loss.box_weight=-0.5", r"loss.box_weight: expected a finite weight >= 0"),
        ("loss.silog_lambda=1.5", r"loss.silog_lambda: expected in \[0, 1\]"),
        ("seed=-1", r"seed: expected >= 0"),
        ("data.synthetic_seed=-3", r"data.synthetic_seed: expected >= 0"),
        (
            "data.crop_size=60,60",
            r"data.crop_size: expected sides that are multiples of the backbone's stride",
        ),
        ("model.object_order=size", r"model.object_order: expected one of \('random', 'area', 'raster'\)"),
        (
            "model.duplicate_boxes=some",
            r"model.duplicate_boxes: expected one of \('uniform', 'none'\), got 'some'",
        ),
        (
            "model.coordinate_embedding=cosine",
            r"model.coordinate_embedding: expected one of \('learned', 'sine'\), got 'cosine'",
        ),
        (
            "eval.instance_samples=0",
            r"eval.instance_samples: expected an integer >= 1 \(1 = one decode\), got 0",
        ),
        ("eval.instance_fusion_iou=1.5", r"eval.instance_fusion_iou: expected in \(0, 1\), got 1.5"),
        ("eval.instance_flip=2", r"eval.instance_flip: expected bool \(true/false\), got 2"),
    ],
)
def test_wrong_values_are_clear_errors(option, message):
    with pytest.raises(ConfigError, match=message):
        create_config("cpu_depth_tiny", [option])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["loss.memory_rank_weight=0.5", "loss.memory_box_weight=0"],
            r"loss.memory_rank_weight: expected 0 unless loss.memory_box_weight > 0",
        ),
        (
            ["loss.memory_rank_weight=0.5", "model.object_order=random"],
            r"loss.memory_rank_weight: expected 0 with model.object_order=random",
        ),
    ],
)
def test_a_sequence_rank_needs_the_memory_boxes_and_a_fixed_order(options, message):
    with pytest.raises(ConfigError, match=message):
        create_config("cpu_joint_demo", options)


def test_a_non_finite_loss_weight_given_as_a_number_is_refused():
    with pytest.raises(ConfigError, match=r"loss.mask_weight: expected a finite weight >= 0, got nan"):
        create_config("cpu_depth_tiny", {"loss.mask_weight": float("nan")})


def test_config_errors_are_value_errors_and_unknown_names_suggest():
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ValueError, match="swinv2b_480reso_depthonly"):
        create_config("swinv2b_480reso_depthonlyy")


def test_from_dict_rejects_unknown_keys_with_a_suggestion():
    data = create_config("cpu_depth_tiny").to_dict()
    data["optim"]["learning_rate"] = 1.0
    with pytest.raises(ConfigError, match=r"optim\.learning_rate"):
        Config.from_dict(data)


def test_valid_keys_cover_nested_tokenizer_refs():
    keys = valid_keys(create_config("cpu_joint_tiny"))
    assert "model.depth_tokenizer.checkpoint" in keys and "optim.lr" in keys and "seed" in keys


# ---------------------------------------------------------------------------------------------------------
# round trip under random overrides (hypothesis)

_FIELD_STRATEGIES = {
    "optim.lr": st.floats(1e-7, 1.0),
    "optim.weight_decay": st.floats(0.0, 1.0),
    "optim.grad_clip": st.none() | st.floats(0.01, 100.0),
    "optim.max_iters": st.integers(100, 10_000),
    "optim.betas": st.tuples(st.floats(0.0, 0.99), st.floats(0.0, 0.999)),
    "optim.amp": st.booleans() | st.sampled_from(["fp16", "bf16", "none"]),
    "data.image_size": st.tuples(st.integers(64, 1024), st.integers(64, 1024)),
    "data.depth_batch": st.integers(1, 64),
    "model.top_p": st.floats(0.01, 1.0),
    "model.backbone_overrides": st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 9)),
    "model.depth_tokenizer.checkpoint": st.none() | st.text(min_size=1, max_size=12),
    "load_from": st.none() | st.text(min_size=1, max_size=12),
    "seed": st.integers(0, 2**31 - 1),
    "name": st.text(max_size=10),
}


@settings(max_examples=40, deadline=None)
@given(
    base=st.sampled_from(["cpu_depth_tiny", "swinv2b_480reso_depthonly"]),
    values=st.fixed_dictionaries({}, optional=_FIELD_STRATEGIES),
)
def test_to_dict_from_dict_round_trip(base, values):
    cfg = create_config(base)
    apply_overrides(cfg, values)
    text = json.dumps(cfg.to_dict())
    restored = Config.from_dict(json.loads(text))
    assert restored == cfg
    assert restored.to_dict() == cfg.to_dict()


@settings(max_examples=30, deadline=None)
@given(value=st.floats(1e-6, 10.0), iters=st.integers(1, 10**6))
def test_cfg_option_text_equals_the_python_value(value, iters):
    by_text = create_config("cpu_depth_tiny", [f"optim.lr={value!r}", f"optim.max_iters={iters}"])
    assert by_text.optim.lr == value and by_text.optim.max_iters == iters


def test_tokenizer_configs_map_to_the_paper_recipes():
    depth = create_config("ait_depth_vqvae")
    assert config_kind("ait_depth_vqvae") == "tokenizer"
    assert (depth.tokenizer, depth.optimizer, depth.lr, depth.weight_decay) == (
        "depth-paper",
        "adam",
        3e-4,
        0.0,
    )
    assert (depth.epochs, depth.batch_size, depth.decay_every, depth.decay_factor) == (20, 8, 500, 0.98)
    mask = create_config("ait_insseg_vqvae", ["maskcoco=maskcoco_train2017.npz"])
    assert (mask.tokenizer, mask.optimizer, mask.lr, mask.schedule) == ("mask-paper", "adamw", 3e-4, "cosine")
    assert (mask.warmup_steps, mask.warmup_start_lr, mask.min_lr, mask.batch_size) == (500, 3e-7, 1e-6, 512)
    assert mask.maskcoco == "maskcoco_train2017.npz"
    with pytest.raises(ConfigError, match="did you mean: lr"):
        create_config("ait_depth_vqvae", ["lrr=1"])
