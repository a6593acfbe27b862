import pytest
import torch
from safetensors.torch import save_file

from ait_tokenizer import create_tokenizer, load_tokenizer, read_metadata, save_tokenizer


def test_round_trip_keeps_weights_codebook_config_and_extra(tmp_path):
    torch.manual_seed(0)
    tokenizer = create_tokenizer("mask-small", dead_code_threshold=0.25).train()
    tokenizer(torch.rand(4, 1, 64, 64))  # k-means init + one EMA step: buffers differ from a fresh model
    path = save_tokenizer(tokenizer, tmp_path / "tok.safetensors", extra={"step": 3})

    loaded = load_tokenizer(path, expected_preset="mask-small")
    assert loaded.config == tokenizer.config
    assert loaded.config.dead_code_threshold == 0.25
    for (name, a), (_, b) in zip(tokenizer.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.rand(2, 1, 64, 64)
    tokenizer.eval()
    assert torch.equal(loaded.encode(x), tokenizer.encode(x))
    assert read_metadata(path)["extra"] == {"step": 3}
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_wrong_preset_is_a_clear_error(tmp_path):
    path = save_tokenizer(create_tokenizer("depth-small"), tmp_path / "depth.safetensors")
    with pytest.raises(ValueError, match="'depth-small', expected 'mask-small'"):
        load_tokenizer(path, expected_preset="mask-small")


def test_files_that_are_not_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        load_tokenizer(tmp_path / "missing.safetensors")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a safetensors tokenizer checkpoint"):
        load_tokenizer(text)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not an ait-tokenizer checkpoint"):
        load_tokenizer(foreign)


def test_overwrite_is_atomic_replacement(tmp_path):
    path = tmp_path / "tok.safetensors"
    save_tokenizer(create_tokenizer("depth-small"), path, extra={"v": 1})
    save_tokenizer(create_tokenizer("depth-small"), path, extra={"v": 2})
    assert read_metadata(path)["extra"] == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok.safetensors"]
