"""Checkpoint loading: SimMIM/original layout round trip, timm layout, window changes, bad files."""

import pickle
from functools import partial

import pytest
import timm
import torch
from safetensors.torch import save_file

from ait_backbone import create_backbone, load_backbone_checkpoint, read_state_dict


def to_original_names(state_dict, prefix="encoder.", bias_mlp="cpb_mlp", out_norm="norm"):
    """Our (timm) names -> Microsoft Swin-Transformer / SimMIM names, written independently of the loader:
    timm's merging at the start of stage i is the original's merging at the end of stage i-1."""
    renamed = {}
    for name, tensor in state_dict.items():
        parts = name.split(".")
        if parts[0] == "layers" and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) - 1)
        if parts[0] == "norm":
            parts[0] = out_norm
        parts = [bias_mlp if part == "cpb_mlp" else part for part in parts]
        renamed[prefix + ".".join(parts)] = tensor.clone()
    return renamed


def simmim_extras(num_stages=4):
    """What a SimMIM checkpoint carries besides the encoder weights (buffers for the pretraining windows)."""
    extras = {
        "encoder.mask_token": torch.zeros(1, 1, 32),
        "decoder.0.weight": torch.randn(3 * 32**2, 256, 1, 1),
        "decoder.0.bias": torch.randn(3 * 32**2),
    }
    for stage in range(num_stages):
        for block in range(2):
            base = f"encoder.layers.{stage}.blocks.{block}"
            extras[f"{base}.attn.relative_coords_table"] = torch.randn(1, 11, 11, 2)
            extras[f"{base}.attn.relative_position_index"] = torch.zeros(36, 36, dtype=torch.long)
            extras[f"{base}.attn_mask"] = torch.zeros(4, 36, 36)
    return extras


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_simmim_checkpoint_round_trip_with_window_change(tmp_path, make_tiny):
    source = make_tiny(seed=1)
    path = tmp_path / "swin_v2_tiny_densesimmim.pth"
    torch.save({"model": {**to_original_names(source.state_dict()), **simmim_extras()}, "epoch": 99}, path)

    # Fine-tuning windows differ from the "pretraining" ones: the cpb MLP transfers, tables are recomputed.
    target = make_tiny(seed=2, window_sizes=(4, 4, 2, 2))
    report = load_backbone_checkpoint(target, path)

    assert_same_weights(source, target)
    assert report.layout == "original"
    assert report.missing == [] and report.unexpected == []
    assert {"encoder.mask_token", "decoder.0.weight", "decoder.0.bias"} <= set(report.dropped)
    assert "encoder.layers.0.blocks.1.attn.relative_coords_table" in report.dropped
    assert len(report.loaded) == len(target.state_dict())
    # The tables are the target's own (window 4 -> 7x7 offsets), not the file's 11x11.
    assert target.layers[0].blocks[0].attn.relative_coords_table.shape == (1, 7, 7, 2)
    assert target(torch.randn(1, 3, 64, 64)).shape == (1, 256, 2, 2)
    assert "loaded" in str(report) and "dropped" in str(report)


def test_ait_model_checkpoint_with_backbone_prefix_rpe_mlp_and_norm3(tmp_path, make_tiny):
    """A whole AiT model: backbone under `backbone.`, AiT's `rpe_mlp` and `norm3`, DDP's `module.`."""
    source = make_tiny(seed=3)
    backbone_part = to_original_names(
        source.state_dict(), prefix="module.backbone.", bias_mlp="rpe_mlp", out_norm="norm3"
    )
    others = {
        "module.transformer.input_proj.weight": torch.randn(256, 256),
        "module.task_prompt": torch.randn(3, 256),
    }
    path = tmp_path / "ait_det_wodec.pth"
    torch.save({"state_dict": {**backbone_part, **others}, "meta": {"iter": 5}}, path)

    target = make_tiny(seed=4)
    report = load_backbone_checkpoint(target, path)
    assert_same_weights(source, target)
    assert report.missing == [] and report.unexpected == []
    assert set(others) <= set(report.dropped)


