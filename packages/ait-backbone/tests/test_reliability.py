"""Bad input to the backbone (issue 12): ValueErrors naming the argument or file, never a deep torch error."""

import numpy as np
import pytest
import torch

from ait_backbone import create_backbone
from ait_backbone.checkpoint import load_backbone_checkpoint


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("swinv2-tiny-cpu")


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((1, 3, 64, 64), np.float32), r"must be a torch\.Tensor"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.int64), "floating-point"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating-point"),
    ],
)
def test_inputs_of_the_wrong_type_or_dtype_are_value_errors(backbone, images, message):
    with pytest.raises(ValueError, match=message):
        backbone(images)


def test_a_checkpoint_with_non_finite_weights_is_refused(backbone, tmp_path):
    weights = {k: v.clone() for k, v in backbone.state_dict().items()}
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name].view(-1)[0] = float("inf")
    torch.save(weights, tmp_path / "swin.pth")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises(ValueError, match=rf"swin\.pth: non-finite weights .*{name}"):
        load_backbone_checkpoint(backbone, tmp_path / "swin.pth")
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())  # nothing loaded
