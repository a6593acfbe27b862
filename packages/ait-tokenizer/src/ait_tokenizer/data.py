"""Training/validation data for the tokenizers, as torch datasets of ``{"x": (1,H,W), ...}`` float tensors.

- depth maps: synthetic rooms (``depth`` with sensor holes, plus ``depth_complete`` for scoring completion),
  or NYUv2 (the paper's recipe: columns 41..600, horizontal flip, random crop);
- instance masks: maskcoco ``.npz`` files, or box crops of the synthetic rooms' instances (the same
  crop-and-resize as maskcoco).

Augmentation draws from a generator seeded by (seed, epoch, index), so a sample is the same whichever
process or worker loads it and whenever it is loaded (exact resume).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

# The paper crops NYU maps to these columns before its random 480x480 crop (the border has no depth).
NYU_COLUMNS = (41, 601)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def random_crop(array: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    height, width = array.shape[-2:]
    if height < size[0] or width < size[1]:
        raise ValueError(f"map of size {height}x{width} is smaller than the crop {size[0]}x{size[1]}")
    top = int(rng.integers(0, height - size[0] + 1))
    left = int(rng.integers(0, width - size[1] + 1))
    return array[..., top : top + size[0], left : left + size[1]]


def downscale_nearest(depth: np.ndarray, short_side: int) -> np.ndarray:
    """Nearest-neighbour resize so the short side is ``short_side``: invalid zeros stay zeros, unmixed."""
    height, width = depth.shape
    scale = short_side / min(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    tensor = torch.from_numpy(np.ascontiguousarray(depth))[None, None]
    return F.interpolate(tensor, size=size, mode="nearest")[0, 0].numpy()


class AugmentedDataset(Dataset):
    """Base: ``set_epoch`` before each epoch so the augmentation draws change with the epoch."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class SyntheticDepthMaps(AugmentedDataset):
    """Synthetic rooms rendered at ``size``: ``x`` = depth with holes, ``complete`` = depth without holes."""

    def __init__(
        self,
        length: int,
        size: tuple[int, int],
        split: str = "train",
        data_seed: int = 0,
        flip: bool = True,
        cache: bool = False,
    ):
        super().__init__(data_seed)
        from ait_data import SyntheticRooms

        self.rooms = SyntheticRooms(length=length, height=size[0], width=size[1], seed=data_seed, split=split)
        self.flip = flip
        # Rendering costs milliseconds per map; a cache renders each once instead of once per epoch.
        self.cache = [self._render(i) for i in range(length)] if cache else None

    def _render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.rooms[index]
        return sample["depth"], sample["depth_complete"]

    def __len__(self) -> int:
        return len(self.rooms)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        depth, complete = self.cache[index] if self.cache is not None else self._render(index)
        if self.flip and sample_rng(self.seed, self.epoch, index).random() < 0.5:
            depth, complete = depth[:, ::-1], complete[:, ::-1]
        return {
            "x": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None],
            "complete": torch.from_numpy(np.ascontiguousarray(complete, dtype=np.float32))[None],
        }


class NYUDepthMaps(AugmentedDataset):
    """NYUv2 depth: the paper's column crop (41..600), optional nearest downscale, horizontal flip, random
    crop to ``size`` (training); validation takes the centre crop without flip."""

    def __init__(
        self,
        root: str,
        split_file: str,
        split: str,
        size: tuple[int, int],
        train: bool = True,
        short_side: int | None = None,
        columns: tuple[int, int] | None = NYU_COLUMNS,
        seed: int = 0,
    ):
        super().__init__(seed)
        from ait_data import NYUDepthV2

        self.frames = NYUDepthV2(root, split_file, split=split)
        self.size, self.train, self.short_side, self.columns = size, train, short_side, columns

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        depth = self.frames[index]["depth"]
        if self.columns is not None:
            depth = depth[:, self.columns[0] : self.columns[1]]
        if self.short_side is not None:
            depth = downscale_nearest(depth, self.short_side)
        if self.train:
            rng = sample_rng(self.seed, self.epoch, index)
            if rng.random() < 0.5:
                depth = depth[:, ::-1]
            depth = random_crop(depth, self.size, rng)
        else:
            top = (depth.shape[0] - self.size[0]) // 2
            left = (depth.shape[1] - self.size[1]) // 2
            if top < 0 or left < 0:
                raise ValueError(f"map of size {depth.shape} is smaller than the crop {self.size}")
            depth = depth[top : top + self.size[0], left : left + self.size[1]]
        return {"x": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None]}


class MaskCrops(AugmentedDataset):
    """Binary 64x64 instance crops as ``x`` in {0, 1} (float)."""

    def __init__(self, masks: np.ndarray, flip: bool = False, seed: int = 0):
        super().__init__(seed)
        self.masks = np.ascontiguousarray(masks, dtype=np.uint8)
        self.flip = flip

    @classmethod
    def from_maskcoco(cls, npz_path: str, flip: bool = False, seed: int = 0) -> MaskCrops:
        from ait_data import MaskCoco

        return cls(MaskCoco(npz_path).masks, flip, seed)

    @classmethod
    def from_synthetic(
        cls,
        rooms: int,
        split: str = "train",
        data_seed: int = 0,
        room_size: int = 128,
        crop_size: int = 64,
        flip: bool = False,
    ) -> MaskCrops:
        return cls(synthetic_instance_crops(rooms, split, data_seed, room_size, crop_size), flip, data_seed)

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        mask = self.masks[index]
        if self.flip and sample_rng(self.seed, self.epoch, index).random() < 0.5:
            mask = mask[:, ::-1]
        return {"x": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]}


def synthetic_instance_crops(
    rooms: int,
    split: str = "train",
    data_seed: int = 0,
    room_size: int = 128,
    crop_size: int = 64,
    min_box: int = 2,
) -> np.ndarray:
    """uint8 (N, crop_size, crop_size) box crops of every instance in ``rooms`` synthetic rooms (maskcoco recipe)."""
    from ait_data import SyntheticRooms
    from ait_data.maskcoco import crop_and_resize

    dataset = SyntheticRooms(length=rooms, height=room_size, width=room_size, seed=data_seed, split=split)
    crops = []
    for index in range(len(dataset)):
        sample = dataset[index]
        for mask, box in zip(sample["masks"], sample["boxes"]):
            x1, y1, x2, y2 = (round(float(v)) for v in box)
            if x2 - x1 < min_box or y2 - y1 < min_box:
                continue
            crops.append(crop_and_resize(mask, (x1, y1, x2, y2), crop_size))
    return np.stack(crops) if crops else np.zeros((0, crop_size, crop_size), np.uint8)


def coco_instance_crops(ann_file: str, crop_size: int = 64, min_box: int = 2) -> np.ndarray:
    """uint8 (N, crop_size, crop_size) maskcoco crops of a COCO annotation file (non-crowd, boxes >= 2 px)."""
    import tempfile
    from pathlib import Path

    from ait_data import MaskCoco, build_maskcoco

    with tempfile.TemporaryDirectory() as folder:
        path = build_maskcoco(
            ann_file, Path(folder) / "crops.npz", size=crop_size, min_box=min_box, progress=False
        )
        return MaskCoco(path).masks


def stack_batch(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}
