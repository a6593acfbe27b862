"""Faults of tokenizer training and checkpoints (issue 12): each test here failed on the code before the fix.

- a crafted train_state.pt is refused, never executed (it was loaded with weights_only=False);
- a crash between the two files of a save leaves a state that resumes bit-identically (it left weights of
  step N with the optimizer of step N-1);
- a diverging run stops naming the step and saves no inf/NaN weights; load_tokenizer refuses them;
- a batch size that trains nothing is an error naming batch_size (it wrote an untrained final checkpoint);
- resuming a folder that holds a run of another config is an error.
"""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, safe_open, save_file

from ait_tokenizer import create_tokenizer, load_tokenizer, save_tokenizer
from ait_tokenizer.train import (
    FINAL_CHECKPOINT,
    LAST_CHECKPOINT,
    METRICS_FILE,
    STATE_FILE,
    NonFiniteTrainingError,
    TokenizerTrainConfig,
    main,
    train_tokenizer,
)

TINY = {
    "tokenizer": "depth-small",
    "train_size": 8,
    "val_size": 1,
    "batch_size": 4,
    "val_every": 0,
    "checkpoint_every": 2,
    "log_every": 1,
    "progress": False,
    "device": "cpu",
}


class _Payload:
    """Unpickling this runs `open(marker, "w")`: the marker file's existence proves code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _weights(path):
    return load_tokenizer(path).state_dict()


def test_a_crafted_train_state_is_refused_and_never_executed(tmp_path):
    out, marker = tmp_path / "run", tmp_path / "pwned"
    out.mkdir()
    torch.save({"step": 1, "optimizer": _Payload(marker), "history": [], "config": {}}, out / STATE_FILE)
    with pytest.raises(ValueError, match=rf"{STATE_FILE}.*--no-resume"):
        train_tokenizer(TokenizerTrainConfig(max_steps=1, **TINY), out)
    assert not marker.exists()


class _Crash(BaseException):
    """Stands for a kill: nothing after it runs, no `except Exception` cleanup catches it."""


def test_a_crash_inside_a_save_resumes_bit_identically(tmp_path, monkeypatch):
    cfg = TokenizerTrainConfig(max_steps=4, **TINY)
    straight = train_tokenizer(cfg, tmp_path / "straight")

    real_save, calls = torch.save, []

    def crash_on_second_save(obj, f, *args, **kwargs):  # the save at step 4 (the first is step 2)
        calls.append(1)
        if len(calls) == 2:
            raise _Crash
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", crash_on_second_save)
    with pytest.raises(_Crash):
        train_tokenizer(cfg, tmp_path / "crashed")
    monkeypatch.setattr(torch, "save", real_save)
    resumed = train_tokenizer(cfg, tmp_path / "crashed")

    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the crashed save's temporary file is gone, and every step is logged once
    assert not [p.name for p in (tmp_path / "crashed").iterdir() if p.name.endswith(".tmp")]
    lines = (tmp_path / "crashed" / METRICS_FILE).read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines if "val" not in json.loads(line)]
    assert steps == [1, 2, 3, 4]


def test_a_diverging_run_stops_and_saves_no_non_finite_weights(tmp_path):
    cfg = TokenizerTrainConfig(max_steps=4, **{**TINY, "lr": 1e30, "checkpoint_every": 1})
    with pytest.raises(NonFiniteTrainingError, match=r"diverged at step \d") as info:
        train_tokenizer(cfg, tmp_path)
    assert not (tmp_path / FINAL_CHECKPOINT).exists()
    if (tmp_path / LAST_CHECKPOINT).exists():  # a checkpoint before the divergence is finite
        assert all(torch.isfinite(t).all() for t in _weights(tmp_path / LAST_CHECKPOINT).values())
    assert info.value.step >= 1


def test_non_finite_weights_are_refused_on_save_and_on_load(tmp_path):
    tokenizer = create_tokenizer("depth-small")
    path = save_tokenizer(tokenizer, tmp_path / "good.safetensors")
    tensors = load_file(str(path))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name][0] = float("nan")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match=rf"nan\.safetensors.*non-finite.*{name}"):
        load_tokenizer(tmp_path / "nan.safetensors")
    with torch.no_grad():
        next(tokenizer.parameters()).fill_(float("inf"))
    with pytest.raises(ValueError, match=r"refusing to save.*non-finite"):
        save_tokenizer(tokenizer, tmp_path / "inf.safetensors")
    assert not (tmp_path / "inf.safetensors").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch_size", -4), ("batch_size", 0), ("epochs", 0), ("lr", -1.0), ("lr", float("nan")), ("decay_factor", 2.0),
     ("max_steps", 0), ("optimizer", "sgd")],
)  # fmt: skip
def test_values_that_cannot_train_are_errors_naming_the_field(tmp_path, field, value):
    cfg = TokenizerTrainConfig(**{**TINY, "max_steps": 1, field: value})
    with pytest.raises(ValueError, match=rf"{field}="):
        train_tokenizer(cfg, tmp_path)
    assert not (tmp_path / FINAL_CHECKPOINT).exists()


def test_command_line_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--out", str(tmp_path), "--batch-size", "-4", "--no-progress"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ait: error:") and "batch_size=-4" in err[0]
    assert not (tmp_path / FINAL_CHECKPOINT).exists()


def test_resuming_a_folder_of_another_config_is_an_error(tmp_path):
    cfg = TokenizerTrainConfig(max_steps=2, **TINY)
    train_tokenizer(cfg, tmp_path)
    with pytest.raises(ValueError, match=r"another config.*seed: 0 \(saved\) vs 1 \(now\)"):
        train_tokenizer(dataclasses.replace(cfg, seed=1, max_steps=3), tmp_path)
    # --no-resume replaces that run: its files are cleared, the metrics start again
    train_tokenizer(dataclasses.replace(cfg, seed=1, resume=False), tmp_path)
    steps = [json.loads(line).get("step") for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert steps[:2] == [1, 2] and steps.count(1) == 1


def test_inputs_of_the_wrong_type_are_value_errors():
    import numpy as np

    tokenizer = create_tokenizer("depth-small")
    with pytest.raises(ValueError, match=r"x must be a torch\.Tensor"):
        tokenizer.encode(np.zeros((1, 1, 64, 64), np.float32))
    with pytest.raises(ValueError, match="floating-point"):
        tokenizer(torch.zeros(1, 1, 64, 64, dtype=torch.int64))


def test_a_checkpoint_with_malformed_metadata_is_a_value_error(tmp_path):
    path = save_tokenizer(create_tokenizer("depth-small"), tmp_path / "t.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    save_file(tensors, str(tmp_path / "noconfig.safetensors"), metadata={**metadata, "config": "{oops"})
    with pytest.raises(ValueError, match=r"noconfig\.safetensors: malformed tokenizer metadata"):
        load_tokenizer(tmp_path / "noconfig.safetensors")
    del tensors[next(iter(tensors))]
    save_file(tensors, str(tmp_path / "missing.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match=r"missing\.safetensors: the weights do not fit"):
        load_tokenizer(tmp_path / "missing.safetensors")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a GPU")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--out", str(tmp_path), "--device", "cuda", "--no-progress"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ait: error:") and "CUDA is not available" in err[0]
