"""SimMIM-style masked image modelling: the masks, what the backbone may see, the loss, saving."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ait_backbone import create_backbone, load_backbone_checkpoint
from ait_backbone.simmim import SimMIM, pretrain_simmim, random_patch_mask, save_backbone


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 6),
    patch=st.sampled_from([1, 2, 4, 8]),
    ratio=st.floats(0.05, 0.95),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_mask_hides_a_fixed_number_of_whole_squares(rows, cols, patch, ratio, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    mask = random_patch_mask(batch, rows * patch, cols * patch, patch, ratio, generator)
    assert mask.shape == (batch, 1, rows * patch, cols * patch)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    squares = mask.view(batch, rows, patch, cols, patch)
    # constant inside every square
    assert torch.equal(squares.amax(dim=(2, 4)), squares.amin(dim=(2, 4)))
    hidden = squares[:, :, 0, :, 0].sum(dim=(1, 2))
    expected = max(1, round(ratio * rows * cols))
    assert hidden.tolist() == [expected] * batch


@pytest.mark.parametrize("height,width,patch,ratio", [(30, 32, 8, 0.5), (32, 32, 8, 1.0), (32, 32, 8, 0.0)])
def test_mask_refuses_bad_sizes_and_ratios(height, width, patch, ratio):
    with pytest.raises(ValueError, match=r"mask_patch|mask_ratio"):
        random_patch_mask(1, height, width, patch, ratio)


def _tiny_mim(seed: int = 0) -> SimMIM:
    torch.manual_seed(seed)
    return SimMIM(create_backbone("swinv2-convstem-cpu", drop_path_rate=0.0), mask_patch=8, mask_ratio=0.6)


def test_hidden_pixels_never_reach_the_backbone():
    mim = _tiny_mim().eval()
    images = torch.rand(2, 3, 64, 64)
    mask = random_patch_mask(2, 64, 64, 8, 0.6, torch.Generator().manual_seed(1))
    changed = images + 5.0 * mask * torch.randn_like(images)
    with torch.no_grad():
        loss_a, recon_a, _ = mim(images, mask)
        loss_b, recon_b, _ = mim(changed, mask)
    assert torch.equal(recon_a, recon_b)  # the prediction cannot depend on what is hidden
    assert not torch.isclose(loss_a, loss_b)  # but the loss scores it


def test_loss_is_the_mean_absolute_error_on_hidden_pixels():
    mim = _tiny_mim().eval().double()
    images = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    mask = random_patch_mask(2, 64, 64, 8, 0.6, torch.Generator().manual_seed(2)).double()
    with torch.no_grad():
        loss, recon, _ = mim(images, mask)
    hidden = mask.expand_as(images).bool()
    reference = (recon - images).abs()[hidden].mean()
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=1e-12)
    assert recon.shape == images.shape


def test_pretraining_lowers_the_loss_and_is_seeded():
    images = torch.rand(8, 3, 64, 64)

    def run() -> list[float]:
        mim = _tiny_mim(seed=3)
        return pretrain_simmim(mim, iter(lambda: images, None), steps=40, lr=3e-3, seed=5)

    first, second = run(), run()
    assert first == second
    assert sum(first[-5:]) / 5 < 0.8 * sum(first[:5]) / 5


def test_saved_backbone_loads_back(tmp_path):
    mim = _tiny_mim(seed=4)
    with torch.no_grad():
        for p in mim.backbone.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = save_backbone(mim.backbone, tmp_path / "mim.safetensors")
    fresh = create_backbone("swinv2-convstem-cpu")
    report = load_backbone_checkpoint(fresh, path)
    assert report.loaded
    for (name, a), (_, b) in zip(mim.backbone.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert not list(tmp_path.glob("*.partial"))


def test_non_finite_weights_are_not_saved(tmp_path):
    mim = _tiny_mim()
    with torch.no_grad():
        next(mim.backbone.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        save_backbone(mim.backbone, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()
