import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ait_decoder import sine_coordinate_codes, sine_positions_2d


def reference(height, width, dim, temperature=10000.0):
    """Element by element, float64, straight from the formula."""
    half = dim // 2
    out = torch.zeros(height * width, dim, dtype=torch.float64)
    for y in range(height):
        for x in range(width):
            for axis, coord in ((0, y), (1, x)):
                for c in range(half):
                    angle = coord / temperature ** (2 * (c // 2) / half)
                    out[y * width + x, axis * half + c] = math.sin(angle) if c % 2 == 0 else math.cos(angle)
    return out


def test_hand_worked_values():
    pos = sine_positions_2d(2, 3, dim=8, dtype=torch.float64)
    # cell (y=1, x=2) is row 1*3+2 = 5; per axis 4 channels: sin(c), cos(c), sin(c/100), cos(c/100)
    expected = [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)]
    expected += [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)]
    torch.testing.assert_close(pos[5], torch.tensor(expected, dtype=torch.float64))
    # origin: sin 0 = 0, cos 0 = 1, interleaved
    assert pos[0].tolist() == [0.0, 1.0] * 4


@pytest.mark.parametrize(("height", "width", "dim"), [(15, 15, 256), (2, 5, 16)])
def test_matches_elementwise_reference(height, width, dim):
    pos = sine_positions_2d(height, width, dim, dtype=torch.float64)
    torch.testing.assert_close(pos, reference(height, width, dim), rtol=0, atol=1e-12)


def test_bad_dim():
    with pytest.raises(ValueError, match="divisible by 4"):
        sine_positions_2d(2, 2, dim=6)


# --------------------------------------------------------------------------- coordinate bins in that code
@settings(max_examples=25, deadline=None)
@given(
    cells=st.integers(1, 12),
    stride=st.sampled_from([4, 8, 16, 32]),
    dim=st.sampled_from([16, 32, 96]),
)
def test_a_bin_at_a_cell_centre_carries_that_cells_position_code(cells, stride, dim):
    # one bin per pixel: bin stride * (i + 0.5) sits on the centre of cell i, whose row code (y half) and
    # column code (x half) the neck adds to its memory tokens
    canvas = cells * stride
    codes = sine_coordinate_codes(canvas, canvas, stride, dim)
    grid = sine_positions_2d(cells, cells, dim, dtype=torch.float64)
    half = dim // 2
    for i in range(cells):
        centre = codes[stride * i + stride // 2]
        torch.testing.assert_close(centre[:half], grid[i * cells, :half], rtol=0, atol=1e-12)  # row i
        torch.testing.assert_close(centre[half:], grid[i, half:], rtol=0, atol=1e-12)  # column i


@settings(max_examples=25, deadline=None)
@given(num_bins=st.integers(8, 200), canvas=st.sampled_from([64, 640]), dim=st.sampled_from([32, 256]))
def test_neighbouring_bins_are_closer_than_distant_ones(num_bins, canvas, dim):
    codes = sine_coordinate_codes(num_bins, canvas, canvas / 8, dim)
    assert codes.shape == (num_bins + 1, dim) and codes.dtype == torch.float64
    distance = torch.cdist(codes, codes)
    # up to two cells away (the fastest channel turns by one radian a cell: no wrap before pi), the code
    # drifts away steadily as the other bin moves off
    reach = 2 * num_bins // 8
    for first in range(0, num_bins + 1 - reach):
        row = distance[first, first : first + reach + 1]
        assert bool((row[1:] > row[:-1]).all()), (first, row)


@pytest.mark.parametrize(
    ("args", "message"),
    [((10, 64, 8, 30), "divisible by 4"), ((0, 64, 8, 32), "num_bins >= 1"), ((10, 64, 0, 32), "stride > 0")],
)
def test_bad_coordinate_code_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        sine_coordinate_codes(*args)
