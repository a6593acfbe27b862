import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ait_tokenizer import create_tokenizer, list_tokenizers, tokenizer_config
from ait_tokenizer.model import reconstruction_loss

PAPER_COUNTS = {"depth-paper": (3_320_560, 4_368_641), "mask-paper": (861_936, 1_123_457)}


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_paper_presets_have_the_original_parameter_counts(name):
    tokenizer = create_tokenizer(name)
    assert (parameter_count(tokenizer.encoder), parameter_count(tokenizer.decoder)) == PAPER_COUNTS[name]
    # The codebook is EMA state, not a parameter.
    assert parameter_count(tokenizer) == sum(PAPER_COUNTS[name])
    assert tuple(tokenizer.codebook.shape) == (128, 512)


def test_registry_lists_the_contract_presets():
    assert {"depth-paper", "mask-paper", "depth-small", "mask-small"} <= set(list_tokenizers())
    with pytest.raises(ValueError, match="depth-paper"):
        create_tokenizer("depth-huge")
    with pytest.raises(ValueError, match="num_kodes"):
        create_tokenizer("depth-small", num_kodes=3)


def test_paper_token_grids():
    assert create_tokenizer("depth-paper").token_grid(480, 480) == (15, 15)
    assert create_tokenizer("depth-paper").token_grid(480, 640) == (15, 20)
    assert create_tokenizer("mask-paper").token_grid(64, 64) == (4, 4)
    # Small mask preset keeps 16 tokens per instance (21 per object in the solver's sequence).
    assert create_tokenizer("mask-small").token_grid(64, 64) == (4, 4)


@pytest.mark.parametrize("name", list_tokenizers())
def test_shapes_of_every_preset(name):
    torch.manual_seed(0)
    tokenizer = create_tokenizer(name)
    ds = tokenizer.downsample
    # A tiny map (2x3 tokens) keeps even the paper presets cheap; the model is fully convolutional.
    height, width = 2 * ds, 3 * ds
    x = torch.rand(2, 1, height, width) * (4.0 if tokenizer.kind == "depth" else 1.0)
    tokenizer.train()
    out = tokenizer(x)
    assert out.recon.shape == x.shape and out.ids.shape == (2, 2, 3)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx((out.recon_loss + out.commit_loss).item())
    assert {"perplexity", "codes_used"} <= set(out.metrics)
    tokenizer.eval()
    ids = tokenizer.encode(x)
    assert ids.shape == (2, 2, 3) and ids.dtype == torch.int64
    assert tokenizer.decode(ids).shape == x.shape
    logits = torch.randn(2, 6, tokenizer.num_codes)
    assert tokenizer.soft_embed(logits, 0.8, grid=(2, 3)).shape == (2, 2, 3, tokenizer.code_dim)
    assert tokenizer.decode_soft(logits.view(2, 2, 3, -1), 1.0).shape == x.shape


@pytest.fixture(scope="module")
def small_depth():
    torch.manual_seed(0)
    return create_tokenizer("depth-small").eval()


@pytest.fixture(scope="module")
def small_mask():
    torch.manual_seed(0)
    return create_tokenizer("mask-small").eval()


token_grids = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3))


@settings(max_examples=15, deadline=None)
@given(grid=token_grids, data=st.data())
def test_decode_soft_of_confident_logits_is_decode(small_depth, grid, data):
    batch, h, w = grid
    ids = torch.tensor(
        data.draw(st.lists(st.integers(0, 127), min_size=batch * h * w, max_size=batch * h * w))
    )
    ids = ids.view(batch, h, w)
    logits = torch.nn.functional.one_hot(ids, 128).float() * 50.0
    assert torch.allclose(small_depth.soft_embed(logits, 1.0), small_depth.codebook[ids], atol=1e-5)
    assert torch.allclose(small_depth.decode_soft(logits, 1.0), small_depth.decode(ids), atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(grid=token_grids, data=st.data())
def test_codes_re_encode_to_themselves(small_depth, grid, data):
    """Quantising a code vector gives back its id: decode's input is a fixed point of the quantizer."""
    batch, h, w = grid
    ids = torch.tensor(
        data.draw(st.lists(st.integers(0, 127), min_size=batch * h * w, max_size=batch * h * w))
    )
    codes = small_depth.codebook[ids]
    assert torch.equal(small_depth.quantizer.nearest(codes), ids)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 3))
def test_encode_is_per_sample_and_decode_stays_in_range(small_mask, seed, batch):
    generator = torch.Generator().manual_seed(seed)
    masks = (torch.rand(batch, 1, 64, 64, generator=generator) > 0.5).float()
    ids = small_mask.encode(masks)
    assert torch.equal(ids, torch.cat([small_mask.encode(m[None]) for m in masks]))
    assert ids.min() >= 0 and ids.max() < 128
    decoded = small_mask.decode(ids)
    assert decoded.min() >= 0 and decoded.max() <= 1
    assert torch.equal(small_mask.encode(decoded), small_mask.encode(decoded))


def test_mask_tokenizer_scales_to_minus_one_one(small_mask):
    ones = torch.ones(1, 1, 64, 64)
    assert torch.equal(small_mask.encode_latents(ones), small_mask.encoder(ones * 2 - 1).permute(0, 2, 3, 1))


