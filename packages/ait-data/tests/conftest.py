from pathlib import Path

import pytest

from ait_data import SyntheticRooms

# packages/ait-data/tests -> repo root -> fixtures/ (the real NYU/COCO samples committed with the code)
FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"


def _shared(sub: str) -> Path:
    """The committed real-data sample `sub`: every clone has it, so a missing one fails, never skips."""
    path = (FIXTURES / sub).resolve()
    if not path.is_dir():
        pytest.fail(f"real data fixture missing at {path} (fixtures/ is part of the repository)")
    return path


@pytest.fixture
def nyu_sample() -> Path:
    return _shared("nyu_sample")


@pytest.fixture
def coco_sample() -> Path:
    return _shared("coco_sample")


@pytest.fixture(scope="session")
def small_rooms() -> SyntheticRooms:
    return SyntheticRooms(length=8, height=72, width=96, seed=7)


def pytest_configure(config):
    # pycocotools' Cython RLE objects predate numpy 2's __array__(copy=...) protocol: harmless noise.
    config.addinivalue_line(
        "filterwarnings", "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
    )
