"""The dataset wrappers of `ait.data` keep their transform when the DataLoader fetches a whole batch."""

from __future__ import annotations

import torch

from ait.config import create_config
from ait.data import CachedDataset, TransformedDataset, _collate, _transform, build_raw_dataset


def test_a_transformed_subset_is_transformed_when_a_loader_fetches_it():
    # torch's Subset has __getitems__; delegating it made DataLoader fetch the raw (untransformed) samples
    cfg = create_config("cpu_depth_tiny", {"data.synthetic_train_length": 4})
    raw = build_raw_dataset(cfg, "depth", "train")
    assert isinstance(raw, CachedDataset)
    dataset = TransformedDataset(
        torch.utils.data.Subset(raw, [0, 2, 3]), _transform(cfg, "depth", False), 0, "depth"
    )
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=_collate)))
    by_hand = _collate([dataset[i] for i in range(3)])
    assert batch["depth"].shape == by_hand["depth"].shape == (3, 1, 64, 64)
    torch.testing.assert_close(batch["image"], by_hand["image"], rtol=0, atol=0)
    # attribute delegation still works for the dataset's own fields
    assert dataset.dataset is raw and CachedDataset(raw.base).num_classes == raw.num_classes
    assert not hasattr(dataset, "__getitems__") and not hasattr(CachedDataset(dataset), "__getitems__")
