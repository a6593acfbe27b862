"""soft_lookup: API, validation, dispatch and the torch path (no Triton needed here).

The fused Triton kernels are tested under the interpreter in test_soft_lookup_triton.py.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ait_tokenizer import soft_lookup


def reference(logits: torch.Tensor, codebook: torch.Tensor, tau: float) -> torch.Tensor:
    return torch.softmax(logits.double() * tau, dim=-1) @ codebook.double()


def test_hand_worked_example():
    # logits (0, ln 3) give p = (1/4, 3/4); τ = 1.
    codebook = torch.tensor([[4.0, 0.0, -8.0], [0.0, 4.0, 8.0]])
    logits = torch.tensor([[0.0, math.log(3.0)]])
    out = soft_lookup(logits, codebook, tau=1.0, backend="torch")
    torch.testing.assert_close(out, torch.tensor([[1.0, 3.0, 4.0]]))


def test_tau_zero_averages_the_codebook():
    codebook = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    logits = torch.randn(2, 4, 5)
    out = soft_lookup(logits, codebook, tau=0.0, backend="torch")
    torch.testing.assert_close(out, codebook.mean(0).expand(2, 4, 3))


def test_tau_multiplies_the_logits():
    generator = torch.Generator().manual_seed(1)
    logits, codebook = torch.randn(7, 16, generator=generator), torch.randn(16, 8, generator=generator)
    torch.testing.assert_close(
        soft_lookup(logits, codebook, tau=0.8, backend="torch"),
        soft_lookup(0.8 * logits, codebook, tau=1.0, backend="torch"),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_torch_path_matches_float64_reference_and_keeps_dtype(dtype):
    generator = torch.Generator().manual_seed(2)
    logits = (3 * torch.randn(3, 5, 32, generator=generator)).to(dtype)
    codebook = torch.randn(32, 24, generator=generator).to(dtype)
    out = soft_lookup(logits, codebook, tau=0.8, backend="torch")
    assert out.shape == (3, 5, 24) and out.dtype == dtype
    expected = reference(logits, codebook, 0.8)
    # The torch path computes in fp32 and rounds only the output: half an ulp of the dtype, plus slack.
    tolerance = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    assert (out.double() - expected).abs().max() <= tolerance * expected.abs().max()


def test_gradcheck_torch_path_float64():
    generator = torch.Generator().manual_seed(3)
    full_logits = torch.randn(2, 3, 12, dtype=torch.float64, generator=generator, requires_grad=True)
    codebook = torch.randn(5, 4, dtype=torch.float64, generator=generator, requires_grad=True)

    def sliced_lookup(full, book):  # a non-contiguous column slice, as the task-solver passes it
        return soft_lookup(full[..., 4:9], book, tau=0.7, backend="torch")

    assert torch.autograd.gradcheck(sliced_lookup, (full_logits, codebook))
    assert torch.autograd.gradgradcheck(sliced_lookup, (full_logits, codebook))


def test_mixed_dtypes_output_follows_logits():
    logits = torch.randn(4, 16).bfloat16()
    codebook = torch.randn(16, 8, requires_grad=True)
    out = soft_lookup(logits, codebook, backend="torch")
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert codebook.grad.dtype == torch.float32


def test_empty_rows():
    out = soft_lookup(torch.zeros(0, 3, 16), torch.randn(16, 8), backend="torch")
    assert out.shape == (0, 3, 8)


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 6),
    n_codes=st.integers(1, 12),
    dim=st.integers(1, 6),
    tau=st.floats(-3.0, 3.0),
    shift=st.floats(-50.0, 50.0),
    seed=st.integers(0, 2**16),
)
def test_properties_convex_mix_and_shift_invariance(rows, n_codes, dim, tau, shift, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = 4 * torch.randn(rows, n_codes, dtype=torch.float64, generator=generator)
    codebook = torch.randn(n_codes, dim, dtype=torch.float64, generator=generator)
    out = soft_lookup(logits, codebook, tau=tau, backend="torch")
    # A probability-weighted mix lies within the per-dimension range of the codebook...
    assert torch.all(out >= codebook.min(0).values - 1e-12)
    assert torch.all(out <= codebook.max(0).values + 1e-12)
    # ...and the softmax ignores a constant added to every logit of a row.
    torch.testing.assert_close(soft_lookup(logits + shift, codebook, tau=tau, backend="torch"), out)


@pytest.mark.parametrize(
    ("logits_shape", "codebook_shape", "message"),
    [
        ((2, 10), (8, 4), r"logits must have shape \(\.\.\., 8\) to match codebook \(8, 4\), got \(2, 10\)"),
        ((2, 8), (8,), r"codebook must be 2-D \(K, D\) with K >= 1, got shape \(8,\)"),
        ((2, 8), (2, 4, 4), r"codebook must be 2-D"),
        ((2, 0), (0, 4), r"codebook must be 2-D \(K, D\) with K >= 1, got shape \(0, 4\)"),
        ((), (8, 4), r"logits must have shape \(\.\.\., 8\)"),
    ],
)
def test_shape_errors_name_expected_and_received(logits_shape, codebook_shape, message):
    with pytest.raises(ValueError, match=message):
        soft_lookup(torch.zeros(logits_shape), torch.zeros(codebook_shape))


def test_value_errors_for_dtype_tau_backend_device():
    logits, codebook = torch.zeros(2, 8), torch.zeros(8, 4)
    with pytest.raises(ValueError, match=r"logits dtype must be one of .* got torch.int64"):
        soft_lookup(logits.long(), codebook)
    with pytest.raises(ValueError, match=r"codebook dtype must be one of .* got torch.complex64"):
        soft_lookup(logits, codebook.to(torch.complex64))
    for bad_tau in (float("nan"), float("inf"), "1.0", True):
        with pytest.raises(ValueError, match="tau must be a finite number"):
            soft_lookup(logits, codebook, tau=bad_tau)
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'triton', 'torch'\), got 'cuda'"):
        soft_lookup(logits, codebook, backend="cuda")
    with pytest.raises(ValueError, match="must share a device"):
        soft_lookup(logits, codebook.to("meta"))
    with pytest.raises(TypeError, match=r"must be torch\.Tensor"):
        soft_lookup(logits.tolist(), codebook)


def test_triton_backend_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        soft_lookup(torch.zeros(2, 8), torch.zeros(8, 4), backend="triton")


_WITHOUT_TRITON = """
import sys
sys.modules["triton"] = None  # any `import triton` now raises ImportError
import torch
from ait_tokenizer.soft_lookup import soft_lookup, triton_available
assert not triton_available()
logits, codebook = torch.randn(3, 8), torch.randn(8, 4)
assert soft_lookup(logits, codebook).shape == (3, 4)  # auto falls back to torch
try:
    soft_lookup(logits, codebook, backend="triton")
except ValueError as error:
    assert "triton is not installed" in str(error), error
else:
    raise AssertionError("backend='triton' without triton must fail")
print("ok")
"""


def test_module_imports_and_falls_back_without_triton():
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TRITON], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_soft_lookup_md_example_runs():
    text = (Path(__file__).resolve().parents[1] / "SOFT_LOOKUP.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "SOFT_LOOKUP.md has no python example"
    for block in blocks:
        exec(compile(block, "SOFT_LOOKUP.md", "exec"), {})
