"""Mixed precision of a training run: `optim.amp` = "fp16" | "bf16" | "none".

- ``fp16``: autocast to float16 with dynamic loss scaling (GradScaler), the original's ``fp16 =
  dict(loss_scale='dynamic')``. CUDA only: on a CPU device the run stays in fp32 (the paper configs ask for
  fp16 and still run as-is on a CPU).
- ``bf16``: autocast to bfloat16 without a scaler (its exponent range is fp32's, so gradients do not
  underflow). Also on the CPU, where tests exercise the fp32 islands of the solver with it.
- ``none``: fp32.

Whatever the mode, the solver keeps its transformer (neck + decoder), the tokenizer encoding and the
soft-token decode of the auxiliary losses in fp32, as the original does; only the backbone runs in the
lower precision. `true` / `false` (configs written before the modes existed) mean fp16 / none.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ait.config.overrides import ConfigError
from ait.config.validation import AMP_MODES

__all__ = ["AMP_MODES", "AmpPlan", "amp_mode", "bf16_supported", "resolve_amp"]

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def amp_mode(value: str | bool) -> str:
    """The mode a config value names (booleans: the pre-mode spelling); ConfigError for anything else."""
    if isinstance(value, bool):
        return "fp16" if value else "none"
    if value not in AMP_MODES:
        raise ConfigError(
            f"optim.amp: expected one of {AMP_MODES} (or true/false for fp16/none), got {value!r}"
        )
    return value


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs on `device` (every CPU; CUDA from compute capability 8.0, Ampere)."""
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return False


@dataclass(frozen=True)
class AmpPlan:
    """What a run does: `mode` requested, `dtype` autocast uses (None: fp32), whether a GradScaler scales."""

    mode: str
    device_type: str
    dtype: torch.dtype | None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def scaler(self) -> bool:
        # bf16 has fp32's exponent range: no underflow to guard against
        return self.dtype == torch.float16

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        if self.dtype is None:
            return "fp32" if self.mode == "none" else f"fp32 ({self.mode} needs CUDA)"
        return f"{self.mode} autocast" + (" + loss scaling" if self.scaler else "")


def resolve_amp(value: str | bool, device: torch.device) -> AmpPlan:
    """The plan for `optim.amp` on `device`; ConfigError for an unknown mode or bf16 the device cannot run."""
    mode = amp_mode(value)
    if mode == "none" or (mode == "fp16" and device.type != "cuda"):
        return AmpPlan(mode, device.type, None)
    if mode == "bf16" and not bf16_supported(device):
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
        raise ConfigError(
            f"optim.amp: 'bf16' is not supported on {name} (bf16 needs an Ampere or newer GPU, or the CPU); "
            f"expected one of {AMP_MODES} this device runs: 'fp16' or 'none'"
        )
    return AmpPlan(mode, device.type, _DTYPES[mode])
