"""Bad input to the data commands (issue 12): one `ait: error:` line naming the file, never a traceback."""

import json

import numpy as np
import pytest

from ait_data import MaskCoco
from ait_data.maskcoco import main as maskcoco_main
from ait_data.preview import main as preview_main

IMAGE = {"id": 1, "height": 10, "width": 10, "file_name": "a.png"}
CATEGORY = {"id": 1, "name": "a"}


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ait: error:"), err
    return err[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not a valid COCO instances file"),
        (json.dumps({"images": [IMAGE], "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 5, 5]}],
                     "categories": [CATEGORY]}), "not a valid COCO instances file"),  # no category_id
        (json.dumps({"images": [IMAGE], "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                     "bbox": [0, 0, 5, 5]}], "categories": [CATEGORY]}), "annotation 1 is malformed"),
    ],
)  # fmt: skip
def test_malformed_coco_files_are_one_line(tmp_path, capsys, content, message):
    ann = tmp_path / "instances.json"
    ann.write_text(content)
    with pytest.raises(SystemExit) as info:
        maskcoco_main([str(ann), "--out", str(tmp_path / "m.npz"), "--no-progress"])
    assert info.value.code == 2
    line = _error_line(capsys)
    assert message in line and "instances.json" in line
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize(
    "arrays",
    [
        {"masks": np.zeros((2, 64, 8), np.uint8)},  # keys missing
        {
            k: np.zeros(2) for k in ("masks", "image_id", "ann_id", "category_id", "box", "size")
        },  # wrong shapes
    ],
)
def test_malformed_maskcoco_files_are_value_errors_naming_them(tmp_path, arrays):
    path = tmp_path / "mc.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"mc\.npz is not a maskcoco file"):
        MaskCoco(path)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match=r"text\.npz is not a maskcoco file"):
        MaskCoco(tmp_path / "text.npz")


def test_preview_into_an_unwritable_place_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as info:
        preview_main(["--out", str(blocker / "p.png"), "--num", "1", "--size", "64x64"])
    assert info.value.code == 2 and "file" in _error_line(capsys)
