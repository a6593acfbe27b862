"""Every preset builds through timm and gives the documented shapes, strides, windows and shifts."""

import math
from functools import cache

import pytest
import torch
from timm.layers import DropPath

from ait_backbone import BackbonePreset, PadThenShiftBlock, create_backbone, get_preset, list_backbones

PAPER = ["swinv2-b-480", "swinv2-l-480", "swinv2-b-640", "swinv2-l-640"]
TINY = ["swinv2-tiny-cpu", "swinv2-tiny-cpu-coco", "swinv2-convstem-cpu"]

# name: (out_channels, stride, num_layers, output map at the preset's size,
#        per-stage (window, shift of odd blocks))
DOCUMENTED = {
    "swinv2-b-480": (1024, 32, 29, (15, 15), [(30, 15), (30, 15), (30, 0), (15, 0)]),
    "swinv2-l-480": (1536, 32, 29, (15, 15), [(30, 15), (30, 15), (30, 0), (15, 0)]),
    "swinv2-b-640": (1024, 32, 29, (20, 20), [(30, 15), (30, 15), (30, 15), (15, 7)]),
    "swinv2-l-640": (1536, 32, 29, (20, 20), [(30, 15), (30, 15), (30, 15), (15, 7)]),
    "swinv2-tiny-cpu": (256, 32, 13, (4, 4), [(8, 4), (8, 4), (4, 0), (2, 0)]),
    "swinv2-tiny-cpu-coco": (256, 32, 13, (4, 4), [(8, 4), (8, 4), (4, 2), (2, 1)]),
    "swinv2-convstem-cpu": (64, 8, 7, (8, 8), [(8, 4), (8, 4)]),
}


@cache
def meta_backbone(name):
    """Paper-size backbones on the meta device: real structure, no weights in memory, shape-only forwards."""
    with torch.device("meta"):
        return create_backbone(name)


def test_registry_lists_the_paper_and_tiny_presets():
    assert set(PAPER + TINY) <= set(list_backbones())
    assert set(DOCUMENTED) == set(list_backbones())


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_preset_builds_with_documented_structure(name):
    out_channels, stride, num_layers, out_size, stages = DOCUMENTED[name]
    backbone = meta_backbone(name)
    size = backbone.preset.img_size
    with torch.device("meta"):  # B/L: shapes only, no compute or memory
        features = backbone(torch.empty(2, 3, size, size))
    assert features.shape == (2, out_channels, *out_size)
    assert (backbone.out_channels, backbone.stride, backbone.num_layers) == (out_channels, stride, num_layers)
    for stage, (window, shift) in zip(backbone.layers, stages):
        for index, block in enumerate(stage.blocks):
            assert isinstance(block, PadThenShiftBlock)
            assert block.window_size == (window, window)
            assert block.shift_size == ((shift, shift) if index % 2 else (0, 0))
            assert block.attn.relative_coords_table.shape == (1, 2 * window - 1, 2 * window - 1, 2)


@pytest.mark.parametrize("name", PAPER)
def test_paper_presets_match_the_original_configs(name):
    preset = get_preset(name)
    assert preset.depths == (2, 2, 18, 2)
    assert preset.embed_dim == (128 if "-b-" in name else 192)
    assert preset.num_heads == ((4, 8, 16, 32) if "-b-" in name else (6, 12, 24, 48))
    assert preset.pretrained_window_sizes == (12, 12, 12, 6)
    assert preset.drop_path_rate == (0.1 if name.endswith("480") else 0.3)
    backbone = meta_backbone(name)
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.eps == 1e-6 for m in norms)
    pretrained = [stage.blocks[0].attn.pretrained_window_size for stage in backbone.layers]
    assert pretrained == [(12, 12), (12, 12), (12, 12), (6, 6)]
    # Stochastic depth rises linearly over the 24 blocks from 0 to the preset's rate, as in the original.
    rates = [
        block.drop_path1.drop_prob if isinstance(block.drop_path1, DropPath) else 0.0
        for stage in backbone.layers
        for block in stage.blocks
    ]
    expected = torch.linspace(0, preset.drop_path_rate, 24).tolist()
    assert rates == pytest.approx(expected)


