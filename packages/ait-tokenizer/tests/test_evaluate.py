import json
import math
from pathlib import Path

import pytest
import torch

from ait_tokenizer import create_tokenizer, save_tokenizer
from ait_tokenizer.evaluate import evaluate_nyu, evaluate_synthetic, main

DATA = Path(__file__).resolve().parents[3] / "fixtures"
NYU = DATA / "nyu_sample"
TINYCOCO = DATA / "coco_sample" / "annotations" / "instances_train2017_tinycoco6.json"


def _require(path: Path) -> Path:
    """A committed real-data fixture: missing means a broken clone, a failure (never a skip)."""
    if not path.exists():
        pytest.fail(f"real data fixture missing at {path} (fixtures/ is part of the repository)")
    return path


def test_synthetic_scores_against_the_complete_depth():
    torch.manual_seed(0)
    scores = evaluate_synthetic(create_tokenizer("depth-small"), maps=3)
    assert scores["maps"] == 3 and 0 < scores["hole_fraction"] < 1
    for key in ("rmse_complete", "rmse_holes", "rmse_valid", "perplexity"):
        assert math.isfinite(scores[key]) and scores[key] >= 0, key
    assert 0 < scores["codes_used"] <= 1


def test_real_nyu_sample_runs_fully_convolutionally():
    torch.manual_seed(0)
    scores = evaluate_nyu(create_tokenizer("depth-small"), _require(NYU), height=64)
    assert len(scores["maps"]) == 8
    assert scores["tokenizer_size"] == [64, 88]  # Eigen crop 426x560 shrunk, width a multiple of 8
    assert math.isfinite(scores["rmse_full_resolution"]) and scores["rmse_full_resolution"] > 0


def test_real_coco_instance_crops(tmp_path):
    torch.manual_seed(0)
    path = save_tokenizer(create_tokenizer("mask-small"), tmp_path / "mask.safetensors")
    scores = main(["coco", "--checkpoint", str(path), "--ann-file", str(_require(TINYCOCO))])
    assert scores["masks"] > 100  # 136 annotations, one crowd, a few tiny boxes skipped
    assert 0 <= scores["mean_iou"] <= 1 and 0 <= scores["mean_boundary_iou"] <= 1
    assert json.dumps(scores)
