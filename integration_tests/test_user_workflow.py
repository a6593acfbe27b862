"""A user's whole workflow after the demo, as the READMEs tell it, in a fresh folder:

train a tiny solver, interrupt it, continue it with `ait train --resume RUN_DIR`, evaluate it with
`ait eval --checkpoint RUN_DIR`, predict a folder of real photos with `ait predict`, read the COCO results
with pycocotools, and check that the Python API's three lines give the same numbers. After the first
command no config name and no option is repeated: the run folder carries its config.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
# the first command's options: nothing below repeats them
FIRST_OPTIONS = [
    "optim.max_iters=4",
    "checkpoint_interval=1",
    "data.synthetic_train_length=8",
    "data.synthetic_val_length=4",
    "eval.flip=true",
]


@pytest.fixture
def restore_torch_settings():
    """The in-process `ait train` sets torch's threads and deterministic mode for its run: put them back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def test_train_interrupt_resume_eval_predict_and_the_api_agree(
    tmp_path, monkeypatch, capsys, restore_torch_settings
):
    from pycocotools.coco import COCO

    from ait.cli import main

    monkeypatch.chdir(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", AIT_KILL_AFTER_STEP="2")
    # 1. train, killed after step 2 (as a crash or a Ctrl-C would leave it)
    command = ["ait", "train", "cpu_joint_tiny", "--work-dir", "run", "--no-eval", "--cfg-options"]
    killed = subprocess.run(
        [sys.executable, "-m", *command, *FIRST_OPTIONS],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_0000001.pt", "iter_0000002.pt"]
    saved = json.loads((run / "config.json").read_text())  # the run folder carries its resolved config
    assert saved["optim"]["max_iters"] == 4 and saved["eval"]["flip"] is True

    # 2. continue it: no config name, no options (the registry's cpu_joint_tiny would train 20 steps)
    assert main(["train", "--resume", "run", "--no-eval"]) == 0
    out = capsys.readouterr().out
    assert "resumed from run/checkpoints/iter_0000002.pt at step 2" in out
    last = torch.load(run / "checkpoints" / "iter_0000004.pt", map_location="cpu", weights_only=True)
    assert last["step"] == 4 and not (run / "checkpoints" / "iter_0000005.pt").exists()

    # 3. evaluate the run folder (its newest checkpoint) with the run's own evaluation settings
    assert main(["eval", "--checkpoint", "run", "--out", "metrics.json"]) == 0
    assert "| cpu_joint_tiny |" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert np.isfinite(metrics["depth"]["rmse"]) and "segm" in metrics["insseg"]

    # 4. predict a folder of real photos (COCO and NYU frames in two subfolders, and a note to ignore)
    photos = tmp_path / "photos"
    shutil.copytree(FIXTURES / "coco_sample" / "train2017_tinycoco", photos / "coco")
    (photos / "nyu").mkdir()
    for frame in sorted((FIXTURES / "nyu_sample" / "test_official_densedepth").glob("image_*.png"))[:2]:
        shutil.copy(frame, photos / "nyu" / frame.name)
    (photos / "notes.txt").write_text("holiday photos")
    assert (
        main(["predict", "photos", "--checkpoint", "run", "--out", "predictions", "--batch-size", "2"]) == 0
    )
    capsys.readouterr()
    predictions = tmp_path / "predictions"
    depth = np.load(predictions / "nyu" / "image_0_depth.npy")
    assert depth.shape == (480, 640) and depth.dtype == np.float32 and (depth > 0).all()
    for name in ("image_0_depth.png", "image_0_depth_color.png", "image_0_instances.png"):
        assert (predictions / "nyu" / name).is_file()

    # 5. the results are COCO results files pycocotools reads (against the images file the run wrote)
    coco = COCO(str(predictions / "coco_images.json"))
    results = coco.loadRes(str(predictions / "coco_results.json"))
    assert len(coco.getImgIds()) == 8 and results.getAnnIds()
    assert {ann["category_id"] for ann in results.dataset["annotations"]} <= set(coco.getCatIds())

    # 6. the Python API's three lines give the same numbers (the same images in a batch of the same size)
    import ait

    solver = ait.load("run", device="cpu")
    result = solver.predict(["photos/nyu/image_0.png", "photos/nyu/image_1.png"], batch_size=2)[0]
    np.testing.assert_array_equal(result.depth, depth)
    image_id = next(i["id"] for i in coco.dataset["images"] if i["file_name"] == "nyu/image_0.png")
    from_file = sorted(results.loadAnns(results.getAnnIds(imgIds=[image_id])), key=lambda a: -a["score"])
    np.testing.assert_allclose([a["score"] for a in from_file], result.instances.scores, rtol=1e-6)
    assert [a["category_id"] for a in from_file] == result.instances.category_ids.tolist()
    np.testing.assert_array_equal(
        np.stack([results.annToMask(a) for a in from_file]).astype(bool), result.instances.masks
    )
