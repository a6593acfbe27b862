"""Triton kernels for the fused soft lookup  Y = softmax(τ·ℓ) @ E.

Shapes: ℓ (M, K) with any strides (typically a column slice of a wider vocabulary tensor, so the row
stride is the vocabulary size and no copy is made), E (K, D), Y (M, D).  K is small (128 in AiT), so a
whole row of K logits fits in one tile and the softmax needs no online rescaling.

Forward    one program per (row block, D tile): load the logits tile, softmax in fp32, store the row
           log-sum-exp (only the first D tile does), then one ``tl.dot`` with the codebook tile.
Backward   p is recomputed from ℓ and the saved LSE (p is never stored).  Two kernels:
  dℓ       one program per row block, looping over D tiles: G = dY·Eᵀ accumulates in fp32, then
           dℓ = τ·p∘(G − rowsum(p∘G)).  rowsum(p∘G) equals rowsum(dY∘Y) (Y = pE), but needs neither Y
           nor a second pass, because the program already holds the full row of G.
  dE       one program per (row chunk, D tile) accumulates pᵀ·dY over all row blocks of its chunk in
           registers and writes one fp32 partial (K, BLOCK_D); the partials are summed by the caller.
           This two-stage reduction is deterministic and writes one K×D partial per chunk of hundreds
           of rows.  Atomic adds from every row block instead would cost K·D·4 bytes per BLOCK_M rows,
           i.e. 256·K/BLOCK_M bytes per row, several times the tensors' own traffic at K = 128.
           The price is reading dY a second time; when the codebook is frozen (AiT's case) this
           kernel does not run at all.

Dots run in the wider dtype of (logits, codebook) with fp32 accumulation; fp32 dots use IEEE precision
(no TF32), matching torch's default for fp32 matmuls.

This module imports triton at import time; ``ait_tokenizer.soft_lookup`` imports it lazily.
"""

from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

# dE partials: a chunk covers at least this many rows so partial traffic stays small against dY's.
_MIN_ROWS_PER_CHUNK = 512

