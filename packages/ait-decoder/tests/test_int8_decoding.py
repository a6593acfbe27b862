"""Weight-only int8 decoding steps (``weights="int8"``): close to fp32, and clear about where they apply."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ait_decoder.layers import StepLinear
from ait_decoder.testing import random_features
from ait_decoder.testing import tiny_decoder as make_tiny_decoder
from ait_decoder.testing import tiny_vocab as make_tiny_vocab


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 4),
    fan_in=st.sampled_from([16, 32, 64]),
    fan_out=st.sampled_from([8, 48, 96]),
    seed=st.integers(0, 2**16),
)
def test_int8_linear_matches_a_float64_reference(rows, fan_in, fan_out, seed):
    g = torch.Generator().manual_seed(seed)
    weight, bias = torch.randn(fan_out, fan_in, generator=g), torch.randn(fan_out, generator=g)
    x, residual = torch.randn(rows, fan_in, generator=g), torch.randn(rows, fan_out, generator=g)
    step = StepLinear.from_weight(weight, bias, "int8")
    assert step.qweight.dtype == torch.int8 and step.qweight.abs().max() <= 127
    # each row's largest weight maps to +-127: the scale is max |w| / 127 (stored in bfloat16)
    assert torch.equal(step.qweight.abs().amax(dim=1), torch.full((fan_out,), 127, dtype=torch.int8))
    # the kernel computes bf16(x) @ (q * bf16(scale))ᵀ; reference in float64, output rounded to bf16 once
    dequantised = step.qweight.double() * step.scales.double()[:, None]
    reference = x.to(torch.bfloat16).double() @ dequantised.t() + bias.double() + residual.double()
    out = step(x, residual=residual)
    assert out.dtype == torch.float32
    scale = (x.to(torch.bfloat16).double().abs() @ dequantised.abs().t()).max()
    torch.testing.assert_close(out.double(), reference, rtol=0, atol=float(scale) * 2**-7)
    # and the quantised layer stays close to the exact one: rounding error <= scale/2 per weight
    exact = x.double() @ weight.double().t() + bias.double()
    bound = x.double().abs() @ (step.scales.double()[:, None] / 2 * torch.ones_like(weight.double())).t()
    assert ((step(x).double() - exact).abs() <= bound + scale * 2**-6 + 1e-6).all()


def test_fp32_step_linear_is_exactly_the_module():
    linear = torch.nn.Linear(24, 40)
    x, residual = torch.randn(3, 24), torch.randn(3, 40)
    step = StepLinear.pack(linear, "fp32")
    torch.testing.assert_close(step(x), linear(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(step(x, residual=residual), residual + linear(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 3])
def test_int8_greedy_decoding_stays_close_to_fp32(batch):
    model = make_tiny_decoder()
    memory = model.encode(random_features(batch))
    vocab = make_tiny_vocab()
    for task, length in (("depth", 16), ("insseg", 27)):
        allowed = vocab.allowed_ranges(task, length)
        int8 = model.generate(memory, task, length, allowed=allowed, weights="int8")
        lo, hi = allowed[:, 0], allowed[:, 1]
        assert ((int8.ids >= lo) & (int8.ids < hi)).all()
        # fp32 logits on int8's own prefix (teacher forcing): each step's logits differ only by
        # quantisation + bf16 rounding, and each chosen id is fp32's choice or within that error of it
        # (whole-sequence id agreement is no measure: one near-tie changes every later input)
        exact = model(memory, int8.ids, task)
        scale = exact.abs().max()
        assert (int8.logits - exact).abs().max() < 0.05 * scale
        token = torch.arange(exact.shape[-1])
        inside = (token >= lo[:, None]) & (token < hi[:, None])
        best = exact.masked_fill(~inside, float("-inf")).amax(-1)
        chosen = exact.gather(-1, int8.ids[..., None])[..., 0]
        assert (best - chosen).max() < 0.1 * scale


def test_int8_weights_are_rejected_where_they_do_not_apply(tiny_decoder):
    memory = tiny_decoder.encode(random_features(2))
    with pytest.raises(ValueError, match="cached one-token steps only"):
        tiny_decoder.generate(memory, "depth", 4, weights="int8", parallel=True)
    with pytest.raises(ValueError, match="cached one-token steps only"):
        tiny_decoder.generate(memory, "depth", 4, weights="int8", use_cache=False)
    with pytest.raises(ValueError, match="must be one of"):
        tiny_decoder.generate(memory, "depth", 4, weights="int4")
    with torch.device("meta"):
        linear = torch.nn.Linear(8, 8)
    with pytest.raises(ValueError, match="CPU only"):
        StepLinear.pack(linear, "int8")
