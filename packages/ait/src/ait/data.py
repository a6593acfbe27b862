"""Datasets and sample streams of a run, built from `DataConfig` with `ait_data`.

Training draws, per task, an endless stream of samples: epoch `e` of a task is a permutation seeded by
(seed, task, e), and *global* batches are consecutive slices of that stream. Each rank takes its contiguous
share of every global batch, so a 2-process run trains on exactly the images a 1-process run does, and the
whole data order is one integer per task (the stream position), which checkpoints store for `--resume`.

Augmentation randomness is drawn per sample from a generator seeded by (seed, task, stream position), not
from a process-global RNG, so it does not depend on which rank or worker renders the sample either. Instance
samples carry that seed as "sequence_seed": the instance head draws the sample's sequence randomness
(Pix2Seq padding, class corruption) from it, so a 2-process run builds the very sequences a 1-process run does.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ait.config.schema import Config

__all__ = [
    "CachedDataset",
    "TaskStream",
    "TaskStreams",
    "TransformedDataset",
    "build_eval_dataset",
    "build_eval_loader",
    "build_raw_dataset",
    "build_task_streams",
    "build_train_dataset",
    "coco_ground_truth",
    "rank_share",
    "task_can_be_absent",
]

COCO_TASKS = ("insseg", "det")


def _task_code(task: str) -> int:
    return zlib.crc32(task.encode()) & 0xFFFF


# ----------------------------------------------------------------------------------------------------------
# raw datasets


def _require(path: Path, what: str, key: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path} (set it with --cfg-options {key}=...)")
    return path


def _nyu(cfg: Config, split: str) -> Dataset:
    from ait_data import NYUDepthV2

    d = cfg.data
    if d.nyu_root is None:
        raise FileNotFoundError(
            "data.nyu_root is not set: pass --cfg-options data.nyu_root=/path/to/nyu_depth_v2"
        )
    root = _require(Path(d.nyu_root), "NYUv2 root", "data.nyu_root")
    split_key = "data.nyu_train_split" if split == "train" else "data.nyu_test_split"
    split_file = d.nyu_train_split if split == "train" else d.nyu_test_split
    if split_file is None:
        raise FileNotFoundError(f"{split_key} is not set: pass --cfg-options {split_key}=/path/to/split.txt")
    split_path = Path(split_file)
    if not split_path.is_absolute() and not split_path.exists():
        split_path = root / split_path
    _require(split_path, "NYUv2 split file", split_key)
    return NYUDepthV2(str(root), str(split_path), split="train" if split == "train" else "test")


def _coco(cfg: Config, split: str) -> Dataset:
    from ait_data import CocoInstances

    d = cfg.data
    if d.coco_root is None:
        raise FileNotFoundError("data.coco_root is not set: pass --cfg-options data.coco_root=/path/to/coco")
    root = _require(Path(d.coco_root), "COCO root", "data.coco_root")
    images, ann = (
        (d.coco_train_images, d.coco_train_ann) if split == "train" else (d.coco_val_images, d.coco_val_ann)
    )
    image_dir = _require(
        root / images,
        "COCO image folder",
        "data.coco_train_images" if split == "train" else "data.coco_val_images",
    )
    ann_file = _require(
        root / ann, "COCO annotation file", "data.coco_train_ann" if split == "train" else "data.coco_val_ann"
    )
    dataset = CocoInstances(str(image_dir), str(ann_file))
    if split == "train":
        drop_images_without_annotations(dataset)
    return dataset


def drop_images_without_annotations(dataset, min_size: int = 32) -> None:
    """Train only on images with at least one annotation (crowd regions count) and both sides >= `min_size`:
    mmdet's CocoDataset in training (filter_empty_gt=True, min_size=32), which the original trains with
    (COCO train2017: 117,266 of 118,287 images). Filters `dataset.image_ids` of a `CocoInstances` in place."""
    coco = dataset.coco
    with_annotations = {annotation["image_id"] for annotation in coco.anns.values()}
    dataset.image_ids = [
        image_id
        for image_id in dataset.image_ids
        if image_id in with_annotations
        and min(coco.imgs[image_id]["width"], coco.imgs[image_id]["height"]) >= min_size
    ]


def build_raw_dataset(cfg: Config, task: str, split: str) -> Dataset:
    """The reader for `task` ("depth"/"insseg"/"det") and `split` ("train"/"val"): numpy samples."""
    d = cfg.data
    if d.dataset == "synthetic":
        from ait_data import SyntheticRooms

        length = d.synthetic_train_length if split == "train" else d.synthetic_val_length
        height, width = d.image_size
        dataset = SyntheticRooms(
            length=length,
            height=height,
            width=width,
            seed=d.synthetic_seed,
            split=split,
            num_objects=tuple(d.synthetic_objects),
        )
        return CachedDataset(dataset) if d.cache else dataset
    if task == "depth":
        return _nyu(cfg, split)
    return _coco(cfg, split)


class CachedDataset(Dataset):
    """Keeps every rendered sample in memory (per process): small synthetic sets are rendered once."""

    def __init__(self, base: Dataset):
        self.base = base
        self._cache: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        if index not in self._cache:
            self._cache[index] = self.base[index]
        return self._cache[index]

    def __getattr__(self, name: str) -> Any:  # num_classes, categories, label_to_category_id, ...
        # dunders are not delegated: a base's `__getitems__` (torch Subset) would make DataLoader fetch
        # past this wrapper
        if name == "base" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.base, name)


# ----------------------------------------------------------------------------------------------------------
# transforms


def _transform(cfg: Config, task: str, train: bool) -> Callable[[dict], dict]:
    from ait_data import DepthTransform, InstanceTransform

    d = cfg.data
    if task == "depth":
        if train:
            # The training crop is part of the recipe (the head expects crop-sized inputs), so it stays
            # when augmentation is off; only flip, photometric jitter and CutDepth are switched off.
            return DepthTransform(
                train=True,
                crop=tuple(d.crop_size),
                cutdepth_every=4 if d.augment else 0,
                flip_p=0.5 if d.augment else 0.0,
                photometric_p=0.5 if d.augment else 0.0,
            )
        return DepthTransform(train=False, crop=None)
    canvas = cfg.model.canvas
    if train and d.augment:
        return InstanceTransform(train=True, canvas=canvas, scale_range=tuple(d.scale_range), normalize=True)
    return InstanceTransform(train=False, canvas=canvas, normalize=True)


@contextmanager
def _seeded_global_rng(seed: int):
    """Run a block with python/numpy/torch global RNGs seeded by `seed`, then put the old states back."""
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002 (save/restore only)
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002
        # the CPU generator alone (the transforms run on the CPU): torch.manual_seed also queues a seed for
        # every accelerator not yet started, formatting a stack trace each time (about 2 % of a demo step)
        torch.default_generator.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


class TransformedDataset(Dataset):
    """`transform(base[index])` with augmentation randomness seeded per draw.

    Keys are an int index (seed from the index) or an `(index, draw)` pair, where `draw` is the stream
    position; the same key always gives the same sample, in any process.
    """

    def __init__(self, base: Dataset, transform: Callable[[dict], dict], seed: int, task: str):
        self.base, self.transform, self.seed, self.task = base, transform, int(seed), task

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, draw = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), int(key))
        sample = self.base[index]
        seed = zlib.crc32(f"{self.seed}:{self.task}:{draw}".encode())
        if hasattr(self.transform, "count"):
            # DepthTransform's "CutDepth on every 4th sample" counts calls; count stream positions instead,
            # so which samples get it does not depend on the process or on a resume
            self.transform.count = draw
        with _seeded_global_rng(seed):
            out = self.transform(sample)
        if self.task in COCO_TASKS and isinstance(out, dict):
            # the instance head seeds this sample's sequence randomness (padding objects, jitter, class
            # corruption) with it, so a sequence depends on the draw only, not on the rank that builds it
            out["sequence_seed"] = seed
        return out

    def __getattr__(self, name: str) -> Any:
        # dunders are not delegated: a base's `__getitems__` (torch Subset) would make DataLoader fetch the
        # base's samples directly, skipping the transform
        if name in ("base", "transform", "seed", "task") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.base, name)


def build_train_dataset(cfg: Config, task: str) -> TransformedDataset:
    return TransformedDataset(
        build_raw_dataset(cfg, task, "train"), _transform(cfg, task, True), cfg.seed, task
    )


def build_eval_dataset(cfg: Config, task: str) -> TransformedDataset:
    return TransformedDataset(
        build_raw_dataset(cfg, task, "val"), _transform(cfg, task, False), cfg.seed, task
    )


def _collate(samples: list[dict]) -> dict:
    from ait_data import collate

    return collate(samples)


def build_eval_loader(cfg: Config, task: str, rank: int = 0, world_size: int = 1) -> DataLoader:
    """Deterministic, unshuffled loader of the held-out split; with several ranks each gets a strided shard."""
    dataset = build_eval_dataset(cfg, task)
    indices = list(range(rank, len(dataset), world_size))
    return DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=cfg.data.eval_batch,
        shuffle=False,
        num_workers=cfg.data.num_workers,
        collate_fn=_collate,
    )


def coco_ground_truth(cfg: Config, dataset: Dataset | None = None) -> Any:
    """COCO ground truth of the instance eval split: an in-memory dict (synthetic) or the annotation path."""
    if cfg.data.dataset == "synthetic":
        from ait_data import to_coco_dict

        raw = build_raw_dataset(cfg, "insseg", "val") if dataset is None else dataset
        base = raw.base if isinstance(raw, CachedDataset) else raw
        return to_coco_dict(base, list(range(len(base))))
    return str(Path(cfg.data.coco_root) / cfg.data.coco_val_ann)


# ----------------------------------------------------------------------------------------------------------
# training streams


def rank_share(global_batch: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) offsets of `rank`'s contiguous share of a global batch (sizes differ by at most one)."""
    start = rank * global_batch // world_size
    stop = (rank + 1) * global_batch // world_size
    return start, stop


