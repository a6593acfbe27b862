"""Regression check against the stored baseline (run by CI through `nox -s bench_check`).

    python benchmarks/check.py            # run the checked benchmarks (quick mode) and compare
    python benchmarks/check.py --update   # rewrite benchmarks/baseline.json from this run

Only quantities that survive a noisy shared machine are checked: ratios measured side by side in one run
(never absolute times) and the deterministic depth RMSE of a fixed-seed training run.  Each entry of
baseline.json says which way is better and how far it may move:

    {"benchmark": ..., "metric": ..., "baseline": 4.1, "better": "higher", "tolerance": 0.35}

`tolerance` is relative: a "higher is better" ratio fails below baseline·(1 − tolerance); a "lower is
better" figure fails above baseline·(1 + tolerance).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import machine_info, run_suite  # noqa: E402

BASELINE = HERE / "baseline.json"
# What the check runs (quick mode) and the default tolerance of each kind of figure.
CHECKED_BENCHMARKS = ["decoder", "quality"]
DEFAULT_TOLERANCE = {"x": 0.35, "m": 0.05}


def compare(rows: list[dict], baseline: list[dict]) -> tuple[list[str], list[str]]:
    """Return (report lines, failure lines)."""
    current = {(r["benchmark"], r["metric"]): r["value"] for r in rows}
    report, failures = [], []
    for entry in baseline:
        key = (entry["benchmark"], entry["metric"])
        name = f"{key[0]} / {key[1]}"
        if key not in current:
            failures.append(f"{name}: missing from this run")
            continue
        value, base, tol = current[key], entry["baseline"], entry["tolerance"]
        if entry["better"] == "higher":
            limit = base * (1 - tol)
            ok = value >= limit
            bound = f">= {limit:.4g}"
        else:
            limit = base * (1 + tol)
            ok = value <= limit
            bound = f"<= {limit:.4g}"
        line = f"{'ok  ' if ok else 'FAIL'} {name}: {value:.4g} (baseline {base:.4g}, must be {bound})"
        report.append(line)
        if not ok:
            failures.append(line)
    return report, failures


def baseline_from(rows: list[dict]) -> list[dict]:
    entries = []
    for r in rows:
        if r["unit"] == "x":
            entries.append(
                {**_key(r), "baseline": r["value"], "better": "higher", "tolerance": DEFAULT_TOLERANCE["x"]}
            )
        elif r["benchmark"] == "quality" and r["unit"] == "m":
            entries.append(
                {**_key(r), "baseline": r["value"], "better": "lower", "tolerance": DEFAULT_TOLERANCE["m"]}
            )
    return entries


def _key(r: dict) -> dict:
    return {"benchmark": r["benchmark"], "metric": r["metric"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--update", action="store_true", help="write baseline.json from this run")
    args = parser.parse_args(argv)
    rows, failures = run_suite(CHECKED_BENCHMARKS, quick=True)
    if failures:
        print("benchmarks failed to run:", failures)
        return 1
    if args.update:
        entries = baseline_from(rows)
        BASELINE.write_text(json.dumps({"machine": machine_info(), "entries": entries}, indent=2) + "\n")
        print(f"wrote {len(entries)} entries to {BASELINE}")
        return 0
    if not BASELINE.exists():
        print(f"no baseline at {BASELINE}: run with --update first")
        return 1
    report, regressions = compare(rows, json.loads(BASELINE.read_text())["entries"])
    print("\n".join(report))
    if regressions:
        print(f"\n{len(regressions)} regression(s) against {BASELINE.name}")
        return 1
    print(f"\nbench_check: {len(report)} figures within tolerance")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