def test_timm_model_weights_load_and_give_timm_features(tmp_path, make_tiny):
    """timm's own layout (from a timm model, saved as safetensors); same windows -> same features as timm."""
    torch.manual_seed(0)
    reference = timm.create_model(
        "swinv2_tiny_window8_256",
        pretrained=False,
        num_classes=7,
        embed_dim=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        img_size=256,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    ).eval()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    path = tmp_path / "timm_swinv2.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))

    # At 256 px every map (64, 32, 16, 8) is larger than window 4: timm shifts every odd block, as we do.
    target = make_tiny(seed=5, window_sizes=(4, 4, 4, 4), shift_stages=(True,) * 4, img_size=256)
    report = load_backbone_checkpoint(target, path)
    assert report.layout == "timm"
    assert report.missing == [] and report.unexpected == []
    assert set(report.dropped) == {"head.fc.weight", "head.fc.bias"}

    images = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        expected = reference.forward_features(images).permute(0, 3, 1, 2)
        torch.testing.assert_close(target(images), expected, rtol=1e-5, atol=1e-5)


def test_our_own_state_dict_round_trips(tmp_path, make_tiny):
    source = make_tiny(seed=6)
    path = tmp_path / "backbone.pt"
    torch.save(source.state_dict(), path)
    target = create_backbone("swinv2-tiny-cpu", pretrained=path)
    assert_same_weights(source, target)
    assert target.checkpoint_report.layout == "timm" and target.checkpoint_report.missing == []


def test_partial_checkpoint_reports_missing_and_unexpected(tmp_path, make_tiny):
    state = make_tiny(seed=7).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("norm.")}
    state["layers.0.blocks.0.gamma_1"] = torch.ones(32)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    report = load_backbone_checkpoint(make_tiny(), path)
    assert report.missing == ["norm.bias", "norm.weight"]
    assert report.unexpected == ["layers.0.blocks.0.gamma_1"]


def test_missing_file_names_the_path(tmp_path, make_tiny):
    path = tmp_path / "nowhere" / "swin.pth"
    with pytest.raises(FileNotFoundError, match=r"nowhere/swin\.pth"):
        load_backbone_checkpoint(make_tiny(randomise=False), path)


class NotAWeight:
    pass


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_text("model: swinv2\n"), "not a PyTorch or safetensors checkpoint"),
        (lambda p: p.write_bytes(b""), "not a PyTorch or safetensors checkpoint"),
        (lambda p: torch.save([torch.zeros(2)], p), "holds a list, not a state dict"),
        (lambda p: torch.save({"epoch": 3, "model": {"lr": 0.1}}, p), "contains no tensors"),
        (
            lambda p: p.write_bytes(pickle.dumps({"w": NotAWeight()}, protocol=2)),
            "not a PyTorch or safetensors checkpoint",
        ),
        (
            lambda p: torch.save({"classifier.weight": torch.zeros(3, 3)}, p),
            "no weight matches this backbone",
        ),
    ],
)
def test_files_that_are_not_backbone_checkpoints_are_rejected(tmp_path, write, message, make_tiny):
    path = tmp_path / "bad.pth"
    write(path)
    with pytest.raises(ValueError, match=message):
        load_backbone_checkpoint(make_tiny(randomise=False), path)


def test_checkpoint_of_another_size_is_rejected_naming_shapes(tmp_path, make_tiny):
    wider = make_tiny(embed_dim=48, num_heads=(2, 2, 4, 8), randomise=False)
    path = tmp_path / "wider.pt"
    torch.save(wider.state_dict(), path)
    with pytest.raises(ValueError, match=r"patch_embed.proj.weight \(48, 3, 4, 4\) vs .*\(32, 3, 4, 4\)"):
        load_backbone_checkpoint(make_tiny(randomise=False), path)


def test_read_state_dict_unwraps_and_reads_safetensors(tmp_path):
    tensors = {"a.weight": torch.arange(4.0)}
    save_file(tensors, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {"model": tensors}}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        assert torch.equal(read_state_dict(tmp_path / name)["a.weight"], tensors["a.weight"])
