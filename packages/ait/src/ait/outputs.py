"""Guards for what a command writes: an output never replaces one of the command's inputs or a checkpoint.

``ait eval --out run/checkpoints/iter_0000600.pt`` used to replace the checkpoint with a few hundred bytes
of JSON; every command that takes an output path checks it here before any work is done.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

# suffixes of the files a run cannot do without: weights, training states, the original's releases
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors", ".ckpt", ".bin")

__all__ = ["CHECKPOINT_SUFFIXES", "check_output_file"]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist: compare the paths they name
        return a.resolve() == b.resolve()


def check_output_file(out: str | os.PathLike, flag: str, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """``out`` as a Path, or ValueError naming ``flag`` when writing it would destroy something.

    Refused: one of ``inputs`` (or a file inside an input folder's ``checkpoints/``), any existing file with
    a checkpoint suffix, and an existing folder.
    """
    path = Path(out)
    for given in inputs:
        source = Path(given)
        if _same_file(path, source):
            raise ValueError(f"{flag} {path} is this command's input {source}: choose another {flag}")
        if source.is_dir() and path.resolve().is_relative_to(source.resolve() / "checkpoints"):
            raise ValueError(
                f"{flag} {path} lies among the checkpoints of the run {source}: choose another {flag}"
            )
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder: name a file, e.g. {path / 'metrics.json'}")
    if path.exists() and path.suffix.lower() in CHECKPOINT_SUFFIXES:
        raise ValueError(
            f"{flag} {path} is an existing checkpoint file: it is never replaced; choose another {flag}"
        )
    return path
