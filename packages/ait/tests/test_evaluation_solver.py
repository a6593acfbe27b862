"""Evaluation glue with a real (tiny, untrained) task-solver on synthetic rooms."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch

from ait.config.schema import Config, EvalConfig, ModelConfig, TokenizerRef
from ait.evaluation import evaluate_depth, evaluate_instances, format_results_table, mean_depth_baseline
from ait.model import build_task_solver
from ait_data import (
    SYNTHETIC_CATEGORIES,
    DepthTransform,
    InstanceTransform,
    SyntheticRooms,
    collate,
    to_coco_dict,
)

SIZE = 64  # the smallest synthetic room


def tiny_config(tasks) -> Config:
    model = ModelConfig(
        backbone="swinv2-tiny-cpu",
        backbone_drop_path=0.0,
        d_model=32,
        nhead=2,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dim_feedforward=64,
        dropout=0.0,
        drop_path=0.0,
        num_bins=SIZE,
        num_classes=len(SYNTHETIC_CATEGORIES),
        tasks=tuple(tasks),
        max_objects=3,
        canvas=SIZE,
        depth_size=(SIZE, SIZE),
        depth_tokenizer=TokenizerRef("depth-small"),
        mask_tokenizer=TokenizerRef("mask-small"),
    )
    return Config(model=model)


def build(cfg):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_task_solver(cfg)


class Transformed(torch.utils.data.Dataset):
    def __init__(self, base, transform):
        self.dataset, self.transform = base, transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.transform(self.dataset[index])


def test_evaluate_depth_with_sliding_windows_and_flip():
    rooms = SyntheticRooms(length=2, height=SIZE, width=96, seed=1, split="val")
    loader = torch.utils.data.DataLoader(
        Transformed(rooms, DepthTransform(train=False)), batch_size=2, collate_fn=collate
    )
    solver = build(tiny_config(("depth",))).train()
    calls = []
    original = solver.predict_depth

    def spy(images):
        calls.append(tuple(images.shape))
        return original(images)

    solver.predict_depth = spy
    metrics = evaluate_depth(solver, loader, EvalConfig(eigen_crop=False))
    assert calls == [(4, 3, SIZE, SIZE), (4, 3, SIZE, SIZE)]  # windows x=0, x=32, each with its mirror
    assert solver.training  # mode restored
    assert metrics["num_images"] == 2
    for key in ("d1", "d2", "d3", "abs_rel", "rmse", "log10", "silog_ait"):
        assert math.isfinite(metrics[key]), key
    baseline = mean_depth_baseline(loader, loader, EvalConfig(eigen_crop=False))
    assert baseline["rmse"] > 0 and baseline["mean_depth"] > 0
    table = format_results_table(metrics, None, baseline=baseline)
    assert f"| {metrics['rmse']:.3f} |" in table and "predict-the-mean" in table


def test_evaluate_instances_returns_coco_ap():
    rooms = SyntheticRooms(length=2, height=SIZE, width=SIZE, seed=2, split="val")
    gt = to_coco_dict(rooms)
    loader = torch.utils.data.DataLoader(
        Transformed(rooms, InstanceTransform(train=False, canvas=SIZE)), batch_size=2, collate_fn=collate
    )
    solver = build(tiny_config(("insseg",)))
    result = evaluate_instances(solver, loader, gt, generator=torch.Generator().manual_seed(0))
    assert set(result) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        assert 0.0 <= result[iou_type]["AP"] <= 1.0
    solver_det = build(dataclasses.replace(tiny_config(("det",)), name="det"))
    assert set(evaluate_instances(solver_det, loader, gt, generator=torch.Generator().manual_seed(0))) == {
        "bbox"
    }
    with pytest.raises(ValueError, match="label_to_category_id"):
        evaluate_instances(solver, [next(iter(loader))], gt)
