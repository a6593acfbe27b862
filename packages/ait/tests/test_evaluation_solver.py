"""Evaluation glue with a real (tiny, untrained) task-solver on synthetic rooms."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch

from ait.config.schema import Config, EvalConfig, ModelConfig, TokenizerRef
from ait.evaluation import (
    evaluate_depth,
    evaluate_instances,
    format_results_table,
    mean_depth_baseline,
    predict_instances_fused,
)
from ait.model import build_task_solver
from ait_data import (
    SYNTHETIC_CATEGORIES,
    DepthTransform,
    InstanceTransform,
    SyntheticRooms,
    collate,
    to_coco_dict,
)
from ait_eval import fuse_detections

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


class BrightColumnSolver(torch.nn.Module):
    """A stand-in whose one detection per image is the brightest canvas column: the box that column covers in
    original pixels (4 rows high) with a fixed score, its mask the box. Mirroring must put it back."""

    def __init__(self, score: float = 0.8):
        super().__init__()
        self.score = score
        self.calls: list[int] = []

    def predict_instances(self, images, scale=1.0, orig_size=None, generator=None):
        self.calls.append(images.shape[0])
        scales = scale if isinstance(scale, list) else [scale] * images.shape[0]
        sizes = orig_size if isinstance(orig_size, list) else [orig_size] * images.shape[0]
        canvas = images.shape[-1]
        sizes = [
            size or (round(canvas / f), round(canvas / f)) for size, f in zip(sizes, scales, strict=True)
        ]
        results = []
        for image, factor, (height, width) in zip(images, scales, sizes, strict=True):
            column = int(image[0].sum(0).argmax())
            left, right = column / factor, (column + 1) / factor
            box = torch.tensor([[left, 0.0, right, 4.0]])
            mask = torch.zeros(1, height, width, dtype=torch.bool)
            mask[0, :4, int(left) : int(right)] = True
            results.append(
                {
                    "boxes": box,
                    "labels": torch.tensor([1]),
                    "scores": torch.tensor([self.score]),
                    "masks": mask,
                }
            )
        return results


@pytest.mark.parametrize("given", ["both", "orig_size", "image_size"])
def test_mirrored_decodes_land_back_on_the_same_object_inside_the_real_image_area(given):
    # two images on a 16-px canvas: one fills it, one is 8 px wide (padding to the right) at scale 0.5; the
    # real area comes from image_size, or from orig_size x scale
    images = torch.zeros(2, 3, 16, 16)
    images[0, :, :, 3] = 1.0
    images[1, :, :, 5] = 1.0
    stub = BrightColumnSolver()
    fused = predict_instances_fused(
        stub,
        images,
        scale=[1.0, 0.5],
        orig_size=torch.tensor([[16, 16], [32, 16]]) if given != "image_size" else None,
        image_size=torch.tensor([[16, 16], [16, 8]]) if given != "orig_size" else None,
        samples=3,
        flip=True,
    )
    assert stub.calls == [12]  # every decode of both images in one batch: 2 images x 3 samples x 2 views
    # the mirrored views' boxes went back to where the unmirrored views put them: one object each, at the
    # full score (found by all 6 decodes)
    assert [len(result["scores"]) for result in fused] == [1, 1]
    torch.testing.assert_close(fused[0]["boxes"], torch.tensor([[3.0, 0.0, 4.0, 4.0]]))
    torch.testing.assert_close(fused[1]["boxes"], torch.tensor([[10.0, 0.0, 12.0, 4.0]]))
    for result in fused:
        torch.testing.assert_close(result["scores"], torch.tensor([0.8]))
        assert result["masks"].shape[0] == 1
    assert fused[1]["masks"][0, :4, 10:12].all() and fused[1]["masks"].sum() == 8


def test_an_object_only_one_view_finds_keeps_half_its_score():
    images = torch.zeros(1, 3, 16, 16)
    images[0, :, :, 2] = 1.0
    images[0, :, :, 13] = 1.0  # a tie broken towards the first column: the mirror picks the other object
    fused = predict_instances_fused(BrightColumnSolver(), images, orig_size=(16, 16), samples=1, flip=True)[0]
    torch.testing.assert_close(fused["scores"], torch.tensor([0.4, 0.4]))
    assert sorted(fused["boxes"][:, 0].tolist()) == [2.0, 13.0]


def test_the_samples_of_a_real_solver_are_its_own_decodes_fused_in_batch_order():
    rooms = SyntheticRooms(length=2, height=SIZE, width=SIZE, seed=2, split="val")
    batch = collate([InstanceTransform(train=False, canvas=SIZE)(rooms[i]) for i in range(2)])
    solver = build(tiny_config(("insseg",))).eval()
    # what the fusion must see: both images decoded twice in one batch (sample 0 of both, then sample 1)
    decodes = solver.predict_instances(
        torch.cat([batch["image"], batch["image"]]),
        scale=batch["scale"].tolist() * 2,
        orig_size=batch["orig_size"].tolist() * 2,
        generator=torch.Generator().manual_seed(3),
    )
    fused = predict_instances_fused(
        solver,
        batch["image"],
        scale=batch["scale"],
        orig_size=batch["orig_size"],
        image_size=batch["image_size"],
        generator=torch.Generator().manual_seed(3),
        samples=2,
    )
    for index, result in enumerate(fused):
        parts = [decodes[index], decodes[2 + index]]
        expected = fuse_detections(
            torch.cat([p["boxes"] for p in parts]).numpy(),
            torch.cat([p["scores"] for p in parts]).numpy(),
            torch.cat([p["labels"] for p in parts]).numpy(),
            np.repeat([0, 1], [len(p["scores"]) for p in parts]),
            decodes=2,
            masks=torch.cat([p["masks"] for p in parts]).numpy(),
        )
        for key in ("boxes", "scores", "labels", "masks"):
            np.testing.assert_array_equal(result[key].numpy(), expected[key])
    with pytest.raises(ValueError, match="samples must be at least 1"):
        predict_instances_fused(solver, batch["image"], samples=0)
    with pytest.raises(ValueError, match=r"scale must be one value or one per image \(2\), received 3"):
        predict_instances_fused(solver, batch["image"], scale=[1.0, 1.0, 1.0], samples=2)


def test_evaluate_instances_fuses_the_decodes_the_config_asks_for():
    rooms = SyntheticRooms(length=2, height=SIZE, width=SIZE, seed=2, split="val")
    loader = torch.utils.data.DataLoader(
        Transformed(rooms, InstanceTransform(train=False, canvas=SIZE)), batch_size=2, collate_fn=collate
    )
    solver = build(tiny_config(("insseg",)))
    sizes = []
    original = solver.predict_instances

    def spy(images, **kwargs):
        sizes.append(images.shape[0])
        return original(images, **kwargs)

    solver.predict_instances = spy
    eval_cfg = EvalConfig(instance_samples=2, instance_flip=True)
    result = evaluate_instances(
        solver, loader, to_coco_dict(rooms), eval_cfg, generator=torch.Generator().manual_seed(0)
    )
    assert sizes == [8]  # 2 images x 2 samples x 2 views, one batch
    for iou_type in ("bbox", "segm"):
        assert 0.0 <= result[iou_type]["AP"] <= 1.0
