import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ait_tokenizer import mask_augment, random_patch_mask
from ait_tokenizer.augment import patches_to_blank


def test_paper_setting_blanks_exactly_450_of_900_patches():
    mask = random_patch_mask(
        2, 480, 480, ratio=0.5, patch_size=16, generator=torch.Generator().manual_seed(0)
    )
    per_patch = mask.view(2, 30, 16, 30, 16)[:, :, 0, :, 0]
    assert per_patch.sum(dim=(1, 2)).tolist() == [450, 450]
    # Whole patches only: every pixel of a patch shares its patch's state.
    assert torch.equal(mask.view(2, 30, 16, 30, 16), per_patch[:, :, None, :, None].expand(2, 30, 16, 30, 16))


@settings(max_examples=30, deadline=None)
@given(
    ratio=st.floats(0.0, 1.0),
    patch=st.integers(1, 9),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    seed=st.integers(0, 1000),
)
def test_exact_count_per_sample(ratio, patch, height, width, seed):
    mask = random_patch_mask(
        3, height, width, ratio=ratio, patch_size=patch, generator=torch.Generator().manual_seed(seed)
    )
    rows, cols = math.ceil(height / patch), math.ceil(width / patch)
    padded = torch.zeros(3, 1, rows * patch, cols * patch, dtype=torch.bool)
    padded[:, :, :height, :width] = mask
    blanked_patches = padded.view(3, rows, patch, cols, patch)[:, :, 0, :, 0].sum(dim=(1, 2))
    expected = math.ceil(round(ratio * rows * cols, 9))
    assert blanked_patches.tolist() == [expected] * 3


def test_count_is_not_fooled_by_float_noise():
    assert patches_to_blank(10, 0.3) == 3
    assert patches_to_blank(900, 0.5) == 450
    assert patches_to_blank(7, 0.5) == 4
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        patches_to_blank(10, 1.5)


def test_seeded_generator_is_deterministic_and_fresh_per_sample():
    first = random_patch_mask(4, 64, 64, patch_size=8, generator=torch.Generator().manual_seed(7))
    again = random_patch_mask(4, 64, 64, patch_size=8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    assert len({tuple(m.flatten().tolist()) for m in first}) == 4  # each sample its own pattern


def test_mask_augment_sets_blanked_pixels_to_fill_and_keeps_the_rest():
    x = torch.rand(2, 1, 32, 32) + 1
    out = mask_augment(x, ratio=0.25, patch_size=16, generator=torch.Generator().manual_seed(1))
    blanked = out == 0
    assert blanked.view(2, -1).float().mean(dim=1).tolist() == [0.25, 0.25]
    assert torch.equal(out[~blanked], x[~blanked])
    assert (x > 0).all()  # not in place