_TORCH_TO_TRITON_DTYPE = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def interpreting() -> bool:
    """Whether the kernels of this module were built for the Triton interpreter (CPU execution)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_soft_lookup_fwd_kernel, InterpretedFunction)


@triton.jit
def _scaled_logits(logits_ptr, rows, codes, row_ok, code_ok, tau, stride_lr, stride_lk):
    """τ-scaled logits of a row block in fp32, padded codes set to −inf (so they get probability 0)."""
    ptrs = logits_ptr + rows.to(tl.int64)[:, None] * stride_lr + codes[None, :] * stride_lk
    logits = tl.load(ptrs, mask=row_ok[:, None] & code_ok[None, :], other=0.0).to(tl.float32)
    # Mask after scaling: a negative τ must not turn the padding into +inf.
    return tl.where(code_ok[None, :], logits * tau, float("-inf"))


@triton.jit
def _to_dot_operand(x, DOT_DTYPE: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """Round to the dot dtype; under the interpreter, bf16 is then widened to fp32 for the matmul.

    The interpreter stores bf16 as raw uint16 and its ``tl.dot`` multiplies those bit patterns
    (triton-lang/triton#11584, unsupported there).  A bf16 tensor-core dot multiplies exactly and
    accumulates in fp32, which an fp32 dot of the bf16-rounded values reproduces.
    """
    x = x.to(DOT_DTYPE)
    if UPCAST_DOT:
        x = x.to(tl.float32)
    return x


@triton.jit
def _soft_lookup_fwd_kernel(
    logits_ptr,
    codebook_ptr,
    out_ptr,
    lse_ptr,
    n_rows,
    n_codes,
    dim,
    tau,
    stride_lr,
    stride_lk,
    stride_ck,
    stride_cd,
    stride_or,
    stride_od,
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    codes = tl.arange(0, BLOCK_K)
    row_ok = rows < n_rows
    code_ok = codes < n_codes

    scaled = _scaled_logits(logits_ptr, rows, codes, row_ok, code_ok, tau, stride_lr, stride_lk)
    row_max = tl.max(scaled, axis=1)
    unnormalised = tl.exp(scaled - row_max[:, None])
    row_sum = tl.sum(unnormalised, axis=1)
    tl.store(lse_ptr + rows, row_max + tl.log(row_sum), mask=row_ok)
    probs = _to_dot_operand(unnormalised / row_sum[:, None], DOT_DTYPE, UPCAST_DOT)

    # The softmax is computed once; the (BLOCK_M, D) output is produced one D tile at a time.
    for d_start in range(0, dim, BLOCK_D):
        cols = d_start + tl.arange(0, BLOCK_D)
        col_ok = cols < dim
        codebook = tl.load(
            codebook_ptr + codes[:, None] * stride_ck + cols[None, :] * stride_cd,
            mask=code_ok[:, None] & col_ok[None, :],
            other=0.0,
        )
        out = tl.dot(probs, _to_dot_operand(codebook, DOT_DTYPE, UPCAST_DOT), input_precision=DOT_PRECISION)
        tl.store(
            out_ptr + rows.to(tl.int64)[:, None] * stride_or + cols[None, :] * stride_od,
            out.to(out_ptr.dtype.element_ty),
            mask=row_ok[:, None] & col_ok[None, :],
        )


@triton.jit
def _recompute_probabilities(logits_ptr, lse_ptr, rows, codes, row_ok, code_ok, tau, stride_lr, stride_lk):
    """p = exp(τℓ − LSE) from the saved log-sum-exp; rows past the end get p = 0."""
    scaled = _scaled_logits(logits_ptr, rows, codes, row_ok, code_ok, tau, stride_lr, stride_lk)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    probs = tl.exp(scaled - lse[:, None])
    return tl.where(row_ok[:, None], probs, 0.0)


@triton.jit
def _soft_lookup_bwd_logits_kernel(
    logits_ptr,
    codebook_ptr,
    lse_ptr,
    grad_out_ptr,
    grad_logits_ptr,
    n_rows,
    n_codes,
    dim,
    tau,
    stride_lr,
    stride_lk,
    stride_ck,
    stride_cd,
    stride_gr,
    stride_gd,
    stride_dlr,
    stride_dlk,
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    codes = tl.arange(0, BLOCK_K)
    row_ok = rows < n_rows
    code_ok = codes < n_codes
    probs = _recompute_probabilities(
        logits_ptr, lse_ptr, rows, codes, row_ok, code_ok, tau, stride_lr, stride_lk
    )

    # G = dY · Eᵀ over the full D, one D tile at a time.
    grad_probs = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for d_start in range(0, dim, BLOCK_D):
        cols = d_start + tl.arange(0, BLOCK_D)
        col_ok = cols < dim
        grad_out = tl.load(
            grad_out_ptr + rows.to(tl.int64)[:, None] * stride_gr + cols[None, :] * stride_gd,
            mask=row_ok[:, None] & col_ok[None, :],
            other=0.0,
        )
        codebook_t = tl.load(  # (BLOCK_D, BLOCK_K): the codebook tile read transposed
            codebook_ptr + codes[None, :] * stride_ck + cols[:, None] * stride_cd,
            mask=code_ok[None, :] & col_ok[:, None],
            other=0.0,
        )
        grad_probs = tl.dot(
            _to_dot_operand(grad_out, DOT_DTYPE, UPCAST_DOT),
            _to_dot_operand(codebook_t, DOT_DTYPE, UPCAST_DOT),
            acc=grad_probs,
            input_precision=DOT_PRECISION,
        )

    # Softmax Jacobian: dℓ = τ p∘(G − Σ_k p_k G_k); Σ_k p_k G_k = Σ_d dY_d Y_d.
    row_dot = tl.sum(probs * grad_probs, axis=1)
    grad_logits = tau * probs * (grad_probs - row_dot[:, None])
    tl.store(
        grad_logits_ptr + rows.to(tl.int64)[:, None] * stride_dlr + codes[None, :] * stride_dlk,
        grad_logits.to(grad_logits_ptr.dtype.element_ty),
        mask=row_ok[:, None] & code_ok[None, :],
    )


@triton.jit
def _soft_lookup_bwd_codebook_kernel(
    logits_ptr,
    lse_ptr,
    grad_out_ptr,
    partials_ptr,
    n_rows,
    n_codes,
    dim,
    rows_per_chunk,
    tau,
    stride_lr,
    stride_lk,
    stride_gr,
    stride_gd,
    stride_pc,
    stride_pk,
    stride_pd,
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_chunk = tl.program_id(0)
    pid_d = tl.program_id(1)
    codes = tl.arange(0, BLOCK_K)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    code_ok = codes < n_codes
    col_ok = cols < dim

    grad_codebook = tl.zeros((BLOCK_K, BLOCK_D), dtype=tl.float32)
    chunk_start = pid_chunk * rows_per_chunk
    chunk_end = tl.minimum(chunk_start + rows_per_chunk, n_rows)
    for row_start in range(chunk_start, chunk_end, BLOCK_M):
        rows = row_start + tl.arange(0, BLOCK_M)
        row_ok = rows < chunk_end
        probs = _recompute_probabilities(
            logits_ptr, lse_ptr, rows, codes, row_ok, code_ok, tau, stride_lr, stride_lk
        )
        grad_out = tl.load(
            grad_out_ptr + rows.to(tl.int64)[:, None] * stride_gr + cols[None, :] * stride_gd,
            mask=row_ok[:, None] & col_ok[None, :],
            other=0.0,
        )
        grad_codebook = tl.dot(
            tl.trans(_to_dot_operand(probs, DOT_DTYPE, UPCAST_DOT)),
            _to_dot_operand(grad_out, DOT_DTYPE, UPCAST_DOT),
            acc=grad_codebook,
            input_precision=DOT_PRECISION,
        )

    partial_ptrs = (
        partials_ptr + pid_chunk * stride_pc + codes[:, None] * stride_pk + cols[None, :] * stride_pd
    )
    tl.store(partial_ptrs, grad_codebook, mask=code_ok[:, None] & col_ok[None, :])


# ----------------------------------------------------------------------------------------------------
# Launch configuration and host-side wrappers
# ----------------------------------------------------------------------------------------------------


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1  # interpreter: programs run one after another, so fewer and larger blocks are faster


def _launch_config(logits: torch.Tensor, codebook: torch.Tensor) -> dict:
    """Block sizes, warps, stages and dot settings for these inputs (the row block is chosen apart).

    Chosen so that every kernel compiles for sm_90 within shared memory and with at most a few hundred
    bytes of register spills (ptxas -v; see SOFT_LOOKUP.md); not yet timed on a GPU.
    """
    n_codes, dim = codebook.shape
    dot_dtype = torch.promote_types(logits.dtype, codebook.dtype)
    wide = dot_dtype == torch.float32
    block_k = max(16, triton.next_power_of_2(n_codes))
    # Codebook tiles of 32 KiB: 128×128 at 16 bits, 128×64 at 32 bits (fewer columns for larger K).
    max_tile = 8192 if wide else 16384
    block_d = max(16, min(64 if wide else 128, triton.next_power_of_2(dim), max_tile // block_k))
    if wide:
        # 3×TF32 on NVIDIA tensor cores: fp32-level accuracy (an IEEE fp32 dot lowers to FMAs that
        # spill badly); IEEE where 3×TF32 does not exist (ROCm, the interpreter).
        precision = "ieee" if torch.version.hip or logits.device.type == "cpu" else "tf32x3"
    else:
        precision = None  # 16-bit operands: the target's default tensor-core dot
    return {
        "DOT_DTYPE": _TORCH_TO_TRITON_DTYPE[dot_dtype],
        "DOT_PRECISION": precision,
        "UPCAST_DOT": interpreting() and dot_dtype == torch.bfloat16,
        "BLOCK_K": block_k,
        "BLOCK_D": block_d,
        "num_stages": 2 if wide else 3,  # fp32 tiles in three stages overflow shared memory
        # 8 warps for every block size: with 4, ptxas spills at BLOCK_M = 16 and 32.
        "num_warps": 8,
    }


def _row_block(n_rows: int, block_k: int, programs_per_row_block: int, num_sms: int) -> int:
    """Rows per program: 64, halved (down to tl.dot's minimum of 16) while the grid would leave SMs idle."""
    block_m = max(16, min(64, 8192 // block_k, triton.next_power_of_2(max(n_rows, 1))))
    while block_m > 16 and triton.cdiv(n_rows, block_m) * programs_per_row_block < num_sms:
        block_m //= 2
    return block_m


def _check_launchable(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Raise if the kernels cannot run on this tensor's device; else a context selecting that device."""
    if tensor.device.type == "cpu" and not interpreting():
        raise RuntimeError(
            "the Triton soft-lookup kernels run on CPU tensors only under the Triton interpreter, and "
            "they were built for the GPU: set TRITON_INTERPRET=1 before ait_tokenizer's Triton path is "
            f"first used (TRITON_INTERPRET is {os.environ.get('TRITON_INTERPRET')!r} now)"
        )
    # Triton launches on the current CUDA device, which need not be the tensors' one.
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def forward(logits: torch.Tensor, codebook: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Y (M, D) in the logits dtype and the fp32 row log-sum-exp (M,) of τ·ℓ for ℓ (M, K), E (K, D)."""
    device_context = _check_launchable(logits)
    n_rows, n_codes = logits.shape
    dim = codebook.shape[1]
    out = torch.empty((n_rows, dim), dtype=logits.dtype, device=logits.device)
    lse = torch.empty((n_rows,), dtype=torch.float32, device=logits.device)
    if n_rows == 0:
        return out, lse
    config = _launch_config(logits, codebook)
    block_m = _row_block(n_rows, config["BLOCK_K"], 1, _num_sms(logits.device))
    with device_context:
        _soft_lookup_fwd_kernel[(triton.cdiv(n_rows, block_m),)](
            logits,
            codebook,
            out,
            lse,
            n_rows,
            n_codes,
            dim,
            tau,
            *logits.stride(),
            *codebook.stride(),
            *out.stride(),
            **config,
            BLOCK_M=block_m,
        )
    return out, lse


def backward_logits(
    logits: torch.Tensor, codebook: torch.Tensor, lse: torch.Tensor, grad_out: torch.Tensor, tau: float
) -> torch.Tensor:
    """dℓ (M, K) in the logits dtype."""
    device_context = _check_launchable(logits)
    n_rows, n_codes = logits.shape
    dim = codebook.shape[1]
    grad_logits = torch.empty((n_rows, n_codes), dtype=logits.dtype, device=logits.device)
    if n_rows == 0:
        return grad_logits
    config = _launch_config(logits, codebook)
    block_m = _row_block(n_rows, config["BLOCK_K"], 1, _num_sms(logits.device))
    with device_context:
        _soft_lookup_bwd_logits_kernel[(triton.cdiv(n_rows, block_m),)](
            logits,
            codebook,
            lse,
            grad_out,
            grad_logits,
            n_rows,
            n_codes,
            dim,
            tau,
            *logits.stride(),
            *codebook.stride(),
            *grad_out.stride(),
            *grad_logits.stride(),
            **config,
            BLOCK_M=block_m,
        )
    return grad_logits


def backward_codebook(
    logits: torch.Tensor,
    codebook: torch.Tensor,
    lse: torch.Tensor,
    grad_out: torch.Tensor,
    tau: float,
    rows_per_chunk: int | None = None,
) -> torch.Tensor:
    """dE (K, D) in the codebook dtype, as a sum of fp32 per-chunk partials.

    ``rows_per_chunk`` overrides the heuristic (rounded up to the row block); tests use it to cover
    the multi-chunk reduction on small inputs.
    """
    device_context = _check_launchable(logits)
    n_rows, n_codes = logits.shape
    dim = codebook.shape[1]
    if n_rows == 0:
        return torch.zeros_like(codebook)
    config = _launch_config(logits, codebook)
    d_tiles = triton.cdiv(dim, config["BLOCK_D"])
    num_sms = _num_sms(logits.device)
    block_m = _row_block(n_rows, config["BLOCK_K"], 1, num_sms)
    if rows_per_chunk is None:
        # About two programs per SM, but never chunks so short that the partials outweigh dY.
        n_chunks = max(1, min(triton.cdiv(n_rows, _MIN_ROWS_PER_CHUNK), 2 * num_sms // d_tiles))
        rows_per_chunk = triton.cdiv(n_rows, n_chunks)
    rows_per_chunk = triton.cdiv(rows_per_chunk, block_m) * block_m
    n_chunks = triton.cdiv(n_rows, rows_per_chunk)
    partials = torch.empty((n_chunks, n_codes, dim), dtype=torch.float32, device=logits.device)
    with device_context:
        _soft_lookup_bwd_codebook_kernel[(n_chunks, d_tiles)](
            logits,
            lse,
            grad_out,
            partials,
            n_rows,
            n_codes,
            dim,
            rows_per_chunk,
            tau,
            *logits.stride(),
            *grad_out.stride(),
            *partials.stride(),
            **config,
            BLOCK_M=block_m,
        )
    grad_codebook = partials[0] if n_chunks == 1 else partials.sum(dim=0)
    return grad_codebook.to(codebook.dtype)