def test_decode_soft_is_differentiable_in_logits(small_depth):
    logits = torch.randn(1, 64, 128, requires_grad=True)
    small_depth.decode_soft(logits, 0.8).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_soft_embed_accepts_a_strided_vocabulary_slice(small_depth):
    vocabulary_logits = torch.randn(2, 64, 300)
    sliced = vocabulary_logits[..., 100:228]
    expected = torch.softmax(sliced * 0.8, -1) @ small_depth.codebook
    assert torch.allclose(small_depth.soft_embed(sliced, 0.8), expected.view(2, 8, 8, -1), atol=1e-5)


def test_codebook_is_read_only(small_depth):
    assert not small_depth.codebook.requires_grad
    with pytest.raises(AttributeError):
        small_depth.codebook = torch.zeros(128, 64)


def test_straight_through_gradient_reaches_the_encoder():
    torch.manual_seed(0)
    tokenizer = create_tokenizer("depth-small", kmeans_init=False).train()
    tokenizer(torch.rand(2, 1, 64, 64) + 1).recon_loss.backward()
    first_conv = tokenizer.encoder[0].weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_depth_loss_ignores_invalid_pixels():
    torch.manual_seed(0)
    tokenizer = create_tokenizer("depth-small", mask_ratio=0.0, kmeans_init=False).eval()
    x = torch.rand(2, 1, 64, 64) + 1
    target = x.clone()
    target[:, :, :20] = 0  # invalid rows
    out = tokenizer(x, target)
    valid = target > 0
    expected = ((out.recon - target)[valid] ** 2).mean()
    assert out.recon_loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # What the reconstruction holds on invalid pixels does not matter, and gets no gradient.
    output = out.recon.detach().clone().requires_grad_(True)
    changed = output.detach().clone()
    changed[~valid] += 100.0
    assert reconstruction_loss(changed, target, valid).item() == pytest.approx(
        out.recon_loss.item(), rel=1e-6
    )
    reconstruction_loss(output, target, valid).backward()
    assert (output.grad[~valid] == 0).all() and (output.grad[valid] != 0).any()


def test_mask_augmentation_touches_the_encoder_input_only():
    torch.manual_seed(0)
    tokenizer = create_tokenizer("depth-small", kmeans_init=False).train()
    x = torch.rand(1, 1, 64, 64) + 1
    seen = {}

    def remember_input(module, args, output):
        seen["input"] = args[0]

    tokenizer.encoder.register_forward_hook(remember_input)
    out = tokenizer(x, generator=torch.Generator().manual_seed(0))
    blanked = (seen["input"] == 0).float().mean().item()
    assert blanked == pytest.approx(0.5)  # 128 of 256 4x4 patches
    assert out.recon_loss.item() == pytest.approx(((out.recon - x) ** 2).mean().item(), rel=1e-5)
    # eval mode: no augmentation
    seen.clear()
    tokenizer.eval()(x)
    assert (seen["input"] != 0).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.encode(torch.rand(1, 3, 64, 64)), r"\(B, 1, H, W\).*\(1, 3, 64, 64\)"),
        (lambda t: t.encode(torch.rand(1, 1, 60, 64)), "multiples of the downsample 8, got 60x64"),
        (lambda t: t.encode(torch.full((1, 1, 64, 64), math.nan)), "NaN/inf"),
        (lambda t: t(torch.full((1, 1, 64, 64), math.inf)), "NaN/inf"),
        (lambda t: t.decode(torch.full((1, 8, 8), 128)), r"\[0, 128\), got values in \[128, 128\]"),
        (lambda t: t.decode(torch.full((1, 8, 8), -1)), r"\[0, 128\)"),
        (lambda t: t.decode(torch.zeros(1, 64, dtype=torch.long)), r"\(B, h, w\)"),
        (lambda t: t.decode_soft(torch.randn(1, 64, 100), 1.0), "codebook size 128.*100"),
        (lambda t: t.soft_embed(torch.randn(1, 60, 128), 1.0), "square grid"),
        (lambda t: t.token_grid(30, 64), "downsample 8"),
    ],
)
def test_bad_input_is_a_clear_value_error(small_depth, call, message):
    with pytest.raises(ValueError, match=message):
        call(small_depth)


def test_mask_values_outside_unit_range_are_rejected(small_mask):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        small_mask.encode(torch.full((1, 1, 64, 64), 2.0))


def test_config_overrides_keep_the_preset_name():
    config = tokenizer_config("depth-small", mask_ratio=0.0)
    assert config.preset == "depth-small" and config.mask_ratio == 0.0


@pytest.mark.parametrize("preset", ["depth-paper", "mask-paper", "depth-small", "mask-small"])
def test_decoder_layer_order_is_the_originals(preset):
    """`dec_layers = [Conv2d(codebook_dim, dim, 1), ReLU(), ResBlock...]`: the ReLU has no parameters, so
    only the layer order (and the outputs) can show it."""
    from ait_tokenizer import create_tokenizer
    from ait_tokenizer.model import ResidualBlock

    decoder = create_tokenizer(preset).decoder
    assert isinstance(decoder[0], torch.nn.Conv2d) and decoder[0].kernel_size == (1, 1)
    assert isinstance(decoder[1], torch.nn.ReLU)
    assert isinstance(decoder[2], ResidualBlock)
    # A negative pre-activation after the first 1x1 convolution must not reach the residual blocks.
    z = torch.randn(1, 2, 2, decoder[0].in_channels)
    first = decoder[0](z.permute(0, 3, 1, 2))
    assert (first < 0).any() and (decoder[1](first) >= 0).all()
