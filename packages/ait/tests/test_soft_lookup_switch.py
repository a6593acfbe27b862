"""`model.soft_lookup` and AIT_SOFT_LOOKUP choose the soft lookup's implementation (Triton kernel or torch).

The tests run the Triton kernel on the CPU under the interpreter (TRITON_INTERPRET=1, as the test sessions
set it), where "auto" would pick torch: naming "triton" by key or environment variable must reach the kernel,
naming "torch" must not, and both give the same training loss.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

from ait.config import ConfigError, create_config
from ait.data import build_task_streams
from ait.model import build_task_solver

# the module (the package exports a function of the same name)
soft_lookup_module = importlib.import_module("ait_tokenizer.soft_lookup")

needs_interpreter = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" or not soft_lookup_module.triton_available(),
    reason="the Triton kernel runs on the CPU only under TRITON_INTERPRET=1 with triton installed",
)


@pytest.fixture
def kernel_calls(monkeypatch):
    calls = []
    original = soft_lookup_module._SoftLookupFunction.apply

    def counting(*args):
        calls.append(args[0].shape)
        return original(*args)

    monkeypatch.setattr(soft_lookup_module._SoftLookupFunction, "apply", counting)
    return calls


def _loss(cfg) -> torch.Tensor:
    torch.manual_seed(0)
    solver = build_task_solver(cfg).train()
    batch = build_task_streams(cfg).next_batch()
    return solver.training_step(batch, torch.Generator().manual_seed(1))["loss"].detach()


@needs_interpreter
def test_the_config_key_picks_the_soft_lookup_the_solvers_tokenizers_use(kernel_calls, monkeypatch):
    monkeypatch.delenv(soft_lookup_module.BACKEND_ENV, raising=False)
    options = {"data.synthetic_train_length": 4}
    torch_cfg = create_config("cpu_joint_tiny", {**options, "model.soft_lookup": "torch"})
    assert {t.soft_lookup_backend for t in build_task_solver(torch_cfg).tokenizers()} == {"torch"}
    by_torch = _loss(torch_cfg)
    assert kernel_calls == []
    by_kernel = _loss(create_config("cpu_joint_tiny", {**options, "model.soft_lookup": "triton"}))
    assert len(kernel_calls) == 2  # the depth and the mask auxiliary losses
    torch.testing.assert_close(by_kernel, by_torch, rtol=1e-5, atol=1e-6)


@needs_interpreter
def test_the_environment_variable_overrides_auto_only(kernel_calls, monkeypatch):
    logits, codebook = torch.randn(3, 8), torch.randn(8, 4)
    monkeypatch.setenv("AIT_SOFT_LOOKUP", "triton")
    soft_lookup_module.soft_lookup(logits, codebook, backend="auto")
    assert len(kernel_calls) == 1  # on CPU tensors "auto" alone would be torch
    soft_lookup_module.soft_lookup(logits, codebook, backend="torch")  # an explicit choice wins
    assert len(kernel_calls) == 1
    monkeypatch.setenv("AIT_SOFT_LOOKUP", "torch")
    cfg = create_config("cpu_joint_tiny", {"data.synthetic_train_length": 4, "model.soft_lookup": "auto"})
    _loss(cfg)
    assert len(kernel_calls) == 1


def test_a_bad_soft_lookup_value_names_the_key_or_the_variable(monkeypatch):
    with pytest.raises(
        ConfigError, match=r"model.soft_lookup: expected one of \('auto', 'triton', 'torch'\)"
    ):
        create_config("cpu_depth_tiny", ["model.soft_lookup=cuda"])
    monkeypatch.setenv("AIT_SOFT_LOOKUP", "fast")
    with pytest.raises(ValueError, match=r"AIT_SOFT_LOOKUP must be one of \('auto', 'triton', 'torch'\)"):
        soft_lookup_module.soft_lookup(torch.randn(2, 4), torch.randn(4, 3))
