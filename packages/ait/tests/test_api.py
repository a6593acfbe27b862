"""The Python API: `ait.load(...)` and `Solver.predict(...)` on every kind of input, and loading bad runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import ait
from ait.config import ConfigError, create_config

ROOM = (np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)).astype(np.uint8)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, untrained_run):
    run = tmp_path_factory.mktemp("run")
    untrained_run(run)
    return run


@pytest.fixture(scope="module")
def solver(run_dir):
    return ait.load(run_dir, device="cpu")


def test_load_takes_a_run_folder_or_its_checkpoint_and_keeps_the_runs_config(run_dir, solver):
    assert solver.tasks == ("depth", "insseg") and solver.config.name == "cpu_joint_tiny"
    assert solver.config.work_dir == str(run_dir)  # the saved config, not the registry's
    assert [c["name"] for c in solver.categories][:2] == ["box", "cabinet"]
    same = ait.load(run_dir / "checkpoints" / "iter_0000001.pt", device="cpu")
    for key, value in solver.model.state_dict().items():
        assert torch.equal(value, same.model.state_dict()[key]), key


def test_every_kind_of_input_gives_the_same_prediction(solver, tmp_path):
    path = tmp_path / "room.png"
    Image.fromarray(ROOM).save(path)
    reference = solver.predict(path)
    assert reference.source == str(path)
    inputs = [
        str(path),
        Image.open(path),
        ROOM,
        torch.from_numpy(ROOM).permute(2, 0, 1),  # uint8 (3, H, W)
        torch.from_numpy(ROOM).permute(2, 0, 1).double() / 255,  # float (3, H, W) in [0, 1]
        np.concatenate([ROOM, np.full((48, 80, 1), 255, np.uint8)], axis=-1),  # RGBA: alpha dropped
    ]
    for image in inputs:
        result = solver.predict(image)
        np.testing.assert_array_equal(result.depth, reference.depth)
        np.testing.assert_array_equal(result.instances.boxes, reference.instances.boxes)
        np.testing.assert_array_equal(result.instances.masks, reference.instances.masks)


@settings(max_examples=6, deadline=None)
@given(height=st.integers(16, 90), width=st.integers(16, 90))
def test_outputs_are_at_the_inputs_resolution_in_its_pixels(solver, height, width):
    image = np.random.default_rng(height * 1000 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    result = solver.predict(image)
    assert result.depth.shape == (height, width) and result.depth.dtype == np.float32
    assert np.isfinite(result.depth).all() and (result.depth >= solver.config.eval.min_depth).all()
    found = result.instances
    n = len(found)
    assert found.boxes.shape == (n, 4) and found.boxes.dtype == np.float32
    assert (found.boxes[:, 0::2] >= 0).all() and (found.boxes[:, 0::2] <= width).all()
    assert (found.boxes[:, 1::2] >= 0).all() and (found.boxes[:, 1::2] <= height).all()
    assert found.masks.shape == (n, height, width) and found.masks.dtype == bool
    assert (np.diff(found.scores) <= 0).all()  # best first
    names = {c["id"]: c["name"] for c in solver.categories}
    assert [names[i] for i in found.category_ids] == found.class_names


def test_a_list_is_batched_and_a_batch_of_one_equals_single_calls(solver):
    images = [ROOM, ROOM[:, ::-1].copy(), ROOM[:40, :60].copy()]
    singles = [solver.predict(image) for image in images]
    ones = solver.predict(images, batch_size=1)
    assert isinstance(ones, list) and len(ones) == 3
    for single, one in zip(singles, ones, strict=True):
        np.testing.assert_array_equal(single.depth, one.depth)
        np.testing.assert_array_equal(single.instances.scores, one.instances.scores)
    batched = solver.predict(images, batch_size=3)
    for single, together in zip(singles, batched, strict=True):
        # depth is decoded greedily: a batch changes float summation order only
        np.testing.assert_allclose(single.depth, together.depth, rtol=1e-4, atol=1e-5)
    again = solver.predict(images, batch_size=3)  # instance sampling is seeded per batch
    np.testing.assert_array_equal(batched[2].instances.boxes, again[2].instances.boxes)
    stacked = solver.predict(torch.from_numpy(np.stack(images[:2])).permute(0, 3, 1, 2), batch_size=1)
    np.testing.assert_array_equal(stacked[1].depth, singles[1].depth)


def test_masks_as_rle_decode_to_the_boolean_masks(solver):
    from pycocotools import mask as mask_utils

    found = solver.predict(ROOM).instances
    rles = found.rle()
    assert all(isinstance(r["counts"], str) and r["size"] == [48, 80] for r in rles)
    decoded = np.stack([mask_utils.decode({**r, "counts": r["counts"].encode()}) for r in rles]).astype(bool)
    np.testing.assert_array_equal(decoded, found.masks)
    records = found.to_coco(image_id=7)
    assert len(records) == len(found) and {r["image_id"] for r in records} == {7}
    assert [r["category_id"] for r in records] == found.category_ids.tolist()
    subset = found[found.scores >= np.median(found.scores)]
    assert len(subset) >= 1 and subset.masks.shape[0] == len(subset.class_names)


def test_save_writes_depth_as_data_and_pictures(solver, tmp_path):
    result = solver.predict(ROOM)
    with pytest.raises(ValueError, match="no source file"):
        result.save(tmp_path)
    paths = result.save(tmp_path, name="room")
    assert sorted(p.name for p in paths) == [
        "room_depth.npy",
        "room_depth.png",
        "room_depth_color.png",
        "room_instances.png",
    ]
    np.testing.assert_array_equal(np.load(tmp_path / "room_depth.npy"), result.depth)
    millimetres = np.asarray(Image.open(tmp_path / "room_depth.png"))
    assert millimetres.dtype == np.uint16
    np.testing.assert_array_equal(millimetres, np.round(result.depth * 1000).astype(np.uint16))
    assert np.asarray(Image.open(tmp_path / "room_depth_color.png")).shape == (48, 80, 3)
    assert np.asarray(Image.open(tmp_path / "room_instances.png")).shape == (48, 80, 3)
    assert result.plot().size == (160, 48)  # overlay | coloured depth
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp file left


def test_save_never_replaces_the_input_image(solver, tmp_path):
    source = tmp_path / "room_depth.png"
    Image.fromarray(ROOM).save(source)
    before = source.read_bytes()
    result = solver.predict(source)
    with pytest.raises(ValueError, match="would replace the input image"):
        result.save(tmp_path, name="room")
    assert source.read_bytes() == before


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((48, 80, 2), np.uint8), r"expected an image array \(H, W, 3\)"),
        (np.zeros((48, 80, 3), np.uint16), "dtype uint16"),
        (np.full((48, 80, 3), 2.0, np.float32), r"values in \[0, 1\]"),
        (torch.zeros(48, 80, 3), r"expected an image tensor \(3, H, W\)"),
        (np.zeros((8, 80, 3), np.uint8), "80x8 pixels"),
        (b"not an image", "received bytes"),
    ],
)
def test_bad_inputs_are_value_errors_naming_what_was_received(solver, image, message):
    with pytest.raises(ValueError, match=message):
        solver.predict(image)


def test_cfg_options_change_decoding_but_not_the_architecture(run_dir):
    options = ["model.top_p=0.9", "eval.flip=true", "model.soft_lookup=torch", "model.object_order=area"]
    tuned = ait.load(run_dir, device="cpu", cfg_options=options)
    assert tuned.config.model.top_p == 0.9 and tuned.config.eval.flip is True
    assert tuned.config.model.soft_lookup == "torch"
    assert tuned.model.cfg.model.top_p == 0.9  # what the decoder reads
    with pytest.raises(ValueError, match=r"model\.d_model"):
        ait.load(run_dir, device="cpu", cfg_options={"model.d_model": 32})
    with pytest.raises(ConfigError, match=r"model\.top_pp"):
        ait.load(run_dir, device="cpu", cfg_options=["model.top_pp=0.9"])
    with pytest.raises(ValueError, match=r"model\.tasks"):
        ait.load(run_dir, device="cpu", config="cpu_depth_tiny")
    with pytest.raises(ConfigError, match="tokenizer config"):
        ait.load(run_dir, device="cpu", config="cpu_depth_vqvae")


def test_a_saved_config_with_unknown_keys_names_the_key_and_the_file(tmp_path, capsys, untrained_run):
    from ait.cli import main

    cfg = json.loads(create_config("cpu_joint_tiny").to_json())
    cfg["model"]["future_option"] = 3
    path = untrained_run(tmp_path / "run", config_json=json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"iter_0000001\.pt.*model\.future_option"):
        ait.load(path, device="cpu")
    image = tmp_path / "room.png"
    Image.fromarray(ROOM).save(image)
    assert main(["predict", str(image), "--checkpoint", str(path), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ait: error:") and "model.future_option" in err[0]
    assert "--config NAME" in err[0]
    # naming the config it was trained with loads it (the weights are checked tensor by tensor)
    assert ait.load(path, device="cpu", config="cpu_joint_tiny").tasks == ("depth", "insseg")


def test_a_folder_without_checkpoints_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"holds no checkpoint.*checkpoints/iter_\*\.pt"):
        ait.load(tmp_path, device="cpu")


def test_a_detection_model_gives_boxes_without_masks(tmp_path, untrained_run, capsys):
    from pycocotools.coco import COCO

    from ait.cli import main

    detection = {"model.tasks": ("det",), "model.mask_tokenizer": None}
    path = untrained_run(tmp_path / "det", name="cpu_insseg_tiny", overrides=detection)
    solver = ait.load(path, device="cpu")
    result = solver.predict(ROOM)
    assert result.depth is None and result.instances.masks is None and len(result.instances) > 0
    with pytest.raises(ValueError, match="boxes only"):
        result.instances.rle()
    assert "segmentation" not in result.instances.to_coco(1)[0]
    assert result.plot().size == (80, 48)  # the overlay alone
    image = tmp_path / "room.png"
    Image.fromarray(ROOM).save(image)
    out = tmp_path / "out"
    assert main(["predict", str(image), "--checkpoint", str(path), "--out", str(out)]) == 0, (
        capsys.readouterr()
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "ait_predict.json",
        "coco_images.json",
        "coco_results.json",
        "room_instances.png",
    ]
    results = COCO(str(out / "coco_images.json")).loadRes(str(out / "coco_results.json"))
    assert len(results.getAnnIds()) == len(result.instances)
