"""Array conversion shared by the metric modules."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any) -> np.ndarray:
    """``np.asarray``, plus tensors on any device: anything with ``detach().cpu().numpy()``.

    Duck-typed on purpose, so the application can pass torch tensors (CUDA ones included) while this
    package never imports torch.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
