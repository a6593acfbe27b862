"""Layer-wise lr decay groups: layer ids as in the original, scales, weight-decay exclusions, coverage."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ait_backbone import create_backbone, layer_decay_param_groups


class Solver(nn.Module):
    """A backbone inside an outer model, with the kinds of parameters a task-solver has."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Linear(backbone.out_channels, 16), nn.LayerNorm(16))
        self.token_embed = nn.Embedding(10, 16)
        self.task_prompt = nn.Parameter(torch.zeros(2, 16))
        self.pos_table = nn.Parameter(torch.zeros(9, 16))
        self.output_bias = nn.Parameter(torch.zeros(10))


def original_layer_id(ms_name, depths):
    """get_num_layer_for_swin of the original optimizer.py, on Microsoft/SimMIM parameter names."""
    layers_per_stage = [d + 1 for d in depths[:-1]] + [depths[-1]]
    num_layers = sum(layers_per_stage) + 2
    parts = ms_name.split(".")
    if ms_name.startswith("backbone.patch_embed"):
        return 0
    if ms_name.startswith("backbone.layers"):
        stage = int(parts[2])
        if parts[3] == "blocks":
            return int(parts[4]) + sum(layers_per_stage[:stage]) + 1
        if parts[3] == "downsample":
            return sum(layers_per_stage[: stage + 1])
    return num_layers - 1


def ms_name(our_name):
    parts = our_name.split(".")
    if parts[0] == "layers" and parts[2] == "downsample":
        parts[1] = str(int(parts[1]) - 1)
    return "backbone." + ".".join(parts)


def test_layer_ids_of_swinv2_b_match_the_original():
    with torch.device("meta"):
        backbone = create_backbone("swinv2-b-480")
    assert backbone.num_layers == 29
    for name, _ in backbone.named_parameters():
        assert backbone.layer_id(name) == original_layer_id(ms_name(name), [2, 2, 18, 2]), name
    # Hand-worked: stage-1 blocks 1-2, merging 3, stage-2 blocks 4-5, merging 6, 7..24, merging 25, 26-27, norm 28.
    expected = {
        "patch_embed.proj.weight": 0,
        "layers.0.blocks.1.attn.qkv.weight": 2,
        "layers.1.downsample.reduction.weight": 3,
        "layers.1.blocks.0.norm1.weight": 4,
        "layers.2.downsample.norm.bias": 6,
        "layers.2.blocks.17.mlp.fc2.weight": 24,
        "layers.3.downsample.reduction.weight": 25,
        "layers.3.blocks.1.attn.logit_scale": 27,
        "norm.weight": 28,
    }
    assert {name: backbone.layer_id(name) for name in expected} == expected


def test_layer_id_rejects_names_outside_the_backbone(make_tiny):
    with pytest.raises(ValueError, match=r"'backbone\.norm\.weight' is not a parameter of this backbone"):
        make_tiny(randomise=False).layer_id("backbone.norm.weight")


def test_groups_cover_every_parameter_once_with_the_documented_scales(make_tiny):
    model = Solver(make_tiny(randomise=False))
    model.head[0].weight.requires_grad_(False)  # frozen parameters are grouped too
    groups = layer_decay_param_groups(model, lr=1e-3, weight_decay=0.05, layer_decay=0.5)

    grouped = [id(p) for group in groups for p in group["params"]]
    assert len(grouped) == len(set(grouped)) == len(list(model.parameters()))
    assert set(grouped) == {id(p) for p in model.parameters()}

    where = {name: group for group in groups for name in group["param_names"]}
    # tiny: depths 2/2/2/2 -> ids 0 patch, 1-2, 3 merge, 4-5, 6 merge, 7-8, 9 merge, 10-11, 12 norm: 13 layers
    expected_ids = {
        "backbone.patch_embed.proj.weight": 0,
        "backbone.layers.0.blocks.1.mlp.fc1.weight": 2,
        "backbone.layers.1.downsample.reduction.weight": 3,
        "backbone.layers.2.blocks.0.attn.qkv.weight": 7,
        "backbone.layers.3.downsample.norm.weight": 9,
        "backbone.layers.3.blocks.1.attn.proj.weight": 11,
        "backbone.norm.weight": 12,
        "head.0.weight": 12,
        "token_embed.weight": 12,
    }
    for name, layer_id in expected_ids.items():
        assert where[name]["layer_id"] == layer_id, name
        assert where[name]["lr_scale"] == 0.5 ** (12 - layer_id)
        assert where[name]["lr"] == pytest.approx(1e-3 * 0.5 ** (12 - layer_id))
    assert where["backbone.patch_embed.proj.weight"]["lr_scale"] == 0.5**12
    assert where["head.0.weight"]["lr_scale"] == 1.0


