"""An exponential moving average of a model's weights (`optim.ema_decay`), the weights a run delivers.

After every optimiser step each trainable parameter and each floating-point buffer (normalisation
statistics) moves the average towards itself: avg <- avg + (1 - d_t) (w - avg), with
d_t = min(decay, (1 + t) / (10 + t)) at step t, so the first steps are not averaged with the random start
(the average then spans about (10 + t) / 9 steps: 0.998 reaches its own horizon of 500 steps only after
about 4,500). Frozen parameters (the tokenizers) never change and are left out.
The trainer evaluates and delivers the average; checkpoints carry it beside the raw weights, so a resumed
run continues both exactly. The original trains without one: `optim.ema_decay=0` (the default) is off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def warmed_decay(decay: float, step: int) -> float:
    """The decay used after optimiser step `step` (1-based): `decay`, lowered while the run is young."""
    return min(decay, (1 + step) / (10 + step))


class WeightEma:
    """The moving average of `model`'s trainable parameters and floating-point buffers."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"WeightEma: decay must be in (0, 1), got {decay}")
        self.decay = decay
        state = model.state_dict()
        frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
        self.names = [
            name for name, tensor in state.items() if tensor.is_floating_point() and name not in frozen
        ]
        self._live = [state[name] for name in self.names]  # share storage with the model's tensors
        self.average = [tensor.detach().clone() for tensor in self._live]

    @torch.no_grad()
    def restart(self) -> None:
        """Start the average again from the model's weights (after they were changed outside training)."""
        for average, live in zip(self.average, self._live):
            average.copy_(live)

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards the model's current weights after optimiser step `step`."""
        weight = 1.0 - warmed_decay(self.decay, step)
        torch._foreach_lerp_(self.average, [tensor.detach() for tensor in self._live], weight)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """{state-dict name: averaged tensor} for every averaged entry of the model's state dict."""
        return {name: tensor.detach().clone() for name, tensor in zip(self.names, self.average)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [name for name in self.names if name not in state]
        if missing:
            raise ValueError(f"the stored weight average lacks {len(missing)} tensor(s), e.g. {missing[0]}")
        for name, tensor in zip(self.names, self.average):
            tensor.copy_(state[name])

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Put the average into the model for good (the end of training)."""
        for live, average in zip(self._live, self.average):
            live.copy_(average)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the average inside the block and its own weights again after it."""
        with torch.no_grad():
            raw = [tensor.detach().clone() for tensor in self._live]
            self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                for live, saved in zip(self._live, raw):
                    live.copy_(saved)


def delivered_weights(state: dict) -> dict[str, torch.Tensor]:
    """A solver checkpoint's weights for use (inference, `load_from`): the average where the run kept one."""
    weights = state["model"]
    average = state.get("ema")
    if isinstance(average, dict) and average:
        return {**weights, **average}
    return weights
