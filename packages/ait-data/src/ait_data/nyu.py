"""NYU Depth V2 readers: the BTS/GLPDepth split-file layout, and the labeled ``.mat`` file (via h5py).

Split-file layout (as BTS and GLPDepth ship it): each line is ``<rgb> <depth> [focal]`` with paths relative
to a base folder, e.g. ``/basement_0001a/rgb_00000.jpg /basement_0001a/sync_depth_00000.png 518.8579``.
Depth PNGs are uint16 millimetres (0 = invalid), read as metres (÷ 1000).

Base folder: the listed paths are looked up under ``root``; if ``root`` holds the original's sub-folders,
``root/sync`` is used for ``split="train"`` and ``root/official_splits/test`` for ``split="test"`` (so
``root`` may be the ``nyu_depth_v2`` folder GLPDepth expects).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ait_data.io import read_depth_png, read_rgb

SPLITS = ("train", "test")
_SPLIT_SUBDIRS = {"train": ("sync",), "test": ("official_splits", "test")}


def _read_split_text(split_file: Path) -> str:
    """A split file's text; one that is not text (a binary or non-UTF-8 file) is named, not a codec error."""
    try:
        return Path(split_file).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"split file {split_file} is not UTF-8 text (byte {error.start}): give the text file of "
            "'<rgb> <depth> [focal]' lines"
        ) from error


def parse_split_file(split_file: Path) -> list[tuple[str, str]]:
    """(rgb, depth) relative paths of every non-empty line."""
    pairs = []
    for number, line in enumerate(_read_split_text(split_file).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise ValueError(f"{split_file}:{number}: expected '<rgb> <depth> [focal]', got {line!r}")
        pairs.append((fields[0].lstrip("/"), fields[1].lstrip("/")))
    return pairs


class NYUDepthV2(Dataset):
    """NYUv2 RGB-D pairs. Samples: ``image`` uint8 (H,W,3), ``depth`` float32 (H,W) metres (0 = invalid),
    ``image_id`` (the index), ``rgb_path``.

    ``NYUDepthV2(root, split_file, split)`` reads the BTS/GLPDepth layout. If ``root`` is the labeled
    ``nyu_depth_v2_labeled.mat`` (HDF5, needs the ``h5`` extra), the frames come from its ``images`` /
    ``depths`` arrays instead; ``split_file`` is then optional and lists 1-based frame numbers (one per line,
    as the official ``splits.mat`` gives them), and ``indices`` may give 0-based frames directly.
    """

    def __init__(self, root, split_file=None, split: str = "train", indices=None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root, self.split = Path(root), split
        self._mat = None
        if self.root.suffix == ".mat":
            self._init_mat(split_file, indices)
            return
        if split_file is None:
            raise ValueError(
                "split_file is required for the split-file layout (only a .mat root can omit it)"
            )
        split_file = Path(split_file)
        if not split_file.is_file():
            raise FileNotFoundError(f"NYU split file not found: {split_file}")
        if not self.root.is_dir():
            raise FileNotFoundError(f"NYU root folder not found: {self.root}")
        base = self.root.joinpath(*_SPLIT_SUBDIRS[split])
        self.base = base if base.is_dir() else self.root
        self.pairs = [(self.base / rgb, self.base / depth) for rgb, depth in parse_split_file(split_file)]
        missing = [p for pair in self.pairs for p in pair if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} file(s) listed in {split_file} are missing under {self.base}; first: {missing[0]}"
            )

    def _init_mat(self, split_file, indices) -> None:
        try:
            import h5py
        except ImportError as err:  # optional dependency
            raise ImportError(
                "reading the labeled NYU .mat file needs h5py: pip install 'ait-data[h5]'"
            ) from err
        if not self.root.is_file():
            raise FileNotFoundError(f"NYU labeled .mat file not found: {self.root}")
        self._mat_path = self.root
        with h5py.File(self.root, "r") as f:
            for key in ("images", "depths"):
                if key not in f:
                    raise ValueError(f"{self.root} has no '{key}' dataset (keys: {sorted(f.keys())})")
            n, channels = f["images"].shape[0], f["images"].shape[1]
            if f["images"].ndim != 4 or channels != 3 or f["depths"].shape[0] != n:
                raise ValueError(
                    f"{self.root}: expected images (N,3,W,H) and depths (N,W,H), "
                    f"got {f['images'].shape} and {f['depths'].shape}"
                )
        if indices is None and split_file is not None:
            lines = _read_split_text(split_file).split()
            indices = [int(v) - 1 for v in lines]
        self.frames = list(range(n)) if indices is None else [int(i) for i in indices]
        bad = [i for i in self.frames if not 0 <= i < n]
        if bad:
            raise ValueError(f"frame indices must be in [0, {n}), got {bad[:5]}")
        self.pairs = None

    def __len__(self) -> int:
        return len(self.frames) if self.pairs is None else len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for NYUDepthV2 of length {len(self)}")
        if self.pairs is None:
            return self._mat_item(index)
        rgb_path, depth_path = self.pairs[index]
        image, depth = read_rgb(rgb_path), read_depth_png(depth_path)
        if image.shape[:2] != depth.shape:
            raise ValueError(
                f"RGB {rgb_path} is {image.shape[:2]} but depth {depth_path} is {depth.shape}: they must match"
            )
        return {"image": image, "depth": depth, "image_id": index, "rgb_path": str(rgb_path)}

    def _mat_item(self, index: int) -> dict[str, Any]:
        import h5py

        if self._mat is None:  # opened lazily, once per process (DataLoader workers each open their own)
            self._mat = h5py.File(self._mat_path, "r")
        frame = self.frames[index]
        # MATLAB stores column-major, so h5py sees (3, W, H) and (W, H): transpose back to (H, W).
        image = np.ascontiguousarray(self._mat["images"][frame].transpose(2, 1, 0)).astype(np.uint8)
        depth = np.ascontiguousarray(self._mat["depths"][frame].T).astype(np.float32)
        return {"image": image, "depth": depth, "image_id": frame, "rgb_path": f"{self._mat_path}:{frame}"}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_mat"] = None  # h5py handles do not pickle; reopen in the worker
        return state
