"""The tokenizer oracle: the evaluation's data and metrics applied to decode(encode(ground truth))."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ait.config import create_config
from ait.data import build_eval_loader, coco_ground_truth
from ait.oracle import depth_tokenizer_oracle, mask_tokenizer_oracle, reconstruct_depth
from ait_eval import DepthMetrics
from ait_tokenizer import create_tokenizer


@pytest.fixture(scope="module")
def cfg():
    return create_config(
        "cpu_joint_tiny", {"data.synthetic_val_length": 4, "data.eval_batch": 2, "model.max_objects": 6}
    ).validate()


class LosslessMaskTokenizer(torch.nn.Module):
    """A stand-in whose "tokens" are the crops themselves: the oracle then measures crop -> paste alone."""

    def __init__(self):
        super().__init__()
        self.config = create_tokenizer("mask-small").config
        self.codebook = torch.zeros(1, 1)

    def encode(self, x):
        return x

    def decode(self, ids):
        return ids


def test_depth_oracle_scores_the_reconstruction_with_the_solver_metric(cfg):
    torch.manual_seed(0)
    tokenizer = create_tokenizer("depth-small").eval()
    loader = build_eval_loader(cfg, "depth")
    result = depth_tokenizer_oracle(tokenizer, loader, cfg.eval)

    by_hand = DepthMetrics(eigen_crop=False)
    squared, pixels = 0.0, 0
    for batch in loader:
        with torch.no_grad():
            recon = tokenizer.decode(tokenizer.encode(batch["depth"]))
        by_hand.update(recon[:, 0].numpy(), batch["depth"][:, 0].numpy())
        squared += float((recon.double() - batch["depth_complete"].double()).pow(2).sum())
        pixels += recon.numel()
    expected = by_hand.compute(mode="macro")
    assert result["rmse"] == pytest.approx(expected["rmse"], rel=1e-9)
    assert result["d1"] == pytest.approx(expected["d1"], rel=1e-9)
    assert result["rmse_complete"] == pytest.approx(math.sqrt(squared / pixels), rel=1e-9)
    assert result["num_images"] == 4


def test_reconstruct_depth_pads_to_the_downsample_and_crops_back():
    tokenizer = create_tokenizer("depth-small").eval()
    depth = torch.rand(2, 1, 60, 70) * 5
    recon = reconstruct_depth(tokenizer, depth)
    assert recon.shape == depth.shape
    padded = torch.nn.functional.pad(depth, (0, 2, 0, 4))
    assert torch.equal(recon, tokenizer.decode(tokenizer.encode(padded))[..., :60, :70])
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        reconstruct_depth(tokenizer, depth[:, 0])


def test_mask_oracle_of_a_lossless_tokenizer_finds_every_instance(cfg):
    """Cropping to the true box and pasting back must give back the true masks (up to 64x64 resampling)."""
    loader = build_eval_loader(cfg, "insseg")
    result = mask_tokenizer_oracle(LosslessMaskTokenizer(), loader, coco_ground_truth(cfg))
    assert result["AP50"] > 0.95
    assert result["AP"] > 0.8


def test_mask_oracle_of_an_untrained_tokenizer_is_poor(cfg):
    torch.manual_seed(0)
    tokenizer = create_tokenizer("mask-small").eval()
    loader = build_eval_loader(cfg, "insseg")
    result = mask_tokenizer_oracle(tokenizer, loader, coco_ground_truth(cfg))
    assert np.isfinite(result["AP"]) and result["AP"] < 0.5
