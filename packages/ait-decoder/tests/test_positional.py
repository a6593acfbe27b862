import math

import pytest
import torch

from ait_decoder import sine_positions_2d


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