class TaskStream:
    """Endless seeded sample order of one task; `position` counts global samples consumed so far."""

    def __init__(
        self, length: int, global_batch: int, seed: int, task: str, rank: int = 0, world_size: int = 1
    ):
        if length < 1:
            raise ValueError(f"{task}: the training set is empty")
        if global_batch < 1:
            raise ValueError(f"{task}: global batch must be >= 1, got {global_batch}")
        self.length, self.global_batch, self.seed, self.task = length, global_batch, seed, task
        self.rank, self.world_size = rank, world_size
        self.position = 0
        self._epoch_cache: tuple[int, list[int]] | None = None

    def _permutation(self, epoch: int) -> list[int]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            generator = torch.Generator().manual_seed(
                self.seed * 1_000_003 + _task_code(self.task) * 7919 + epoch
            )
            self._epoch_cache = (epoch, torch.randperm(self.length, generator=generator).tolist())
        return self._epoch_cache[1]

    def keys_at(self, position: int) -> list[tuple[int, int]]:
        """This rank's (index, draw) keys of the global batch starting at `position`."""
        start, stop = rank_share(self.global_batch, self.rank, self.world_size)
        keys = []
        for draw in range(position + start, position + stop):
            epoch, offset = divmod(draw, self.length)
            keys.append((self._permutation(epoch)[offset], draw))
        return keys

    def next_keys(self) -> list[tuple[int, int]]:
        keys = self.keys_at(self.position)
        self.position += self.global_batch
        return keys

    @property
    def epoch(self) -> int:
        return self.position // self.length


