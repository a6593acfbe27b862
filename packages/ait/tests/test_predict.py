"""`ait predict` on files, folders and globs: outputs as data, COCO results, and the inputs it must not touch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import ait
from ait.cli import main

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"
COCO_IMAGES = FIXTURES / "coco_sample" / "train2017_tinycoco"
COCO_ANNOTATIONS = FIXTURES / "coco_sample" / "annotations" / "instances_train2017_tinycoco6.json"
NYU_IMAGES = FIXTURES / "nyu_sample" / "test_official_densedepth"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, untrained_run):
    return untrained_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def solver(checkpoint):
    return ait.load(checkpoint, device="cpu")


def _photos(folder: Path) -> Path:
    """Two folders holding a file of the same name, and COCO-named images: folder/{a,b}/room.jpg, folder/coco."""
    for sub, source in (("a", COCO_IMAGES / "000000444010.jpg"), ("b", NYU_IMAGES / "image_0.png")):
        (folder / sub).mkdir(parents=True)
        shutil.copy(source, folder / sub / "room.jpg" if sub == "a" else folder / sub / "room.png")
    shutil.copy(NYU_IMAGES / "image_1.png", folder / "b" / "room.jpg")  # same stem, same folder
    return folder


def _run(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_folder_gives_depth_arrays_pngs_overlays_and_coco_results_equal_to_the_api(
    checkpoint, solver, tmp_path, capsys
):
    from pycocotools.coco import COCO

    photos = _photos(tmp_path / "photos")
    out = tmp_path / "out"
    code, stdout, err = _run(
        ["predict", str(photos), "--checkpoint", str(checkpoint), "--out", str(out)], capsys
    )
    assert code == 0, err
    assert "predicted 3 image(s)" in stdout
    # the inputs' folders mirrored; same names in two folders and two suffixes of one stem never collide
    for rel in ("a/room", "b/room_png", "b/room_jpg"):
        for suffix in ("_depth.npy", "_depth.png", "_depth_color.png", "_instances.png"):
            assert (out / f"{rel}{suffix}").is_file(), rel + suffix
    # the command's numbers are the API's (batch size 1 both)
    sources = [photos / "a" / "room.jpg", photos / "b" / "room.jpg", photos / "b" / "room.png"]
    expected = solver.predict(sources, batch_size=1)
    depth = np.load(out / "b" / "room_png_depth.npy")
    np.testing.assert_array_equal(depth, expected[2].depth)
    assert depth.shape == (480, 640) and depth.dtype == np.float32
    millimetres = np.asarray(Image.open(out / "b" / "room_png_depth.png"))
    np.testing.assert_array_equal(millimetres, np.round(depth * 1000).astype(np.uint16))

    gt = COCO(str(out / "coco_images.json"))
    results = gt.loadRes(str(out / "coco_results.json"))
    images = {image["file_name"]: image["id"] for image in gt.dataset["images"]}
    assert set(images) == {"a/room.jpg", "b/room.jpg", "b/room.png"}
    first = results.loadAnns(results.getAnnIds(imgIds=[images["a/room.jpg"]]))
    assert len(first) == len(expected[0].instances)
    boxes = np.array([a["bbox"] for a in sorted(first, key=lambda a: -a["score"])])
    xyxy = expected[0].instances.boxes
    np.testing.assert_allclose(boxes[:, :2], xyxy[:, :2], atol=1e-3)
    np.testing.assert_allclose(boxes[:, 2:], xyxy[:, 2:] - xyxy[:, :2], atol=1e-3)
    assert all(a["file_name"] == "a/room.jpg" for a in first)
    assert {a["category_id"] for a in results.dataset["annotations"]} <= {c["id"] for c in solver.categories}


def test_coco_named_images_keep_their_ids_and_evaluate_against_cocos_annotations(
    checkpoint, tmp_path, capsys
):
    from pycocotools.coco import COCO

    out = tmp_path / "out"
    pattern = str(COCO_IMAGES / "*.jpg")
    argv = ["predict", pattern, "--checkpoint", str(checkpoint), "--out", str(out), "--batch-size", "4"]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    gt = COCO(str(COCO_ANNOTATIONS))
    results = gt.loadRes(str(out / "coco_results.json"))  # ids 444010, ... are COCO's own
    assert set(results.getImgIds()) == set(gt.getImgIds())
    assert {a["image_id"] for a in results.dataset["annotations"]} <= set(gt.getImgIds())


def test_a_file_that_is_not_an_image_is_skipped_with_a_warning(checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(NYU_IMAGES / "image_2.png", photos / "kitchen.png")
    (photos / "notes.png").write_bytes(b"not a picture at all")
    truncated = (COCO_IMAGES / "000000471345.jpg").read_bytes()
    (photos / "cut.jpg").write_bytes(truncated[: len(truncated) // 3])  # the header reads, the pixels do not
    out = tmp_path / "out"
    code, stdout, err = _run(
        ["predict", str(photos), "--checkpoint", str(checkpoint), "--out", str(out)], capsys
    )
    assert code == 0, err
    assert f"ait: warning: skipping {photos / 'notes.png'}: not an image" in err
    assert f"ait: warning: skipping {photos / 'cut.jpg'}" in err
    assert "predicted 1 image(s), 2 skipped" in stdout
    assert (
        (out / "kitchen_depth.npy").is_file() and not list(out.glob("notes*")) and not list(out.glob("cut*"))
    )
    images = json.loads((out / "coco_images.json").read_text())["images"]
    assert [image["file_name"] for image in images] == ["kitchen.png"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "empty").mkdir() or [str(d / "empty")], "no images in folder"),
        (lambda d: [str(d / "nothing*.jpg")], "no file matches"),
        (lambda d: [str(d / "missing.jpg")], "image not found"),
        (
            lambda d: (d / "x.png").write_bytes(b"garbage") and [str(d / "x.png")],
            "no image to predict: none of the inputs is an image",
        ),
        (
            lambda d: Image.new("RGB", (12, 40)).save(d / "thumb.png") or [str(d / "thumb.png")],
            "thumb.png is 12x40 pixels",
        ),
    ],
)
def test_inputs_without_usable_images_are_one_error_line_and_nothing_is_written(
    checkpoint, tmp_path, capsys, make, message
):
    inputs = make(tmp_path)
    out = tmp_path / "out"
    code, _, err = _run(["predict", *inputs, "--checkpoint", str(checkpoint), "--out", str(out)], capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if not line.startswith("ait: warning:")]
    assert len(errors) == 1 and errors[0].startswith("ait: error:") and message in errors[0]
    assert not out.exists()


def test_out_into_the_photos_folder_never_replaces_a_users_file(checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(NYU_IMAGES / "image_3.png", photos / "room.png")
    shutil.copy(NYU_IMAGES / "image_4.png", photos / "room_depth.png")  # the user's own depth picture
    before = (photos / "room_depth.png").read_bytes()
    argv = ["predict", str(photos), "--checkpoint", str(checkpoint), "--out", str(photos)]
    code, _, err = _run(argv, capsys)
    assert code == 2 and "would replace an input" in err and "room_depth.png" in err
    assert (photos / "room_depth.png").read_bytes() == before
    assert sorted(p.name for p in photos.iterdir()) == ["room.png", "room_depth.png"]  # nothing written

    (photos / "room_depth.png").unlink()
    (photos / "room_depth.npy").write_bytes(b"the user's own array")
    code, _, err = _run(argv, capsys)
    assert code == 2 and "room_depth.npy already exists and was not written by ait predict" in err
    assert (photos / "room_depth.npy").read_bytes() == b"the user's own array"

    (photos / "room_depth.npy").unlink()
    for _ in range(2):  # the second run takes its own predictions for neither photos nor a user's files
        code, stdout, err = _run(argv, capsys)
        assert code == 0, err
        assert "predicted 1 image(s)" in stdout


def test_a_rerun_into_its_own_output_folder_replaces_only_its_files(checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(NYU_IMAGES / "image_0.png", photos / "room.png")
    out = photos / "predictions"  # inside the input folder: its files are never taken as inputs
    argv = ["predict", str(photos), "--checkpoint", str(checkpoint), "--out", str(out)]
    for _ in range(2):
        code, stdout, err = _run(argv, capsys)
        assert code == 0, err
        assert "predicted 1 image(s)" in stdout
    manifest = json.loads((out / "ait_predict.json").read_text())
    assert "room_depth.npy" in manifest["written"] and "coco_results.json" in manifest["written"]


def test_batch_size_changes_nothing_for_depth_and_matches_the_api(checkpoint, solver, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "predict",
        str(NYU_IMAGES / "image_*.png"),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--batch-size",
        "3",
    ]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    paths = sorted(NYU_IMAGES.glob("image_*.png"))
    expected = solver.predict(paths, batch_size=3)
    detections = json.loads((out / "coco_results.json").read_text())
    ids = {
        image["file_name"]: image["id"]
        for image in json.loads((out / "coco_images.json").read_text())["images"]
    }
    for path, prediction in zip(paths, expected, strict=True):
        np.testing.assert_array_equal(np.load(out / f"{path.stem}_depth.npy"), prediction.depth)
        scores = sorted((d["score"] for d in detections if d["image_id"] == ids[path.name]), reverse=True)
        np.testing.assert_allclose(scores, prediction.instances.scores, rtol=1e-6)


def test_eval_and_predict_need_no_config_and_take_options_on_top(checkpoint, tmp_path, capsys):
    run_dir = checkpoint.parent.parent
    code, stdout, err = _run(
        ["eval", "--checkpoint", str(run_dir), "--cfg-options", "eval.flip=true"], capsys
    )
    assert code == 0, err
    assert "| cpu_joint_tiny |" in stdout
    code, _, err = _run(
        [
            "predict",
            str(NYU_IMAGES / "image_0.png"),
            "--checkpoint",
            str(run_dir),
            "--config",
            "cpu_depth_tiny",
        ],
        capsys,
    )
    assert code == 2 and "model.tasks" in err and err.startswith("ait: error:")


@settings(max_examples=40, deadline=None)
@given(
    files=st.lists(
        st.tuples(
            st.lists(st.sampled_from(["a", "b", "room"]), max_size=2).map(tuple),  # folders
            st.sampled_from(["room", "a", "0001", "a_jpg", "a_png", "room_depth"]),  # stems
            st.sampled_from([".jpg", ".png", ".JPG"]),
        ),
        min_size=1,
        max_size=8,
        unique=True,
    )
)
def test_output_names_never_collide_and_never_name_an_input(tmp_path_factory, files):
    from ait.predict import check_outputs_are_free, plan_outputs

    root = tmp_path_factory.mktemp("tree")
    paths = []
    for folders, stem, suffix in files:
        path = root.joinpath(*folders, stem + suffix)
        if path.exists():  # ".jpg" and ".JPG" are one file on case-insensitive filesystems
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16)).save(path, format="PNG")
        paths.append(path)
    out = root  # the hardest case: predictions written among the photos
    planned, skipped = plan_outputs(paths, out, warn=lambda message: None)
    assert not skipped and [item.path for item in planned] == paths
    outputs = [
        item.out_dir / f"{item.name}{suffix}"
        for item in planned
        for suffix in ("_depth.npy", "_depth.png", "_depth_color.png", "_instances.png")
    ]
    assert len(set(outputs)) == len(outputs)
    # an output that would be one of the photos (room.png's room_depth.png) stops the run before it starts
    replaces_a_photo = bool({o.resolve() for o in outputs} & {p.resolve() for p in paths})
    tasks = SimpleNamespace(tasks=("depth", "insseg"))
    if replaces_a_photo:
        with pytest.raises(ValueError, match="would replace an input"):
            check_outputs_are_free(planned, tasks, out, [])
    else:
        check_outputs_are_free(planned, tasks, out, [])
    assert len({item.image_id for item in planned}) == len(planned)
    assert len({item.file_name for item in planned}) == len(planned)


def test_images_are_read_one_batch_at_a_time_with_a_progress_bar(solver, tmp_path, monkeypatch, capsys):
    import ait.engine.inference as inference
    from ait.predict import predict_to_folder

    events = []
    read = inference.load_image
    monkeypatch.setattr(inference, "load_image", lambda path: events.append("read") or read(path))
    predict = solver.predict_arrays
    monkeypatch.setattr(
        solver, "predict_arrays", lambda *a, **k: events.append("predict") or predict(*a, **k)
    )
    done = predict_to_folder(
        solver, [str(NYU_IMAGES / "image_*.png")], tmp_path / "out", batch_size=2, progress=True
    )
    assert len(done["images"]) == 5
    assert events == ["read", "read", "predict", "read", "read", "predict", "read", "predict"]
    err = capsys.readouterr().err
    assert "ait predict" in err and "5/5" in err


def test_eval_out_never_replaces_the_checkpoint(checkpoint, capsys):
    before = checkpoint.read_bytes()
    code, _, err = _run(["eval", "--checkpoint", str(checkpoint), "--out", str(checkpoint)], capsys)
    assert code == 2 and err.startswith("ait: error: --out") and str(checkpoint) in err
    assert checkpoint.read_bytes() == before


def test_a_failure_midway_keeps_what_was_predicted(solver, tmp_path, monkeypatch):
    from ait.predict import predict_to_folder

    predict = solver.predict_arrays
    calls = []

    def fail_on_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("the solver predicted 3 non-finite value(s)")
        return predict(*args, **kwargs)

    monkeypatch.setattr(solver, "predict_arrays", fail_on_the_second_batch)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="non-finite"):
        predict_to_folder(solver, [str(NYU_IMAGES / "image_*.png")], out, progress=False)
    assert (out / "image_0_depth.npy").is_file() and not (out / "image_1_depth.npy").exists()
    images = json.loads((out / "coco_images.json").read_text())["images"]
    assert [image["file_name"] for image in images] == ["image_0.png"]
    assert {d["image_id"] for d in json.loads((out / "coco_results.json").read_text())} == {images[0]["id"]}
    assert "image_0_depth.npy" in json.loads((out / "ait_predict.json").read_text())["written"]
