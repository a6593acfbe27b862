"""The fused soft-lookup kernels compile for an H100 (sm_90) without a GPU.

The interpreter tests check the arithmetic; this checks what only the real compiler sees: that the
kernels pass Triton's GPU front end and ptxas with the launch configuration the host code picks for
the paper's shapes (K = 128, D = 512), and fit in an H100's 227 KiB of shared memory per block.
It compiles in a subprocess because this test session runs with TRITON_INTERPRET=1, under which the
kernels are built as interpreted functions.  The same subprocess checks the error for setting
TRITON_INTERPRET only after the kernels were built for the GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_COMPILE_FOR_SM90 = r"""
import json, sys
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from ait_tokenizer import _triton_soft_lookup as kernels

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
assert not kernels.interpreting()


def compile_all(logits_type, codebook_type, block_m):
    # Meta tensors: the configuration a CUDA launch gets, without a CUDA device.
    logits = torch.empty(2, 128, dtype=DTYPES[logits_type], device="meta")
    codebook = torch.empty(128, 512, dtype=DTYPES[codebook_type], device="meta")
    config = kernels._launch_config(logits, codebook)
    options = {"num_warps": config.pop("num_warps"), "num_stages": config.pop("num_stages")}
    constexprs = {**config, "BLOCK_M": block_m}
    pointer_types = {"logits_ptr": logits_type, "codebook_ptr": codebook_type, "out_ptr": logits_type,
                     "grad_out_ptr": logits_type, "grad_logits_ptr": logits_type}
    report = {"precision": config["DOT_PRECISION"], "block_d": config["BLOCK_D"], "shared": {}}
    for kernel in (kernels._soft_lookup_fwd_kernel, kernels._soft_lookup_bwd_logits_kernel,
                   kernels._soft_lookup_bwd_codebook_kernel):
        report["shared"][kernel.__name__] = compile_one(kernel, constexprs, pointer_types, options)
    return report


def compile_one(kernel, constexprs, pointer_types, options):
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*" + pointer_types.get(name, "fp32")
        elif name == "tau":
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    source = ASTSource(fn=kernel, signature=signature,
                       constexprs={n: v for n, v in constexprs.items() if n in kernel.arg_names})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    assert "cubin" in compiled.asm
    return compiled.metadata.shared


reports = {f"{l}/{c}/{m}": compile_all(l, c, int(m)) for l, c, m in json.loads(sys.argv[1])}

# Kernels built for the GPU cannot take CPU tensors even if TRITON_INTERPRET is set afterwards.
import os
from ait_tokenizer import soft_lookup
os.environ["TRITON_INTERPRET"] = "1"
try:
    soft_lookup(torch.zeros(2, 8), torch.zeros(8, 4), backend="triton")
except RuntimeError as error:
    reports["late_interpreter_error"] = str(error)
print(json.dumps(reports))
"""


# (logits dtype, codebook dtype, BLOCK_M) -> expected dot precision and BLOCK_D: the training dtype
# and fp32, whose 3×TF32 dots need the most shared memory.
CASES = {("bf16", "bf16", 64): (None, 128), ("fp32", "fp32", 64): ("tf32x3", 64)}


@pytest.mark.slow
def test_kernels_compile_for_sm90_within_shared_memory():
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    cases = json.dumps(list(CASES))
    result = subprocess.run(
        [sys.executable, "-c", _COMPILE_FOR_SM90, cases], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = json.loads(result.stdout.strip().splitlines()[-1])
    assert "set TRITON_INTERPRET=1 before" in reports.pop("late_interpreter_error")
    assert len(reports) == len(CASES)
    for (logits_type, codebook_type, block_m), (precision, block_d) in CASES.items():
        report = reports[f"{logits_type}/{codebook_type}/{block_m}"]
        assert (report["precision"], report["block_d"]) == (precision, block_d)
        assert set(report["shared"]) == {
            "_soft_lookup_fwd_kernel",
            "_soft_lookup_bwd_logits_kernel",
            "_soft_lookup_bwd_codebook_kernel",
        }
        for kernel, shared_bytes in report["shared"].items():
            assert 0 < shared_bytes <= 227 * 1024, (
                f"{kernel} ({logits_type}) needs {shared_bytes} B of shared memory"
            )
