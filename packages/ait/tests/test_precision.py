"""Mixed precision (`optim.amp`): modes, refusals before anything is built, and the solver's fp32 islands.

bf16 autocast runs on the CPU, so these tests exercise the same autocast regions a GPU run has: under it the
backbone computes in bf16 while the soft-token decode of the auxiliary losses stays fp32 (the original's
`force_fp32` on `loss2`), bit-identical to an fp32 run given the same logits.
"""

from __future__ import annotations

import pytest
import torch

from ait.config import ConfigError, create_config
from ait.data import build_task_streams
from ait.engine import Trainer
from ait.engine.distributed import DistInfo
from ait.engine.precision import AMP_MODES, resolve_amp
from ait.model import build_task_solver


def test_amp_modes_resolve_to_autocast_dtypes_and_a_scaler_for_fp16_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert AMP_MODES == ("fp16", "bf16", "none")
    bf16 = resolve_amp("bf16", cpu)
    assert (bf16.dtype, bf16.scaler, bf16.enabled) == (torch.bfloat16, False, True)
    # fp16 autocast is a CUDA recipe: the paper configs still run on a CPU, in fp32
    assert resolve_amp("fp16", cpu).dtype is None and not resolve_amp("fp16", cpu).scaler
    assert resolve_amp("none", cpu).dtype is None
    fp16 = resolve_amp("fp16", cuda)  # no CUDA needed to plan it
    assert (fp16.dtype, fp16.scaler) == (torch.float16, True)
    # configs written when amp was a flag
    assert resolve_amp(True, cuda).mode == "fp16" and resolve_amp(False, cuda).mode == "none"


@pytest.mark.parametrize("value", ["fp8", "float16", "maybe"])
def test_an_unknown_amp_mode_names_the_key_and_the_modes(value):
    with pytest.raises(ConfigError, match=r"optim.amp: expected one of \('fp16', 'bf16', 'none'\)"):
        create_config("cpu_depth_tiny", [f"optim.amp={value}"])


def test_bf16_on_a_device_without_it_fails_before_data_or_model(monkeypatch, tmp_path):
    from ait.engine import precision

    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    cfg = create_config(
        "cpu_depth_tiny",
        {"optim.amp": "bf16", "work_dir": str(tmp_path / "run"), "data.dataset": "nyu"},  # no NYU root
    )

    def no_model(cfg):
        raise AssertionError("the model was built")

    with pytest.raises(ConfigError, match=r"optim.amp: 'bf16' is not supported on .*'fp16' or 'none'"):
        Trainer(cfg, model_factory=no_model, dist_info=DistInfo(device=torch.device("cpu")), log=print)


def _solver_and_batch():
    cfg = create_config("cpu_joint_tiny")
    torch.manual_seed(0)
    solver = build_task_solver(cfg).train()
    return solver, build_task_streams(cfg).next_batch()


def test_soft_token_decode_of_the_aux_losses_stays_fp32_under_autocast():
    solver, batch = _solver_and_batch()
    vocab = solver.vocab.size
    depth_head, instance_head = solver.depth_head, solver.instance_head
    with torch.no_grad():
        # the untrained depth decoder outputs ~0, which the SILog clips to 1e-3 in any precision: shift it
        depth_head.tokenizer.decoder[-1].bias.fill_(2.0)

    depth = batch["depth"]["depth"]
    target_ids = depth_head.targets(depth)
    depth_logits = torch.randn(*target_ids.shape, vocab, generator=torch.Generator().manual_seed(1))
    targets = instance_head.build_targets(batch["insseg"], torch.Generator().manual_seed(2))
    mask_logits = torch.randn(*targets["target_ids"].shape, vocab, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        fp32 = depth_head.loss(depth_logits, target_ids, depth), instance_head.loss(mask_logits, targets)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = depth_head.loss(depth_logits, target_ids, depth), instance_head.loss(mask_logits, targets)
    assert fp32[0]["silog"] > 0 and fp32[1]["aux_sum"] > 0
    for key, ref, got in (("silog", fp32[0], mixed[0]), ("aux_sum", fp32[1], mixed[1])):
        assert got[key].dtype == torch.float32
        torch.testing.assert_close(got[key], ref[key], rtol=0, atol=0, msg=key)


def test_a_bf16_training_step_on_the_cpu_runs_the_backbone_in_bf16(tmp_path):
    cfg = create_config(
        "cpu_joint_tiny",
        {"optim.amp": "bf16", "optim.max_iters": 1, "work_dir": str(tmp_path), "checkpoint_interval": 0},
    )
    messages: list[str] = []
    trainer = Trainer(cfg, evaluate=False, log=messages.append)
    dtypes = []
    hook = trainer.model.backbone.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    result = trainer.train()
    hook.remove()
    assert dtypes == [torch.bfloat16, torch.bfloat16]  # depth and instance images
    assert trainer.scaler.is_enabled() is False  # bf16: no loss scaling
    assert torch.isfinite(torch.tensor(result.last_metrics["loss"]))
    assert any("precision bf16 autocast," in m for m in messages)
