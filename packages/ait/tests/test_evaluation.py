"""Depth test-time augmentation, the predict-the-mean baseline and the results table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ait.config.schema import EvalConfig
from ait.evaluation import format_results_table, mean_depth_baseline, predict_depth_tta, window_positions
from ait_eval import DepthMetrics


def test_window_positions_follow_the_protocol():
    assert window_positions(640, 480) == [0, 160]  # NYU: x = 0 and x = W - 480
    assert window_positions(480, 480) == [0]
    assert window_positions(640, 480, sliding_window=False) == [0]


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("sliding", [True, False])
def test_tta_of_a_constant_depth_model_is_that_constant(flip, sliding):
    def constant(x):
        return torch.full((x.shape[0], 1, *x.shape[-2:]), 2.5)

    images = torch.rand(2, 3, 8, 20)
    out = predict_depth_tta(constant, images, window_width=12, sliding_window=sliding, flip=flip)
    assert out.shape == (2, 1, 8, 20)
    torch.testing.assert_close(out, torch.full_like(out, 2.5))


def test_tta_flips_back_and_averages_overlaps():
    # A "model" that returns its input's first channel is equivariant to flips and crops: TTA must return
    # exactly the full image channel, which fails if a flipped prediction is not flipped back or if an
    # overlap is summed instead of averaged.
    images = torch.rand(2, 3, 6, 10)
    calls = []

    def first_channel(x):
        calls.append(tuple(x.shape))
        return x[:, :1] * 1.0

    out = predict_depth_tta(first_channel, images, window_width=7)
    torch.testing.assert_close(out, images[:, :1])
    assert calls == [(4, 3, 6, 7), (4, 3, 6, 7)]  # two windows, each batched with its mirror


def test_tta_overlap_weights_by_count():
    # left window predicts 1, right window predicts 3: the overlap columns average to 2.
    def by_position(x):
        value = 1.0 if x[0, 0, 0, 0] == 0 else 3.0
        return torch.full((x.shape[0], 1, *x.shape[-2:]), value)

    images = torch.zeros(1, 3, 2, 10)
    images[..., 6:] = 1.0  # the right window (x = 4..9) starts at a 0 pixel, so mark it by its content
    images[..., 4] = 5.0
    out = predict_depth_tta(by_position, images, window_width=6, flip=False)
    np.testing.assert_allclose(out[0, 0, 0].numpy(), [1, 1, 1, 1, 2, 2, 3, 3, 3, 3])


def test_mean_depth_baseline_from_a_loader_and_a_value():
    gt = torch.tensor([[[[1.0, 3.0], [0.0, 2.0]]]])  # valid mean = 2
    loader = [{"depth": gt}]
    cfg = EvalConfig(eigen_crop=False)
    result = mean_depth_baseline(loader, loader, cfg)
    assert result["mean_depth"] == pytest.approx(2.0)
    reference = DepthMetrics(eigen_crop=False)
    reference.update(np.full((1, 2, 2), 2.0, dtype=np.float32), gt[:, 0].numpy())
    assert result["rmse"] == pytest.approx(reference.compute()["rmse"])
    assert result["rmse"] == pytest.approx(math.sqrt(2 / 3))
    assert mean_depth_baseline(2.0, loader, cfg)["rmse"] == pytest.approx(result["rmse"])
    with pytest.raises(ValueError, match="no valid depth"):
        mean_depth_baseline([{"depth": torch.zeros(1, 1, 2, 2)}], loader, cfg)


def test_results_table_in_the_original_format():
    depth = {"d1": 0.934, "d2": 0.991, "d3": 0.998, "abs_rel": 0.087, "rmse": 0.305, "log10": 0.037}
    coco = {"bbox": {"AP": 0.433}, "segm": {"AP": 0.342}}
    table = format_results_table(depth, coco, baseline={**depth, "rmse": 1.2})
    lines = table.splitlines()
    assert lines[0] == "| Model | D1 | D2 | D3 | Abs Rel | RMSE | Log10 | Box AP | Mask AP |"
    assert lines[2] == "| AiT | 0.934 | 0.991 | 0.998 | 0.087 | 0.305 | 0.037 | 43.3 | 34.2 |"
    assert (
        lines[3].startswith("| predict-the-mean |")
        and "| 1.200 |" in lines[3]
        and lines[3].endswith("| - | - |")
    )
    assert format_results_table(None, coco).splitlines()[2] == "| AiT | - | - | - | - | - | - | 43.3 | 34.2 |"


def test_results_table_with_ap50_columns_and_an_oracle_row():
    depth = {"d1": 0.934, "d2": 0.991, "d3": 0.998, "abs_rel": 0.087, "rmse": 0.305, "log10": 0.037}
    coco = {"bbox": {"AP": 0.433, "AP50": 0.621}, "segm": {"AP": 0.342, "AP50": 0.559}}
    oracle = ("tokenizer oracle", {**depth, "rmse": 0.1}, {"segm": {"AP": 0.9, "AP50": 0.99}})
    lines = format_results_table(depth, coco, extra_rows=[oracle], ap50=True).splitlines()
    assert lines[0].endswith("| Box AP | Mask AP | Box AP50 | Mask AP50 |")
    assert lines[1].count("|") == lines[0].count("|")
    assert lines[2].endswith("| 43.3 | 34.2 | 62.1 | 55.9 |")
    assert lines[3].startswith("| tokenizer oracle |") and lines[3].endswith(
        "| 0.100 | 0.037 | - | 90.0 | - | 99.0 |"
    )
