import pytest
import torch

from ait_backbone import create_backbone


@pytest.fixture(autouse=True)
def one_cpu_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared CPU they mostly wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_tiny():
    """Build a tiny CPU backbone with seeded random weights (norms too, so nothing is at its init value)."""

    def build(name: str = "swinv2-tiny-cpu", seed: int = 0, randomise: bool = True, **overrides):
        torch.manual_seed(seed)
        backbone = create_backbone(name, **overrides)
        if randomise:
            with torch.no_grad():
                for parameter in backbone.parameters():
                    parameter.copy_(torch.randn_like(parameter) * 0.1)
        return backbone.eval()

    return build
