import pytest

from ait_decoder.testing import tiny_decoder as make_tiny_decoder
from ait_decoder.testing import tiny_vocab as make_tiny_vocab


@pytest.fixture
def tiny_vocab():
    return make_tiny_vocab()


@pytest.fixture
def tiny_decoder():
    return make_tiny_decoder()
