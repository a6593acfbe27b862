"""Window attention order: pad to window multiples, then shift (the original), checked in float64."""

import pytest
import torch
import torch.nn.functional as F
from timm.models.swin_transformer_v2 import SwinTransformerV2Block

from ait_backbone import PadThenShiftBlock


def make_block(window: int, shift: int, seed: int = 0) -> PadThenShiftBlock:
    torch.manual_seed(seed)
    block = SwinTransformerV2Block(
        dim=16,
        input_resolution=(16, 16),
        num_heads=2,
        window_size=window,
        shift_size=shift,
        always_partition=True,
        dynamic_mask=True,
    )
    block.__class__ = PadThenShiftBlock
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.3)
    return block.double().eval()


def original_shifted_window_attention(block, x, window, shift):
    """The original AiT/Swin block's attention path, written out: pad, roll, mask on the padded map."""
    _, height, width, channels = x.shape
    pad_b, pad_r = (window - height % window) % window, (window - width % window) % window
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    padded_h, padded_w = height + pad_b, width + pad_r
    mask = None
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        regions = torch.zeros(padded_h, padded_w, dtype=torch.float64)
        label = 0
        for rows in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            for cols in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
                regions[rows, cols] = label
                label += 1
        regions = regions.view(padded_h // window, window, padded_w // window, window).permute(0, 2, 1, 3)
        regions = regions.reshape(-1, window * window)
        mask = (regions[:, None, :] != regions[:, :, None]).double() * -100.0
    windows = x.view(-1, padded_h // window, window, padded_w // window, window, channels)
    windows = windows.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)
    out = block.attn(windows, mask=mask)
    out = out.view(-1, padded_h // window, padded_w // window, window, window, channels)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(-1, padded_h, padded_w, channels)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return out[:, :height, :width, :]


@pytest.mark.parametrize(
    ("window", "shift", "size"),
    [(4, 2, (8, 8)), (4, 2, (10, 6)), (8, 4, (10, 10)), (8, 4, (12, 20)), (4, 0, (6, 10)), (8, 4, (5, 3))],
)
def test_block_attention_equals_the_original_pad_then_shift(window, shift, size):
    block = make_block(window, shift)
    x = torch.randn(2, *size, 16, dtype=torch.float64)
    torch.testing.assert_close(block._attn(x), original_shifted_window_attention(block, x, window, shift))


def test_without_padding_the_order_does_not_matter_and_timm_agrees():
    block = make_block(8, 4)
    x = torch.randn(2, 16, 24, 16, dtype=torch.float64)
    assert torch.equal(block._attn(x), SwinTransformerV2Block._attn(block, x))


def test_padded_shift_never_lets_the_bottom_row_see_the_top_row():
    """With padding, timm's roll-then-pad puts wrapped rows in an unmasked region; the original does not."""
    block = make_block(8, 4)
    x = torch.randn(1, 10, 10, 16, dtype=torch.float64)
    perturbed = x.clone()
    perturbed[:, 0] += 1.0  # top row only

    ours = block._attn(perturbed) - block._attn(x)
    assert ours[:, -1].abs().max() == 0  # bottom row: untouched, the top row is not its neighbour
    assert ours[:, 0].abs().max() > 0

    stock = SwinTransformerV2Block._attn(block, perturbed) - SwinTransformerV2Block._attn(block, x)
    assert stock[:, -1].abs().max() > 1e-6  # the reason PadThenShiftBlock exists


def test_block_keeps_timm_parameter_names():
    stock = SwinTransformerV2Block(dim=16, input_resolution=(8, 8), num_heads=2, window_size=4)
    assert list(make_block(4, 2).state_dict()) == list(stock.state_dict())


def test_patch_merging_concatenates_in_the_original_order(make_tiny):
    """Pretrained `downsample.reduction` weights only transfer if the 2x2 neighbours are stacked the same way:
    the original concatenates x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]."""
    merging = make_tiny().layers[1].downsample.double()
    x = torch.randn(2, 6, 10, 32, dtype=torch.float64)
    stacked = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    expected = merging.norm(stacked @ merging.reduction.weight.T)
    torch.testing.assert_close(merging(x), expected)
