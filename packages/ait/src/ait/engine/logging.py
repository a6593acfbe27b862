"""Run metrics: JSON lines in `work_dir/metrics.jsonl` (always) and TensorBoard (if it is installed)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger", "read_metrics"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible as text
    return value


class MetricsLogger:
    """Appends one JSON object per call; only the main rank writes (others get `enabled=False`)."""

    def __init__(self, work_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(work_dir) / "metrics.jsonl"
        self._writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(Path(work_dir) / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self._writer = None

    def log(self, record: dict[str, Any], step: int | None = None) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        if step is not None:
            record["step"] = step
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_jsonable(record)) + "\n")
        if self._writer is not None and step is not None:
            for key, value in _flat_scalars(record):
                self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _flat_scalars(record: dict[str, Any], prefix: str = ""):
    for key, value in record.items():
        if key in ("time", "step"):
            continue
        if isinstance(value, dict):
            yield from _flat_scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{key}", float(value)


def read_metrics(work_dir: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(work_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
