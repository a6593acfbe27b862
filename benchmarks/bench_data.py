"""ait-data throughput on one core: synthetic-rooms generation, augmentations, maskcoco preprocessing.

    python benchmarks/bench_data.py [--quick]

Each rate is reported twice: per wall-clock second and per CPU second of this process (the latter is the
one to compare on a shared machine, where wall time includes waiting for a core).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

# One core: set before numpy/torch start their thread pools (no effect if they already did).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402

from ait_data import DepthTransform, InstanceTransform, SyntheticRooms, build_maskcoco  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1] / "fixtures"


def _rate(fn, count: int) -> tuple[float, float]:
    """(items per wall second, items per CPU second) for `count` calls of fn(i)."""
    fn(0)  # warm-up (imports, caches)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(1, count + 1):
        fn(i)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return count / wall, count / max(cpu, 1e-9)


def _rows(name: str, unit: str, count: int, fn, note: str) -> list[dict]:
    wall, cpu = _rate(fn, count)
    return [
        {
            "benchmark": name,
            "metric": "throughput_wall",
            "value": wall,
            "unit": unit,
            "note": f"{note}; n={count}",
        },
        {
            "benchmark": name,
            "metric": "throughput_cpu",
            "value": cpu,
            "unit": unit,
            "note": f"{note}; n={count}",
        },
    ]


def run(quick: bool = False) -> list[dict]:
    torch.set_num_threads(1)
    rows: list[dict] = []
    small = SyntheticRooms(length=10_000, height=96, width=96, seed=0)
    large = SyntheticRooms(length=10_000, height=480, width=640, seed=0)
    rows += _rows(
        "synthetic_rooms_96x96", "images/s", 60 if quick else 400, small.__getitem__, "target > 200"
    )
    rows += _rows("synthetic_rooms_480x640", "images/s", 4 if quick else 40, large.__getitem__, "target > 10")

    samples = [large[i] for i in range(4)]
    depth_aug = DepthTransform(train=True, crop=(480, 480), seed=0)
    rows += _rows(
        "depth_transform_480x640_to_480",
        "samples/s",
        8 if quick else 60,
        lambda i: depth_aug(samples[i % 4]),
        "CutDepth every 4th, flip, crop, photometric",
    )
    inst_aug = InstanceTransform(train=True, canvas=640, seed=0)
    rows += _rows(
        "instance_transform_480x640_to_640",
        "samples/s",
        4 if quick else 30,
        lambda i: inst_aug(samples[i % 4]),
        "scale jitter 0.1-3, crop, flip, pad, normalise",
    )

    ann_file = SHARED_DATA / "coco_sample" / "annotations" / "instances_train2017_tinycoco6.json"
    if ann_file.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            n_masks = 135  # non-crowd instances of tinycoco6
            wall, cpu = time.perf_counter(), time.process_time()
            build_maskcoco(ann_file, Path(tmp) / "m.npz", progress=False)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        note = "tinycoco6 (real COCO polygons)"
        rows.append(
            {
                "benchmark": "maskcoco",
                "metric": "throughput_wall",
                "value": n_masks / wall,
                "unit": "masks/s",
                "note": note,
            }
        )
        rows.append(
            {
                "benchmark": "maskcoco",
                "metric": "throughput_cpu",
                "value": n_masks / cpu,
                "unit": "masks/s",
                "note": note,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = run(quick=args.quick)
    print(f"{'benchmark':36s} {'metric':16s} {'value':>10s}  unit        note")
    for r in rows:
        print(f"{r['benchmark']:36s} {r['metric']:16s} {r['value']:10.1f}  {r['unit']:11s} {r['note']}")


if __name__ == "__main__":
    main()