class _StreamBatches(torch.utils.data.Sampler):
    """Batch sampler over a stream from a fixed position (DataLoader workers prefetch ahead of it)."""

    def __init__(self, stream: TaskStream, start: int):
        self.stream, self.start = stream, start

    def __iter__(self):
        position = self.start
        while True:
            yield self.stream.keys_at(position)
            position += self.stream.global_batch

    def __len__(self) -> int:  # endless; DataLoader only needs it for len()
        return 2**62


class _IndexOnly(Dataset):
    def __init__(self, base: Sequence | Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.base[key[0]]


class TaskStreams:
    """The per-task streams of a run: `next_batch()` -> {task: collated batch} for this rank.

    A task whose share on this rank is empty (e.g. 4 depth images over 8 ranks) is left out of the dict.
    """

    def __init__(
        self,
        datasets: dict[str, Dataset],
        batches: dict[str, int],
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ):
        # streams address samples by (index, draw); plain datasets (already transformed) take the index only
        self.datasets = {
            t: d if isinstance(d, TransformedDataset) else _IndexOnly(d) for t, d in datasets.items()
        }
        self.streams = {
            task: TaskStream(len(datasets[task]), batches[task], seed, task, rank, world_size)
            for task in datasets
        }
        self.num_workers = num_workers
        self._iterators: dict[str, Any] = {}

    def _loader_iterator(self, task: str):
        stream = self.streams[task]
        loader = DataLoader(
            self.datasets[task],
            batch_sampler=_StreamBatches(stream, stream.position),
            num_workers=self.num_workers,
            collate_fn=_collate,
            persistent_workers=False,
        )
        return iter(loader)

    def next_batch(self) -> dict[str, dict]:
        batch = {}
        for task, stream in self.streams.items():
            start, stop = rank_share(stream.global_batch, stream.rank, stream.world_size)
            if start == stop:
                # this rank's share of the task is empty at every step (4 NYU images over 8 ranks): no
                # loader at all, whose workers would hand `collate` an empty list
                stream.position += stream.global_batch
                continue
            if self.num_workers > 0:
                if task not in self._iterators:
                    self._iterators[task] = self._loader_iterator(task)
                batch[task] = next(self._iterators[task])
                stream.position += stream.global_batch
            else:
                batch[task] = _collate([self.datasets[task][k] for k in stream.next_keys()])
        return batch

    def images_per_step(self) -> int:
        """Global images consumed per `next_batch()` (all ranks, all tasks)."""
        return sum(s.global_batch for s in self.streams.values())

    def state_dict(self) -> dict[str, int]:
        return {task: stream.position for task, stream in self.streams.items()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if set(state) != set(self.streams):
            raise ValueError(f"data state has tasks {sorted(state)}, this run has {sorted(self.streams)}")
        for task, position in state.items():
            self.streams[task].position = int(position)
        self._iterators.clear()  # restart any worker-backed loader at the restored position


def task_batches(cfg: Config) -> dict[str, int]:
    """Global batch per task of the config."""
    out = {}
    for task in cfg.model.tasks:
        out[task] = cfg.data.depth_batch if task == "depth" else cfg.data.insseg_batch
    return out


def task_can_be_absent(cfg: Config, world_size: int) -> bool:
    """Whether some rank holds no image of some task at a step: a global batch smaller than the ranks
    (the joint recipe's 4 NYU images over 8 GPUs). That rank's head for the task sits out the backward pass,
    so DDP must search for unused parameters."""
    return any(
        rank_share(b, r, world_size)[0] == rank_share(b, r, world_size)[1]
        for b in task_batches(cfg).values()
        for r in range(world_size)
    )


def build_task_streams(
    cfg: Config, rank: int = 0, world_size: int = 1, datasets: dict[str, Dataset] | None = None
) -> TaskStreams:
    batches = task_batches(cfg)
    datasets = datasets or {task: build_train_dataset(cfg, task) for task in batches}
    return TaskStreams(datasets, batches, cfg.seed, rank, world_size, cfg.data.num_workers)


def describe_batches(cfg: Config, world_size: int) -> Sequence[str]:
    return [f"{task}: {b} global ({b / world_size:.3g}/rank)" for task, b in task_batches(cfg).items()]
