"""Faults of the application (issue 12); each test here failed on the code before the fix.

- a solver checkpoint with NaN weights is refused by `ait eval`/`ait predict` (it evaluated to plausible
  numbers, NaN cleaned to min_depth) and non-finite predictions stop evaluation;
- a fresh run into a work_dir holding another run refuses (it overwrote, pruned and mixed the two runs);
- after a resume metrics.jsonl holds each step once, and a killed save's temporary file is removed;
- a full disk names ENOSPC and keeps the previous checkpoint; an unwritable work_dir fails before the model
  is built; `--device cuda` without a GPU is one line.
"""

from __future__ import annotations

import errno
import json
import warnings

import pytest
import torch
from torch import nn

from ait.cli import main
from ait.config import create_config
from ait.engine import Trainer, list_checkpoints, load_checkpoint, read_metrics
from ait.engine.checkpoint import CHECKPOINT_FORMAT, check_finite_weights


class StandIn(nn.Module):
    """Regresses depth from the image with a 1x1 conv (the engine tests' stand-in)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 1, 1)

    def forward(self, batch):
        depth = batch["depth"]
        loss = ((self.head(depth["image"]) - depth["depth"]) ** 2).mean()
        return {"loss": loss}

    training_step = forward


def _dataset(n: int = 16) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [
        {"image": (im := torch.rand(3, 4, 4, generator=g)), "depth": 1.0 + im[:1], "image_id": i}
        for i in range(n)
    ]


def _cfg(work_dir, **overrides):
    base = {
        "work_dir": str(work_dir),
        "optim.max_iters": 6,
        "optim.lr": 0.05,
        "optim.warmup_iters": 1,
        "data.depth_batch": 4,
        "checkpoint_interval": 2,
        "keep_checkpoints": 0,
        "log_interval": 1,
        "progress": False,
    }
    return create_config("cpu_depth_tiny", {**base, **overrides})


def _trainer(cfg, factory=StandIn) -> Trainer:
    return Trainer(
        cfg,
        model_factory=lambda _: factory(),
        datasets={"depth": _dataset()},
        evaluate=False,
        log=lambda _: None,
    )


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory):
    """A real cpu_depth_tiny solver checkpoint (untrained) with one NaN in one weight."""
    from ait.model import build_task_solver

    cfg = create_config("cpu_depth_tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_task_solver(cfg)
    weights = model.state_dict()
    name = next(k for k, v in weights.items() if v.is_floating_point() and v.numel() > 1 and "backbone" in k)
    weights[name].view(-1)[0] = float("nan")
    path = tmp_path_factory.mktemp("nan") / "iter_0000001.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": cfg.to_json(), "step": 1, "model": weights}, path)
    return path, name, model, cfg


def test_a_checkpoint_with_nan_weights_is_refused_by_eval_and_predict(nan_checkpoint, tmp_path, capsys):
    path, name, _, _ = nan_checkpoint
    assert main(["eval", "cpu_depth_tiny", "--checkpoint", str(path), "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and err[0].startswith("ait: error:")
        and "non-finite weights" in err[0]
        and name in err[0]
    )
    assert not (tmp_path / "m.json").exists()

    from PIL import Image

    image = tmp_path / "room.png"
    Image.new("RGB", (64, 48), (120, 90, 60)).save(image)
    assert main(["predict", "--checkpoint", str(path), str(image), "--out", str(tmp_path / "pred")]) == 2
    assert "non-finite weights" in capsys.readouterr().err
    assert not (tmp_path / "pred" / "room_depth.png").exists()


def test_non_finite_predictions_stop_evaluation(nan_checkpoint):
    from ait.engine import evaluate_solver

    _, _, model, cfg = nan_checkpoint
    with torch.no_grad():
        for parameter in model.parameters():  # every weight NaN: every prediction NaN
            parameter.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite depth value"):
        evaluate_solver(cfg, model.eval(), max_batches=1)


def test_check_finite_weights_names_the_tensor():
    check_finite_weights({"a": torch.ones(2), "steps": torch.tensor(3)}, "x.pt")
    with pytest.raises(ValueError, match=r"x\.pt: non-finite weights .* in b"):
        check_finite_weights({"a": torch.ones(2), "b": torch.tensor([1.0, float("inf")])}, "x.pt")


def test_a_fresh_run_into_a_used_work_dir_refuses(tmp_path):
    work = tmp_path / "run"
    _trainer(_cfg(work)).train()
    before = {p.name: p.stat().st_mtime_ns for _, p in list_checkpoints(work)}
    with pytest.raises(ValueError, match=r"already holds a run.*--resume"):
        _trainer(_cfg(work, **{"optim.lr": 0.01})).train()
    assert {p.name: p.stat().st_mtime_ns for _, p in list_checkpoints(work)} == before
    assert [r["step"] for r in read_metrics(work) if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_resume_logs_each_step_once_and_removes_a_killed_saves_temp_file(tmp_path):
    work = tmp_path / "run"
    _trainer(_cfg(work)).train(stop_at_step=5)  # steps 1-5 logged, checkpoint at 4: step 5 is redone
    leftover = work / "checkpoints" / ".iter_0000006.pt.tmp-99999"
    leftover.write_bytes(b"half a checkpoint")
    _trainer(_cfg(work)).train(resume=True)
    assert [r["step"] for r in read_metrics(work) if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert not leftover.exists()


def test_a_full_disk_names_enospc_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    work = tmp_path / "run"
    real_save, calls = torch.save, []

    def full_on_second(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_on_second)
    with pytest.raises(OSError, match=r"iter_0000004\.pt.*ENOSPC.*previous checkpoints are kept") as info:
        _trainer(_cfg(work)).train()
    assert info.value.errno == errno.ENOSPC
    monkeypatch.setattr(torch, "save", real_save)
    assert [p.name for p in (work / "checkpoints").iterdir()] == ["iter_0000002.pt"]
    assert load_checkpoint(work / "checkpoints" / "iter_0000002.pt")["step"] == 2


def test_an_unwritable_work_dir_fails_before_the_model_is_built(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    built = []
    with pytest.raises(OSError, match=r"a-file/run is not writable"):
        Trainer(
            _cfg(blocker / "run"),
            model_factory=lambda _: built.append(1) or StandIn(),
            datasets={"depth": _dataset()},
            evaluate=False,
        )
    assert built == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a GPU")
@pytest.mark.parametrize(
    "argv",
    [
        ["train", "cpu_depth_tiny", "--device", "cuda"],
        ["eval", "cpu_depth_tiny", "--checkpoint", "c.pt", "--device", "cuda"],
        ["predict", "--checkpoint", "c.pt", "IMAGE", "--device", "cuda"],
    ],
)
def test_device_cuda_without_a_gpu_is_one_line(argv, tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (32, 32)).save(tmp_path / "room.png")
    argv = [str(tmp_path / "room.png") if a == "IMAGE" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ait: error:") and "CUDA is not available" in err[0]


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    import ait.cli

    def broken(args):
        raise KeyError("boom")

    monkeypatch.setitem(ait.cli._COMMANDS, "configs", broken)
    assert main(["configs"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unexpected KeyError" in err[0] and "--debug" in err[0]
    with pytest.raises(KeyError):
        main(["--debug", "configs"])


def test_eval_json_has_no_nan():
    from ait.cli import _json_safe

    text = json.dumps(_json_safe({"segm": {"AP": float("nan")}, "d1": 0.5}), allow_nan=False)
    assert json.loads(text) == {"segm": {"AP": None}, "d1": 0.5}


@pytest.mark.parametrize(
    ("size", "mode", "message"),
    [((1, 1), "RGB", "at least 16 pixels"), ((12, 40), "RGB", "at least 16 pixels"),
     ((9000, 8000), "L", "at most 64 megapixels")],
)  # fmt: skip
def test_predict_refuses_images_too_small_or_too_large_before_loading(tmp_path, capsys, size, mode, message):
    from PIL import Image

    image = tmp_path / "room.png"
    Image.new(mode, size).save(image)
    # the checkpoint does not exist: the image is checked first, so the error names the image
    assert main(["predict", "--checkpoint", str(tmp_path / "none.pt"), str(image)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "room.png" in err[0] and message in err[0]


def test_a_checkpoint_with_missing_parts_is_a_value_error(tmp_path):
    path = tmp_path / "iter_0000001.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "step": 1}, path)
    with pytest.raises(
        ValueError, match=r"iter_0000001\.pt is incomplete: missing or malformed \['config', 'model'\]"
    ):
        load_checkpoint(path)
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*iter_0000001\.pt"):
        load_checkpoint(path)


def test_an_empty_depth_split_is_an_error_not_nan(nan_checkpoint):
    from ait.config.schema import EvalConfig
    from ait.evaluation import evaluate_depth

    _, _, model, _ = nan_checkpoint
    with pytest.raises(ValueError, match="evaluation split is empty"):
        evaluate_depth(model, [], EvalConfig())
