"""Overfit proofs: each task's whole chain can learn a handful of fixed images (issue 10, item 1).

A small task-solver trains on 8 fixed images and is scored on those same images through the real chain:
sequence building -> loss -> decoding -> parsing -> mask decoding -> pasting at the original image size ->
pycocotools / the depth metrics. A bug anywhere in it (a shifted target, a transposed mask grid, boxes
scaled the wrong way, a category id off by one) keeps AP near zero however long it trains.

- instances on synthetic rooms, decoded autoregressively: box AP >= 0.9 and mask AP >= 0.8;
- instances on 8 real COCO images (their real category ids, masks pasted at the original size; the canvas
  is small): box AP >= 0.8;
- depth on synthetic rooms: RMSE within 1.25x of the depth tokenizer's own reconstruction of those maps.

The frozen tokenizers are fitted in the test on the same images' targets (the mask crops the solver's
targets are cut from, the depth maps): the solver cannot beat its tokenizer, so a tokenizer trained for
minutes on other rooms would cap the mask AP below the bar (about 0.73) for reasons that are not the
chain's. Every run is seeded and uses one torch thread.

Real data: the 8 COCO images of the repository's fixtures/coco_sample (train2017_coco8).
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import time
from pathlib import Path

import pytest
import torch

from ait.config import create_config
from ait.data import TransformedDataset, _collate, _transform, build_raw_dataset
from ait.engine import Trainer
from ait.evaluation import evaluate_depth, evaluate_instances
from ait.oracle import depth_tokenizer_oracle
from ait.overfit import (
    FIT_SETTINGS,
    INSSEG_OVERRIDES,
    eval_set,
    fit_mask_tokenizer,
    fit_tokenizer,
    overfit_synthetic_instances,
)

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT / "fixtures" / "coco_sample"
COCO_IMAGES = "train2017_coco8"
COCO_ANN = "annotations/instances_train2017_coco8.json"
ROOMS = 8

# minutes each on two cores: `nox -s slow` runs them (CI does), `nox -s tests` does not
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine's other core is not ours to take: 2 threads thrash under load
    yield
    torch.set_num_threads(previous)


def _log(name: str, **figures) -> None:
    shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
    print(f"[overfit] {name}: {shown}")


def _loader(dataset) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=len(dataset), collate_fn=_collate)


def _train(cfg, datasets: dict | None = None) -> torch.nn.Module:
    trainer = Trainer(cfg, datasets=datasets, evaluate=False, log=lambda message: None)
    trainer.train()
    return trainer.model.eval()


def _instances_ap(solver, dataset, coco_gt, label_map, seed: int = 0) -> dict:
    return evaluate_instances(
        solver,
        _loader(dataset),
        coco_gt,
        label_to_category_id=label_map,
        generator=torch.Generator().manual_seed(seed),  # nucleus sampling (top-p), seeded
    )


# ----------------------------------------------------------------------------------- synthetic instances
def test_instance_segmentation_overfits_eight_synthetic_rooms_decoded_autoregressively(tmp_path, monkeypatch):
    assert (
        create_config("cpu_insseg_tiny", INSSEG_OVERRIDES).model.decoding_mode("insseg") == "autoregressive"
    )
    # A majority of seeds must clear both bars: 500 steps from the original's (untruncated) decoder init are
    # chaotic enough that one seed in three lands far below the others (mask AP 0.56 vs 0.886 and 0.884 for
    # seeds 0, 1, 2), while a broken chain fails every seed. The verdict does not depend on the order the seeds
    # run in, so seeds 1 and 2 run first, side by side, one process and one thread each (each run is seeded and
    # single-threaded, so a process computes what this one would); seed 0, the weak draw, runs only if they
    # split.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # read by the spawned processes' torch at start-up
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        # the library function itself travels to the processes (a test module's function would not import)
        runs = {
            seed: pool.submit(overfit_synthetic_instances, **_room_run(tmp_path, seed)) for seed in (1, 2)
        }
        results = {seed: run.result() for seed, run in runs.items()}
    passed, failed = [], []
    for seed in (1, 2, 0):
        if len(passed) == 2 or len(failed) == 2:
            break
        result = (
            results[seed] if seed in results else overfit_synthetic_instances(**_room_run(tmp_path, seed))
        )
        box, mask = result["bbox"]["AP"], result["segm"]["AP"]
        _log(
            f"synthetic instances, seed {seed}",
            box_ap=box,
            mask_ap=mask,
            **{f"{k}_s": v for k, v in result["seconds"].items()},
        )
        assert result["max_objects_in_a_room"] > 4  # rooms of several objects, not one each
        assert (tmp_path / f"seed{seed}" / "mask.safetensors").is_file()
        (passed if box >= 0.9 and mask >= 0.8 else failed).append((seed, round(box, 3), round(mask, 3)))
    assert len(passed) == 2, f"box AP >= 0.9 and mask AP >= 0.8 on a majority of seeds; failed: {failed}"


def _room_run(tmp_path: Path, seed: int) -> dict:
    return {
        "work_dir": tmp_path / f"seed{seed}",
        "rooms": ROOMS,
        "solver_steps": 500,
        "tokenizer_steps": 300,
        "seed": seed,
    }


# -------------------------------------------------------------------------------------------- COCO images
def _coco_sample() -> Path:
    if not (COCO / COCO_ANN).is_file():
        pytest.fail(f"the real COCO fixture is missing ({COCO}; fixtures/ is part of the repository)")
    return COCO


def _simple_coco_images(ann_file: Path, count: int) -> list[int]:
    """The first `count` image ids (ascending) without crowd regions, with at most 4 objects, each at least a
    fifth of the image's longer side: objects stay several pixels wide on the small canvas."""
    data = json.loads(ann_file.read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    chosen = []
    for image in sorted(data["images"], key=lambda i: i["id"]):
        anns = by_image.get(image["id"], [])
        side = max(image["width"], image["height"])
        if not anns or len(anns) > 4 or any(a.get("iscrowd", 0) for a in anns):
            continue
        if min(min(a["bbox"][2], a["bbox"][3]) for a in anns) < 0.2 * side:
            continue
        chosen.append(image["id"])
    return chosen[:count]


def _coco_ground_truth(ann_file: Path, image_ids: list[int]) -> dict:
    """The annotation file restricted to `image_ids` (every category kept: ids are COCO's own)."""
    data = json.loads(ann_file.read_text())
    keep = set(image_ids)
    return {
        "images": [i for i in data["images"] if i["id"] in keep],
        "annotations": [a for a in data["annotations"] if a["image_id"] in keep],
        "categories": data["categories"],
    }


COCO_OVERRIDES = {
    **INSSEG_OVERRIDES,
    "data.synthetic_train_length": ROOMS,
    "data.insseg_batch": ROOMS,
    "model.num_classes": 80,
    "model.max_objects": 4,
    "data.dataset": "coco",
    "data.coco_train_images": COCO_IMAGES,
    "data.coco_train_ann": COCO_ANN,
    "data.coco_val_images": COCO_IMAGES,
    "data.coco_val_ann": COCO_ANN,
    "optim.max_iters": 400,
    "optim.lr": 1e-3,
}


def test_instance_segmentation_overfits_eight_real_coco_images(tmp_path):
    root = _coco_sample()
    start = time.perf_counter()
    cfg = create_config(
        "cpu_insseg_tiny",
        {**COCO_OVERRIDES, "data.coco_root": str(root), "work_dir": str(tmp_path / "solver")},
    )
    image_ids = _simple_coco_images(root / COCO_ANN, ROOMS)
    assert len(image_ids) == ROOMS
    raw = build_raw_dataset(cfg, "insseg", "train")
    indices = [raw.image_ids.index(i) for i in image_ids]
    images = eval_set(cfg, raw, "insseg", indices)
    batch = _collate([images[i] for i in range(ROOMS)])
    assert len({c for labels in batch["labels"] for c in labels.tolist()}) >= 5  # several real categories
    fit_mask_tokenizer(batch, tmp_path / "mask.safetensors", steps=150)
    cfg.model.mask_tokenizer.checkpoint = str(tmp_path / "mask.safetensors")
    fitted = time.perf_counter()

    train_set = TransformedDataset(
        torch.utils.data.Subset(raw, indices), _transform(cfg, "insseg", train=True), cfg.seed, "insseg"
    )
    solver = _train(cfg, datasets={"insseg": train_set})
    trained = time.perf_counter()

    # boxes and masks go back to each image's original size; labels back to COCO's category ids
    coco_gt = _coco_ground_truth(root / COCO_ANN, image_ids)
    metrics = _instances_ap(solver, images, coco_gt, raw.label_to_category_id)
    _log(
        "COCO instances",
        box_ap=metrics["bbox"]["AP"],
        mask_ap=metrics["segm"]["AP"],
        tokenizer_s=fitted - start,
        solver_s=trained - fitted,
        eval_s=time.perf_counter() - trained,
    )
    assert metrics["bbox"]["AP"] >= 0.8, metrics["bbox"]


# ------------------------------------------------------------------------------------------------- depth
DEPTH_OVERRIDES = {
    **FIT_SETTINGS,
    "data.synthetic_train_length": ROOMS,
    "data.depth_batch": ROOMS,
    "optim.max_iters": 400,
}


def test_depth_overfits_eight_rooms_to_its_tokenizers_reconstruction(tmp_path):
    """Depth decoded with AiT-P, as the joint demo decodes it. (Autoregressive depth reaches 99 % teacher-
    forced token accuracy at this budget but then drifts once a token is wrong: exposure bias of a model this
    small, not a chain defect; cached decoding equals teacher forcing exactly, ait-decoder's tests.)"""
    start = time.perf_counter()
    cfg = create_config(
        "cpu_depth_tiny",
        {**DEPTH_OVERRIDES, "model.decoding": {"depth": "parallel"}, "work_dir": str(tmp_path / "solver")},
    )
    raw = build_raw_dataset(cfg, "depth", "train")
    rooms = eval_set(cfg, raw, "depth", list(range(ROOMS)))
    batch = _collate([rooms[i] for i in range(ROOMS)])
    fit_tokenizer("depth-small", batch["depth"], tmp_path / "depth.safetensors", steps=150)
    cfg.model.depth_tokenizer.checkpoint = str(tmp_path / "depth.safetensors")
    fitted = time.perf_counter()

    solver = _train(cfg)
    trained = time.perf_counter()

    oracle = depth_tokenizer_oracle(solver.depth_head.tokenizer, _loader(rooms), cfg.eval)
    metrics = evaluate_depth(solver, _loader(rooms), cfg.eval)
    mean = float(batch["depth"][batch["depth"] > 0].mean())
    baseline = float(((batch["depth"] - mean)[batch["depth"] > 0] ** 2).mean().sqrt())
    _log(
        "depth (AiT-P)",
        rmse=metrics["rmse"],
        tokenizer_rmse=oracle["rmse"],
        ratio=metrics["rmse"] / oracle["rmse"],
        tokenizer_s=fitted - start,
        solver_s=trained - fitted,
        eval_s=time.perf_counter() - trained,
    )
    assert oracle["rmse"] < 0.6 * baseline  # the bound is a real one: the tokenizer reconstructs the rooms
    assert metrics["rmse"] <= 1.25 * oracle["rmse"], (metrics, oracle)
