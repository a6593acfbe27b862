"""Tokenizer checkpoints: safetensors weights with the preset and config in the metadata."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ait_tokenizer.model import TokenizerConfig, VQVAETokenizer
from ait_tokenizer.original import is_safetensors_file as _is_safetensors

FORMAT = "ait-tokenizer"
FORMAT_VERSION = "1"


def save_tokenizer(tokenizer: VQVAETokenizer, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``tokenizer`` to ``path`` atomically (a temporary file in the same folder, then os.replace).

    ``extra`` (JSON-serialisable) is stored beside the config, e.g. training step or scores.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in tokenizer.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "preset": tokenizer.preset or "",
        "config": json.dumps(tokenizer.config.to_dict()),
        "extra": json.dumps(extra or {}),
    }
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=metadata)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The checkpoint's metadata (config and extra decoded from JSON); ValueError for other files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a safetensors tokenizer checkpoint ({error})") from error
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not an {FORMAT} checkpoint (metadata format={metadata.get('format')!r}, expected {FORMAT!r})"
        )
    return {
        "preset": metadata.get("preset") or None,
        "config": json.loads(metadata["config"]),
        "extra": json.loads(metadata.get("extra", "{}")),
        "format_version": metadata.get("format_version"),
    }


def load_tokenizer(
    path: str | os.PathLike, expected_preset: str | None = None, map_location: str | torch.device = "cpu"
) -> VQVAETokenizer:
    """Rebuild the tokenizer stored at ``path``; ValueError if its preset is not ``expected_preset``.

    Also reads the original release's VQ-VAE files (``torch.save({'weights': ...})``), recognised by
    content, not by file name (see ``ait_tokenizer.original``).
    """
    if Path(path).is_file() and not _is_safetensors(path):
        from ait_tokenizer.original import load_original_tokenizer

        return load_original_tokenizer(path, expected_preset, map_location)
    metadata = read_metadata(path)
    if expected_preset is not None and metadata["preset"] != expected_preset:
        raise ValueError(
            f"checkpoint {path} holds tokenizer preset {metadata['preset']!r}, expected {expected_preset!r}"
        )
    config = metadata["config"]
    config["channels"] = tuple(config["channels"])
    config["input_size"] = tuple(config["input_size"])
    tokenizer = VQVAETokenizer(TokenizerConfig.from_dict(config))
    tokenizer.load_state_dict(load_file(str(path), device=str(map_location)))
    return tokenizer.to(map_location).eval()
