"""The fused Triton soft-lookup kernels, run on CPU tensors by the Triton interpreter.

TRITON_INTERPRET must be set before the kernels are decorated (first use of the Triton path), hence
the setdefault above the imports; nox sets it for the whole session anyway.  Every test that calls the
kernels checks, through a launch spy, that the interpreted kernels really ran.

Tolerances, relative to the largest magnitude of the float64 reference tensor being compared:
  float32   1e-5    (fp32 softmax, IEEE fp32 dots; observed ~1e-6)
  float16   2e-3    (≈ 2 ulp: p and the dot operands are rounded to fp16, result rounded to fp16)
  bfloat16  1.6e-2  (≈ 2 ulp of bf16, for the same reasons)
Inputs are rounded to the dtype first, so the reference sees exactly the values the kernel sees.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ait_tokenizer import _triton_soft_lookup as kernels
from ait_tokenizer.soft_lookup import soft_lookup

TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
KERNEL_NAMES = (
    "_soft_lookup_fwd_kernel",
    "_soft_lookup_bwd_logits_kernel",
    "_soft_lookup_bwd_codebook_kernel",
)


@pytest.fixture
def launches(monkeypatch):
    """Records each kernel launch as (kernel name, positional args); fails if not interpreted."""
    from triton.runtime.interpreter import InterpretedFunction

    assert os.environ.get("TRITON_INTERPRET") == "1"
    assert kernels.interpreting()
    recorded: list[tuple[str, tuple]] = []
    for name in KERNEL_NAMES:
        kernel = getattr(kernels, name)
        assert isinstance(kernel, InterpretedFunction), f"{name} is {type(kernel).__name__}"

        def spy(*args, _name=name, _run=kernel.run, **kwargs):
            recorded.append((_name, args))
            return _run(*args, **kwargs)

        monkeypatch.setattr(kernel, "run", spy)
    return recorded


def launched(recorded) -> list[str]:
    return [name for name, _ in recorded]


def reference_with_grads(logits, codebook, tau, grad_out):
    """Float64 forward and gradients of softmax(τℓ) @ E with the given upstream gradient."""
    logits64 = logits.detach().double().requires_grad_(True)
    codebook64 = codebook.detach().double().requires_grad_(True)
    out = torch.softmax(logits64 * tau, dim=-1) @ codebook64
    out.backward(grad_out.double())
    return out.detach(), logits64.grad, codebook64.grad


def logits_grad_scale(codebook, tau, grad_out) -> float:
    """|τ|·max|dY·Eᵀ|: dℓ = τp∘(G − Σp∘G) cancels terms of this size, so its rounding error scales with it
    (with a peaked softmax dℓ itself can be far smaller than the terms it is the difference of)."""
    grad_probs = grad_out.double().reshape(-1, codebook.shape[1]) @ codebook.double().t()
    return abs(tau) * grad_probs.abs().max().item()


def assert_close_to_reference(actual, expected, dtype, what, scale=0.0):
    scale = max(expected.abs().max().item(), scale, 1e-30)
    error = (actual.double() - expected).abs().max().item()
    assert error <= TOLERANCE[dtype] * scale, (
        f"{what}: max error {error:.3g} > {TOLERANCE[dtype]} × {scale:.3g}"
    )


def check_against_reference(logits_leaf, codebook, tau, generator, columns=slice(None)):
    """Run the fused path on ``logits_leaf[..., columns]`` forward and backward; compare output, dE
    and dℓ with float64, and check that no gradient leaks outside the slice."""
    logits = logits_leaf[..., columns]
    dtype = logits.dtype
    out = soft_lookup(logits, codebook, tau=tau, backend="triton")
    assert out.dtype == dtype and out.shape == (*logits.shape[:-1], codebook.shape[1])
    grad_out = torch.randn(out.shape, generator=generator).to(dtype)
    out.backward(grad_out)
    expected_out, expected_grad_logits, expected_grad_codebook = reference_with_grads(
        logits, codebook, tau, grad_out
    )
    assert_close_to_reference(out, expected_out, dtype, "output")
    assert_close_to_reference(codebook.grad, expected_grad_codebook, codebook.dtype, "codebook grad")
    grad_logits = logits_leaf.grad[..., columns]
    assert grad_logits.dtype == dtype
    outside = torch.ones(logits_leaf.shape[-1], dtype=torch.bool)
    outside[columns] = False
    assert torch.all(logits_leaf.grad[..., outside] == 0)
    grad_scale = logits_grad_scale(codebook, tau, grad_out)
    assert_close_to_reference(grad_logits, expected_grad_logits, dtype, "logits grad", grad_scale)
    return grad_logits, grad_scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("rows", "n_codes", "dim", "tau"),
    [
        (1, 16, 16, 1.0),  # a single row
        (70, 128, 64, 0.8),  # rows not a multiple of any row block; AiT's K and depth τ
        (33, 100, 40, 2.5),  # K and D not powers of two: padded codes and columns
        (17, 24, 48, -0.5),  # negative τ must not un-mask the padded codes
    ],
)
def test_forward_and_gradients_match_float64_reference(launches, dtype, rows, n_codes, dim, tau):
    generator = torch.Generator().manual_seed(rows * 1000 + n_codes)
    logits = (3 * torch.randn(rows, n_codes, generator=generator)).to(dtype).requires_grad_(True)
    codebook = torch.randn(n_codes, dim, generator=generator).to(dtype).requires_grad_(True)
    check_against_reference(logits, codebook, tau, generator)
    assert launched(launches) == list(KERNEL_NAMES)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_strided_slice_of_vocabulary_logits_is_read_in_place(launches, dtype):
    """The task-solver passes full_logits[..., start:start + K]: row stride = vocabulary size, no copy."""
    generator = torch.Generator().manual_seed(7)
    vocab, start, n_codes = 300, 37, 128
    full_logits = (2 * torch.randn(2, 35, vocab, generator=generator)).to(dtype).requires_grad_(True)
    codebook = torch.randn(n_codes, 32, generator=generator).to(dtype).requires_grad_(True)
    check_against_reference(full_logits, codebook, 1.0, generator, columns=slice(start, start + n_codes))
    name, args = launches[0]
    assert name == "_soft_lookup_fwd_kernel"
    kernel_logits = args[0]
    assert kernel_logits.data_ptr() == full_logits.data_ptr() + start * full_logits.element_size()
    assert kernel_logits.stride() == (vocab, 1)


def test_logits_with_non_unit_column_stride(launches):
    generator = torch.Generator().manual_seed(8)
    stored = torch.randn(48, 21, generator=generator)  # (K, rows) storage, read as (rows, K)
    logits = stored.t().requires_grad_(True)
    codebook = torch.randn(48, 24, generator=generator, requires_grad=True)
    check_against_reference(logits, codebook, 1.3, generator)
    assert launches[0][1][0].stride() == (1, 21)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_paper_sizes_k128_d512(launches, dtype):
    generator = torch.Generator().manual_seed(9)
    full_logits = (3 * torch.randn(1, 5, 400, generator=generator)).to(dtype).requires_grad_(True)
    codebook = torch.randn(128, 512, generator=generator).to(dtype).requires_grad_(True)
    check_against_reference(full_logits, codebook, 0.8, generator, columns=slice(200, 328))
    assert launched(launches) == list(KERNEL_NAMES)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_codebook_gradient_summed_over_several_row_chunks(launches, dtype):
    """The two-stage dE reduction with many chunks (the heuristic uses one chunk on small inputs)."""
    generator = torch.Generator().manual_seed(10)
    logits = (2 * torch.randn(150, 32, generator=generator)).to(dtype)
    codebook = torch.randn(32, 40, generator=generator).to(dtype)
    grad_out = torch.randn(150, 40, generator=generator).to(dtype)
    _, lse = kernels.forward(logits, codebook, 0.9)
    grad_codebook = kernels.backward_codebook(logits, codebook, lse, grad_out, 0.9, rows_per_chunk=16)
    _, _, expected = reference_with_grads(logits, codebook, 0.9, grad_out)
    assert_close_to_reference(grad_codebook, expected, dtype, "codebook grad")
    codebook_launch = next(args for name, args in launches if name == "_soft_lookup_bwd_codebook_kernel")
    partials = codebook_launch[3]
    # Chunks round up to whole 64-row blocks: 64 + 64 + 22 rows.
    assert partials.shape == (3, 32, 40)


def test_mixed_dtypes_bf16_logits_fp32_codebook(launches):
    generator = torch.Generator().manual_seed(11)
    logits = (2 * torch.randn(20, 64, generator=generator)).bfloat16().requires_grad_(True)
    codebook = torch.randn(64, 32, generator=generator, requires_grad=True)
    out = soft_lookup(logits, codebook, tau=1.0, backend="triton")
    assert out.dtype == torch.bfloat16
    grad_out = torch.randn(out.shape, generator=generator).bfloat16()
    out.backward(grad_out)
    expected_out, expected_grad_logits, expected_grad_codebook = reference_with_grads(
        logits, codebook, 1.0, grad_out
    )
    assert logits.grad.dtype == torch.bfloat16 and codebook.grad.dtype == torch.float32
    assert_close_to_reference(out, expected_out, torch.bfloat16, "output")
    grad_scale = logits_grad_scale(codebook, 1.0, grad_out)
    assert_close_to_reference(logits.grad, expected_grad_logits, torch.bfloat16, "logits grad", grad_scale)
    # The dots run in fp32 here, so dE (kept in fp32) is fp32-accurate.
    assert_close_to_reference(codebook.grad, expected_grad_codebook, torch.float32, "codebook grad")


def test_frozen_codebook_skips_the_codebook_gradient_kernel(launches):
    logits = torch.randn(10, 16, requires_grad=True)
    codebook = torch.randn(16, 16)  # the frozen tokenizer codebook: no grad
    soft_lookup(logits, codebook, backend="triton").sum().backward()
    assert launched(launches) == ["_soft_lookup_fwd_kernel", "_soft_lookup_bwd_logits_kernel"]
    assert logits.grad is not None


def test_fused_fp32_agrees_with_torch_path_and_is_deterministic(launches):
    generator = torch.Generator().manual_seed(12)
    logits = 3 * torch.randn(4, 9, 128, generator=generator)
    codebook = torch.randn(128, 64, generator=generator)
    fused = soft_lookup(logits, codebook, tau=0.8, backend="triton")
    torch.testing.assert_close(fused, soft_lookup(logits, codebook, tau=0.8, backend="torch"))
    assert torch.equal(fused, soft_lookup(logits, codebook, tau=0.8, backend="triton"))
    assert launched(launches) == ["_soft_lookup_fwd_kernel"] * 2


def test_empty_rows(launches):
    logits = torch.zeros(0, 16, requires_grad=True)
    codebook = torch.randn(16, 8, requires_grad=True)
    out = soft_lookup(logits, codebook, backend="triton")
    assert out.shape == (0, 8)
    out.sum().backward()
    assert torch.equal(codebook.grad, torch.zeros(16, 8))
    assert launches == []


def test_auto_backend_uses_torch_for_cpu_tensors_even_under_the_interpreter(launches):
    soft_lookup(torch.randn(3, 16), torch.randn(16, 8), backend="auto")
    assert launches == []


def test_triton_backend_rejects_unsupported_inputs():
    with pytest.raises(ValueError, match=r"codebook size K must be <= 512.*got 600"):
        soft_lookup(torch.randn(2, 600), torch.randn(600, 4), backend="triton")
    with pytest.raises(
        ValueError, match=r"logits dtype must be float32, bfloat16 or float16, got torch.float64"
    ):
        soft_lookup(torch.randn(2, 8, dtype=torch.float64), torch.randn(8, 4), backend="triton")


@settings(max_examples=10, deadline=None)
@given(
    rows=st.integers(1, 40),
    n_codes=st.integers(1, 64),
    dim=st.integers(1, 40),
    tau=st.floats(-2.0, 3.0),
    seed=st.integers(0, 2**16),
)
def test_property_logit_gradients_sum_to_zero_and_match_reference(rows, n_codes, dim, tau, seed):
    """Σ_k dℓ_k = 0 for every row (softmax ignores a shift of the logits), and fp32 matches float64."""
    generator = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(rows, n_codes, generator=generator)).requires_grad_(True)
    codebook = torch.randn(n_codes, dim, generator=generator, requires_grad=True)
    grad_logits, grad_scale = check_against_reference(logits, codebook, tau, generator)
    assert grad_logits.sum(dim=1).abs().max() <= 1e-5 * grad_scale
