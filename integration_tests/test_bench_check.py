"""bench_check's baseline per CPU kind: figures that move with the vector unit are compared only against a
baseline measured on the same kind of CPU; every portable figure is compared everywhere."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from check import CPU_DEPENDENT, baseline_from, compare, entries_for, merge_baseline
from run import cpu_kind

STEP = ("solver/train_step_demo", "fraction_of_matmul_ceiling")
DECODE = ("decoder/ours_vs_original/b1", "speedup")


def _rows(step: float, decode: float) -> list[dict]:
    return [
        {"benchmark": STEP[0], "metric": STEP[1], "value": step, "unit": "x"},
        {"benchmark": DECODE[0], "metric": DECODE[1], "value": decode, "unit": "x"},
    ]


def test_cpu_dependent_figures_are_compared_only_on_their_kind():
    assert STEP in CPU_DEPENDENT and DECODE not in CPU_DEPENDENT
    baseline = baseline_from(_rows(step=0.5, decode=3.0), kind="x86_64-avx512")
    assert {e.get("cpu_kind") for e in baseline} == {"x86_64-avx512", None}

    # an AMX machine: the step fraction drops to 0.19 without any regression in our code
    applying, unguarded = entries_for(baseline, "x86_64-avx512-amx")
    assert unguarded == [STEP]
    _, failures = compare(_rows(step=0.19, decode=3.0), applying)
    assert failures == []
    # ... while a portable figure still fails there
    _, failures = compare(_rows(step=0.19, decode=1.0), applying)
    assert len(failures) == 1 and DECODE[0] in failures[0]

    # on the kind the baseline was measured on, the same drop is a regression
    applying, unguarded = entries_for(baseline, "x86_64-avx512")
    assert unguarded == []
    _, failures = compare(_rows(step=0.19, decode=3.0), applying)
    assert len(failures) == 1 and STEP[0] in failures[0]


def test_updating_on_another_kind_keeps_the_first_kinds_entries():
    first = baseline_from(_rows(step=0.5, decode=3.0), kind="x86_64-avx512")
    second = baseline_from(_rows(step=0.19, decode=3.2), kind="x86_64-avx512-amx")
    merged = merge_baseline(first, second)
    steps = sorted((e["cpu_kind"], e["baseline"]) for e in merged if (e["benchmark"], e["metric"]) == STEP)
    assert steps == [("x86_64-avx512", 0.5), ("x86_64-avx512-amx", 0.19)]
    decode = [e for e in merged if (e["benchmark"], e["metric"]) == DECODE]
    assert len(decode) == 1 and decode[0]["baseline"] == 3.2  # portable: the newest measurement
    for kind, value in (("x86_64-avx512", 0.5), ("x86_64-avx512-amx", 0.19)):
        applying, unguarded = entries_for(merged, kind)
        assert unguarded == []
        assert [e["baseline"] for e in applying if (e["benchmark"], e["metric"]) == STEP] == [value]


def test_this_machine_has_a_kind():
    kind = cpu_kind()
    assert kind.count("-") >= 1 and kind == kind.lower() and " " not in kind
