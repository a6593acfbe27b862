"""The weight average (`optim.ema_decay`, `ait.engine.ema`): its arithmetic against a float64 reference.

Its place in the trainer (evaluated and delivered, carried by checkpoints, resumed exactly) is tested in
test_engine.py with the engine's stand-in model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ait.config import ConfigError, create_config
from ait.engine.ema import WeightEma, warmed_decay


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)  # running statistics: floating-point buffers are averaged too
        self.frozen = nn.Linear(2, 2).requires_grad_(False)


@settings(max_examples=25, deadline=None)
@given(
    decay=st.floats(0.5, 0.999),
    steps=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_average_matches_a_float64_reference(decay, steps, seed):
    torch.manual_seed(seed)
    model = TwoLayer()
    ema = WeightEma(model, decay)
    names = [
        k for k, v in model.state_dict().items() if v.is_floating_point() and not k.startswith("frozen.")
    ]
    reference = {k: model.state_dict()[k].double().clone() for k in names}
    for step in range(1, steps + 1):
        with torch.no_grad():  # an optimiser step of sorts: every trainable tensor and statistic moves
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(torch.randn_like(param))
            model.norm.running_mean.add_(torch.randn(2))
        d = min(decay, (1 + step) / (10 + step))
        for k in names:
            reference[k] = d * reference[k] + (1 - d) * model.state_dict()[k].double()
        ema.update(step)
    averaged = ema.state_dict()
    assert set(averaged) == set(names)
    # an integer counter is not averaged, nor a frozen parameter (it never changes)
    assert "norm.num_batches_tracked" not in averaged and "frozen.weight" not in averaged
    assert {"norm.running_mean", "norm.running_var", "linear.weight"} <= set(averaged)
    for k in names:
        torch.testing.assert_close(averaged[k].double(), reference[k], rtol=1e-5, atol=1e-5)


def test_warmed_decay_starts_low_and_reaches_the_decay():
    assert warmed_decay(0.999, 1) == pytest.approx(2 / 11)
    assert warmed_decay(0.9, 1000) == 0.9
    values = [warmed_decay(0.999, step) for step in range(1, 10_000, 50)]
    assert values == sorted(values) and values[-1] == 0.999


def test_applied_swaps_the_average_in_and_back():
    torch.manual_seed(0)
    model = TwoLayer()
    ema = WeightEma(model, 0.9)
    raw = _weights(model)
    with torch.no_grad():
        model.linear.weight.add_(1.0)
    ema.update(1)
    moved = _weights(model)
    with ema.applied():
        assert torch.equal(model.linear.weight, ema.state_dict()["linear.weight"])
        assert not torch.equal(model.linear.weight, moved["linear.weight"])
    for key, value in moved.items():
        assert torch.equal(_weights(model)[key], value)
    assert not torch.equal(raw["linear.weight"], moved["linear.weight"])


def test_decay_outside_its_range_is_refused():
    with pytest.raises(ValueError, match="decay"):
        WeightEma(TwoLayer(), 1.0)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match=r"optim\.ema_decay"):
            create_config("cpu_joint_demo", {"optim.ema_decay": bad})
