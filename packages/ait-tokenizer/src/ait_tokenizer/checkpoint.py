"""Tokenizer checkpoints: safetensors weights with the preset and config in the metadata."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ait_tokenizer.model import TokenizerConfig, VQVAETokenizer
from ait_tokenizer.original import is_safetensors_file as _is_safetensors

FORMAT = "ait-tokenizer"
FORMAT_VERSION = "1"

# Fault-injection hook for the kill -9 tests: "PHASE" or "PHASE@STEP" makes this process SIGKILL itself when
# a save reaches that phase (see fault_point); unset in normal use.
KILL_AT_ENV = "AIT_KILL_AT"


def fault_point(phase: str, step: int | None = None) -> None:
    """SIGKILL this process if AIT_KILL_AT names ``phase`` (and, with ``@STEP``, this ``step``)."""
    target = os.environ.get(KILL_AT_ENV)
    if not target:
        return
    name, _, at = target.partition("@")
    if name == phase and (not at or (step is not None and int(at) == step)):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


class _RecordingWriter:
    """File wrapper for torch.save: torch's zip writer turns a failed write (ENOSPC) into a RuntimeError
    ("unexpected pos"); this keeps the OSError so the caller can report what really happened."""

    def __init__(self, handle):
        self.handle, self.error = handle, None

    def write(self, data):
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def torch_save_to(obj, handle) -> None:
    """``torch.save(obj, handle)``; a failed write is raised as its OSError (errno kept), not a RuntimeError."""
    writer = _RecordingWriter(handle)
    try:
        torch.save(obj, writer)
    except RuntimeError as error:
        if writer.error is not None:
            raise writer.error from error
        raise


def check_finite(tensors: dict, source: str | os.PathLike) -> None:
    """ValueError naming ``source`` and the first tensors holding NaN or inf (a diverged or corrupted model)."""
    bad = [
        name
        for name, tensor in tensors.items()
        if isinstance(tensor, torch.Tensor)
        and tensor.is_floating_point()
        and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise ValueError(
            f"{source}: non-finite weights (NaN or inf) in {shown}; the model diverged or the file is "
            "corrupted: use an earlier checkpoint or retrain with a lower learning rate"
        )


def save_tokenizer(tokenizer: VQVAETokenizer, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``tokenizer`` to ``path`` atomically (a temporary file in the same folder, then os.replace).

    ``extra`` (JSON-serialisable) is stored beside the config, e.g. training step or scores.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in tokenizer.state_dict().items()}
    check_finite(tensors, f"refusing to save {path}")
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
        fault_point("tokenizer-file:temp-written")
        os.replace(temporary, path)
    except SafetensorError as error:  # e.g. "I/O error: No space left on device (os error 28)"
        Path(temporary).unlink(missing_ok=True)
        found = re.search(r"os error (\d+)", str(error))
        if found:
            code = int(found.group(1))
            raise OSError(code, f"cannot write {path}: {os.strerror(code)}") from error
        raise
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
    try:
        return {
            "preset": metadata.get("preset") or None,
            "config": json.loads(metadata["config"]),
            "extra": json.loads(metadata.get("extra", "{}")),
            "format_version": metadata.get("format_version"),
        }
    except (KeyError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path}: malformed tokenizer metadata ({type(error).__name__}: {error}); re-save the tokenizer"
        ) from error


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
    try:
        config["channels"] = tuple(config["channels"])
        config["input_size"] = tuple(config["input_size"])
        tokenizer = VQVAETokenizer(TokenizerConfig.from_dict(config))
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: the stored tokenizer config is malformed ({error})") from error
    tensors = load_file(str(path), device=str(map_location))
    check_finite(tensors, path)
    try:
        tokenizer.load_state_dict(tensors)
    except RuntimeError as error:
        raise ValueError(f"{path}: the weights do not fit its stored config ({error})") from error
    return tokenizer.to(map_location).eval()