@pytest.mark.parametrize(
    ("name", "decayed"),
    [
        ("backbone.patch_embed.proj.weight", True),  # a convolution, decayed in the original too
        ("backbone.layers.0.blocks.0.attn.qkv.weight", True),
        ("backbone.layers.1.downsample.reduction.weight", True),
        ("head.0.weight", True),
        ("backbone.patch_embed.proj.bias", False),
        ("backbone.patch_embed.norm.weight", False),
        ("backbone.layers.0.blocks.0.attn.q_bias", False),
        ("backbone.layers.0.blocks.0.attn.cpb_mlp.0.weight", False),  # 2-D, excluded by name (rpe_mlp)
        ("backbone.layers.0.blocks.0.attn.cpb_mlp.2.weight", False),
        ("backbone.layers.0.blocks.0.attn.logit_scale", False),  # (heads, 1, 1), excluded by name
        ("token_embed.weight", False),
        ("task_prompt", False),
        ("pos_table", False),
        ("output_bias", False),
    ],
)
def test_weight_decay_exclusions(name, decayed, make_tiny):
    groups = layer_decay_param_groups(
        Solver(make_tiny(randomise=False)), lr=1.0, weight_decay=0.05, layer_decay=0.9
    )
    where = {n: group for group in groups for n in group["param_names"]}
    assert where[name]["weight_decay"] == (0.05 if decayed else 0.0)


@settings(max_examples=25, deadline=None)
@given(layer_decay=st.floats(0.05, 1.0), lr=st.floats(1e-6, 1.0))
def test_scales_are_powers_of_the_decay_and_groups_feed_adamw(layer_decay, lr, tiny_solver):
    groups = layer_decay_param_groups(tiny_solver, lr=lr, weight_decay=0.01, layer_decay=layer_decay)
    for group in groups:
        assert group["lr_scale"] == pytest.approx(layer_decay ** (12 - group["layer_id"]))
        assert group["lr"] == pytest.approx(lr * group["lr_scale"])
    scales = [group["lr_scale"] for group in sorted(groups, key=lambda g: g["layer_id"])]
    assert scales == sorted(scales)  # deeper layers never learn slower
    optimizer = torch.optim.AdamW(groups)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(tiny_solver.parameters()))


@pytest.fixture(scope="module")
def tiny_solver():
    return Solver(create_backbone("swinv2-tiny-cpu"))


def test_backbone_alone_with_empty_prefix(make_tiny):
    backbone = make_tiny(randomise=False)
    groups = layer_decay_param_groups(backbone, lr=1.0, weight_decay=0.1, layer_decay=0.9, backbone_prefix="")
    assert {g["layer_id"] for g in groups} == set(range(13))


def test_bad_arguments_are_rejected(make_tiny):
    model = Solver(make_tiny(randomise=False))
    with pytest.raises(ValueError, match=r"layer_decay must be in \(0, 1\]"):
        layer_decay_param_groups(model, lr=1.0, weight_decay=0.0, layer_decay=0.0)
    with pytest.raises(ValueError, match=r"no backbone at prefix 'encoder\.'"):
        layer_decay_param_groups(model, lr=1.0, weight_decay=0.0, layer_decay=0.9, backbone_prefix="encoder.")
    with pytest.raises(ValueError, match=r"must end with '\.'"):
        layer_decay_param_groups(model, lr=1.0, weight_decay=0.0, layer_decay=0.9, backbone_prefix="backbone")
    with pytest.raises(ValueError, match="has no layer_id"):
        layer_decay_param_groups(model, lr=1.0, weight_decay=0.0, layer_decay=0.9, backbone_prefix="head.")
