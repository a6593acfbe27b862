"""Soft token lookup: Y = softmax(τ·ℓ) @ E, the probability-weighted mix of codebook vectors.

Two implementations behind one function:

* ``"triton"``: fused kernels (``ait_tokenizer._triton_soft_lookup``) that read the logits in place
  (a column slice of the full vocabulary logits is not copied), keep only the per-row log-sum-exp for
  the backward pass and recompute the probabilities there.  CUDA tensors, or CPU tensors under the
  Triton interpreter (``TRITON_INTERPRET=1``, how CI tests it).
* ``"torch"``: eager softmax + matmul in fp32 (float64 for float64 inputs); works everywhere.

``backend="auto"`` picks Triton for CUDA tensors when triton is installed and the inputs suit it,
torch otherwise.  The environment variable ``AIT_SOFT_LOOKUP`` (``torch`` or ``triton``) overrides what
``"auto"`` picks, without touching code or configs: ``AIT_SOFT_LOOKUP=torch`` is the way around a Triton
kernel that fails on a user's GPU.  Triton is imported lazily, so this module imports without it.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from types import ModuleType

import torch

BACKENDS = ("auto", "triton", "torch")
# overrides backend="auto" when set: "torch" or "triton" ("auto" or empty: no override)
BACKEND_ENV = "AIT_SOFT_LOOKUP"
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_TORCH_DTYPES = (*_TRITON_DTYPES, torch.float64)
# The kernels hold a whole row of K logits in one tile; beyond this it no longer fits in registers.
_MAX_TRITON_CODES = 512


def soft_lookup(
    logits: torch.Tensor, codebook: torch.Tensor, tau: float = 1.0, backend: str = "auto"
) -> torch.Tensor:
    """softmax(τ·logits) @ codebook over the last dimension.

    Args:
        logits: (..., K) float tensor; any strides (a slice such as ``full[..., a:a + K]`` is fine).
        codebook: (K, D) float tensor on the same device.
        tau: finite temperature multiplier applied to the logits before the softmax.
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.

    Returns:
        (..., D) tensor in the logits dtype; differentiable in both logits and codebook.  Softmax and
        accumulation run in fp32 (float64 for float64 inputs on the torch path).
    """
    _validate(logits, codebook, tau, backend)
    if _resolve_backend(logits, codebook, backend) == "torch":
        return _soft_lookup_torch(logits, codebook, float(tau))
    n_codes, dim = codebook.shape
    # A view whenever the leading dimensions can be merged (always true for a column slice of a
    # contiguous tensor), so the kernel reads the vocabulary logits in place.
    rows = logits.reshape(-1, n_codes)
    out = _SoftLookupFunction.apply(rows, codebook, float(tau))
    return out.reshape(*logits.shape[:-1], dim)


def _validate(logits: object, codebook: object, tau: object, backend: object) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(logits, torch.Tensor) or not isinstance(codebook, torch.Tensor):
        raise TypeError(
            f"logits and codebook must be torch.Tensor, got {type(logits).__name__} and "
            f"{type(codebook).__name__}"
        )
    if codebook.ndim != 2 or codebook.shape[0] == 0:
        raise ValueError(f"codebook must be 2-D (K, D) with K >= 1, got shape {tuple(codebook.shape)}")
    n_codes, dim = codebook.shape
    if logits.ndim == 0 or logits.shape[-1] != n_codes:
        raise ValueError(
            f"logits must have shape (..., {n_codes}) to match codebook ({n_codes}, {dim}), "
            f"got {tuple(logits.shape)}"
        )
    for name, tensor in (("logits", logits), ("codebook", codebook)):
        if tensor.dtype not in _TORCH_DTYPES:
            raise ValueError(
                f"{name} dtype must be one of float32, bfloat16, float16, float64, got {tensor.dtype}"
            )
    if logits.device != codebook.device:
        raise ValueError(
            f"logits and codebook must share a device, got {logits.device} and {codebook.device}"
        )
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not math.isfinite(tau):
        raise ValueError(f"tau must be a finite number, got {tau!r}")


def _env_backend() -> str:
    value = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV} must be one of {BACKENDS} (or unset), got {value!r}")
    return value


def _resolve_backend(logits: torch.Tensor, codebook: torch.Tensor, backend: str) -> str:
    if backend == "auto":
        backend = _env_backend()
    if backend == "torch":
        return "torch"
    if backend == "auto":
        return "triton" if logits.is_cuda and _triton_unsuitable(logits, codebook) is None else "torch"
    unsuitable = _triton_unsuitable(logits, codebook)
    if unsuitable is not None:
        raise ValueError(f"backend='triton' cannot run these inputs: {unsuitable}")
    if logits.device.type not in ("cpu", "cuda"):
        raise ValueError(f"backend='triton' runs on CUDA (or CPU under the interpreter), got {logits.device}")
    if logits.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "backend='triton' on CPU tensors needs the Triton interpreter: set TRITON_INTERPRET=1 before "
            "triton is imported, or move the tensors to CUDA, or use backend='torch'"
        )
    return "triton"


def _triton_unsuitable(logits: torch.Tensor, codebook: torch.Tensor) -> str | None:
    """Why the Triton path cannot take these inputs, or None when it can."""
    if not triton_available():
        return "triton is not installed (pip install 'ait-tokenizer[triton]')"
    for name, tensor in (("logits", logits), ("codebook", codebook)):
        if tensor.dtype not in _TRITON_DTYPES:
            return f"{name} dtype must be float32, bfloat16 or float16, got {tensor.dtype}"
    if codebook.shape[0] > _MAX_TRITON_CODES:
        return f"codebook size K must be <= {_MAX_TRITON_CODES} (one row of logits per tile), got {codebook.shape[0]}"
    return None


@functools.cache
def triton_available() -> bool:
    """Whether triton imports (tried once, only when a Triton path is considered)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _kernels() -> ModuleType:
    from ait_tokenizer import _triton_soft_lookup

    return _triton_soft_lookup


def _soft_lookup_torch(logits: torch.Tensor, codebook: torch.Tensor, tau: float) -> torch.Tensor:
    compute_dtype = torch.promote_types(torch.promote_types(logits.dtype, codebook.dtype), torch.float32)
    probs = torch.softmax(logits.to(compute_dtype) * tau, dim=-1)
    return (probs @ codebook.to(compute_dtype)).to(logits.dtype)


class _SoftLookupFunction(torch.autograd.Function):
    """Autograd wrapper of the fused kernels; saves the logits (a view) and the row log-sum-exp only."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, codebook: torch.Tensor, tau: float) -> torch.Tensor:
        out, lse = _kernels().forward(logits, codebook, tau)
        ctx.save_for_backward(logits, codebook, lse)
        ctx.tau = tau
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        logits, codebook, lse = ctx.saved_tensors
        kernels = _kernels()
        grad_logits = grad_codebook = None
        if ctx.needs_input_grad[0]:
            grad_logits = kernels.backward_logits(logits, codebook, lse, grad_out, ctx.tau)
        if ctx.needs_input_grad[1]:
            grad_codebook = kernels.backward_codebook(logits, codebook, lse, grad_out, ctx.tau)
        return grad_logits, grad_codebook, None