@pytest.mark.parametrize("name", ["swinv2-b-480", "swinv2-l-480"])
def test_depth_presets_take_480x640_inputs(name):
    backbone = meta_backbone(name)
    with torch.device("meta"):
        assert backbone(torch.empty(1, 3, 480, 640)).shape == (1, backbone.out_channels, 15, 20)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("size", [(64, 64), (128, 128), (96, 160)])
def test_tiny_presets_run_on_cpu_at_many_sizes(name, size, make_tiny):
    backbone = make_tiny(name)
    features = backbone(torch.randn(2, 3, *size))
    channels, stride = DOCUMENTED[name][:2]
    assert features.shape == (2, channels, size[0] // stride, size[1] // stride)
    assert torch.isfinite(features).all()
    # The output LayerNorm (random affine here) normalises each position over channels before its affine.
    norm = backbone.norm
    standardised = (features.permute(0, 2, 3, 1) - norm.bias) / norm.weight
    assert standardised.mean(-1).abs().max() < 1e-4
    assert (standardised.var(-1, unbiased=False) - 1).abs().max() < 1e-2


def test_seeded_builds_and_runs_are_identical():
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    outputs = []
    for _ in range(2):
        torch.manual_seed(5)
        outputs.append(create_backbone("swinv2-tiny-cpu").eval()(images))
    assert torch.equal(outputs[0], outputs[1])


def test_batch_items_are_independent(make_tiny):
    backbone = make_tiny("swinv2-tiny-cpu-coco")
    images = torch.randn(3, 3, 96, 96)
    together = backbone(images)
    alone = torch.cat([backbone(images[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_relative_coordinates_follow_swinv2_pretrained_window_scaling(make_tiny):
    """Original `norm8_log_bylayer`: coords / (pretrained window - 1) * 8, then sign * log2(1+|c|) / 3."""
    backbone = make_tiny(window_sizes=(6, 6, 6, 3), pretrained_window_sizes=(4, 4, 4, 2))
    for stage, window, pretrained in zip(backbone.layers, (6, 6, 6, 3), (4, 4, 4, 2)):
        offsets = torch.arange(-(window - 1), window, dtype=torch.float64)
        grid = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1) / (pretrained - 1) * 8
        expected = torch.sign(grid) * torch.log2(grid.abs() + 1) / math.log2(8)
        table = stage.blocks[1].attn.relative_coords_table[0].double()
        torch.testing.assert_close(table, expected, rtol=0, atol=1e-6)


def test_overrides_replace_preset_fields():
    backbone = create_backbone("swinv2-tiny-cpu", window_sizes=[4, 4, 2, 2], shift_stages=[True] * 4)
    assert [stage.blocks[1].window_size for stage in backbone.layers] == [(4, 4), (4, 4), (2, 2), (2, 2)]
    assert [stage.blocks[1].shift_size for stage in backbone.layers] == [(2, 2), (2, 2), (1, 1), (1, 1)]
    assert backbone.preset.window_sizes == (4, 4, 2, 2)


def test_several_out_indices_return_one_normalised_map_per_stage(make_tiny):
    backbone = make_tiny(out_indices=(1, 3))
    maps = backbone(torch.randn(1, 3, 128, 128))
    assert [m.shape for m in maps] == [(1, 64, 16, 16), (1, 256, 4, 4)]
    assert [info["reduction"] for info in backbone.feature_info] == [8, 32]
    assert set(backbone.stage_norms) == {"1"}


def test_shallow_out_index_drops_the_deeper_stages(make_tiny):
    backbone = make_tiny(out_indices=(1,))
    assert len(backbone.layers) == 2 and backbone.norm is None
    assert (backbone.out_channels, backbone.stride) == (64, 8)
    assert backbone(torch.randn(1, 3, 64, 64)).shape == (1, 64, 8, 8)


def test_grad_checkpointing_gives_the_same_gradients(make_tiny):
    images = torch.randn(1, 3, 64, 64)
    grads = []
    for enable in (False, True):
        backbone = make_tiny()
        backbone.set_grad_checkpointing(enable)
        backbone(images).square().sum().backward()
        grads.append(backbone.patch_embed.proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 3, 100, 128), "multiple of the backbone stride 32"),
        ((1, 1, 64, 64), r"\(B, 3, H, W\)"),
        ((3, 64, 64), r"got \(3, 64, 64\)"),
    ],
)
def test_bad_inputs_are_rejected_with_the_constraint(shape, message, make_tiny):
    with pytest.raises(ValueError, match=message):
        make_tiny(randomise=False)(torch.randn(*shape))


def test_bad_names_and_overrides_are_rejected():
    with pytest.raises(ValueError, match=r"unknown backbone 'swinv2-xl'.*swinv2-b-480"):
        create_backbone("swinv2-xl")
    with pytest.raises(ValueError, match=r"unknown override.*windows"):
        create_backbone("swinv2-tiny-cpu", windows=(8, 8, 8, 8))
    with pytest.raises(ValueError, match="window_sizes has 3 entries"):
        create_backbone("swinv2-tiny-cpu", window_sizes=(8, 8, 8))
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        create_backbone("swinv2-tiny-cpu", num_heads=(3, 2, 4, 8))
    with pytest.raises(ValueError, match="never downloaded"):
        create_backbone("swinv2-tiny-cpu", pretrained=True)
    with pytest.raises(ValueError, match="out index 4"):
        create_backbone("swinv2-tiny-cpu", out_indices=(4,))


def test_presets_are_plain_data():
    preset = get_preset("swinv2-b-480")
    assert isinstance(preset, BackbonePreset)
    with pytest.raises(AttributeError):
        preset.embed_dim = 3  # frozen: a registry entry cannot be changed by accident


def test_conv_stem_replaces_only_the_patch_projection():
    from ait_backbone.swin import ConvStem

    backbone = create_backbone("swinv2-convstem-cpu")
    stem = backbone.patch_embed.proj
    assert isinstance(stem, ConvStem)
    strides = [m.stride[0] for m in stem.modules() if isinstance(m, torch.nn.Conv2d)]
    assert strides == [2, 1, 2, 1, 1]  # log2(patch 4) halvings, each followed by a stride-1 conv; 1x1 last
    assert isinstance(backbone.patch_embed.norm, torch.nn.LayerNorm)  # timm's embedding norm is kept
    images = torch.randn(2, 3, 32, 48)
    assert stem(images).shape == (2, 32, 8, 12)
    # the stem belongs to layer id 0 (lowest lr under layer decay), as the patch embedding it replaces
    assert {backbone.layer_id(n) for n, _ in backbone.named_parameters() if n.startswith("patch_embed")} == {
        0
    }


def test_conv_stem_learns_in_train_mode_and_is_deterministic_in_eval():
    backbone = create_backbone("swinv2-convstem-cpu").train()
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    backbone(images).square().mean().backward()
    stem_grads = [p.grad for n, p in backbone.named_parameters() if n.startswith("patch_embed.proj")]
    assert stem_grads and all(g is not None and g.abs().sum() > 0 for g in stem_grads)
    batch_norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batch_norms and all(m.num_batches_tracked == 1 for m in batch_norms)
    backbone.eval()
    with torch.no_grad():  # eval: running statistics, so an image's features do not depend on its batch
        alone = backbone(images[:1])
        together = backbone(images)[:1]
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"stem": "resnet"}, "stem must be 'patch' or 'conv'"),
        ({"stem": "conv", "patch_size": 6}, "power of two"),
    ],
)
def test_bad_stem_settings_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        create_backbone("swinv2-tiny-cpu", **overrides)
