"""`benchmarks/ablations.py`: the verdict rule and a quick end-to-end run of every variant (issue 10, item 7)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ablations():
    # by its own name from benchmarks/ on sys.path: the script's worker processes (spawn) import it again
    sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module("ablations")


def _stats(*values: float) -> dict:
    import statistics

    return {"values": list(values), "mean": statistics.fmean(values), "std": statistics.pstdev(values)}


@pytest.mark.parametrize(
    ("better", "other", "lower", "equal", "expected"),
    [
        # lower RMSE claimed better: a gap larger than both spreads holds, the other way round is reversed
        ((1.0, 1.1, 1.2), (2.0, 2.1, 2.2), True, False, "holds"),
        ((2.0, 2.1, 2.2), (1.0, 1.1, 1.2), True, False, "reversed"),
        ((1.0, 1.5, 2.0), (1.2, 1.6, 2.1), True, False, "within the seed spread"),
        # higher AP claimed better
        ((0.5, 0.6, 0.7), (0.1, 0.2, 0.3), False, False, "holds"),
        ((0.1, 0.2, 0.3), (0.5, 0.6, 0.7), False, False, "reversed"),
        # "as good as" claims: inside the spread holds, clearly better says so, clearly worse is reversed
        ((1.0, 1.1, 1.2), (1.05, 1.1, 1.15), True, True, "holds"),
        ((1.0, 1.01, 1.02), (2.0, 2.01, 2.02), True, True, "holds (better than equal)"),
        ((2.0, 2.01, 2.02), (1.0, 1.01, 1.02), True, True, "reversed"),
        # one seed has no spread to judge by
        ((1.0,), (2.0,), True, False, "one seed: no spread, no verdict"),
    ],
)
def test_verdict(ablations, better, other, lower, equal, expected):
    assert ablations.verdict(_stats(*better), _stats(*other), lower, equal) == expected


def test_quick_run_covers_every_variant_and_claim(ablations, tmp_path):
    assert ablations.main(["--quick", "--jobs", "1", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "ablations_quick.json").read_text())
    solved = {(r["kind"], r["variant"]) for r in payload["records"]}
    for variant in ablations.DEPTH_VARIANTS:
        assert ("depth", variant) in solved
    for variant in ablations.INSSEG_VARIANTS:
        assert ("insseg", variant) in solved
    assert {("tokenizer", "tokenizer_maskaug"), ("tokenizer", "tokenizer_nomaskaug")} <= solved
    assert ("baseline", "mean_baseline") in solved
    assert [c["claim"] for c in payload["claims"]] == [c[0] for c in ablations.CLAIMS]
    markdown = (tmp_path / "ablations_quick.md").read_text()
    assert "QUICK smoke run" in markdown
    for variant in ablations.VARIANTS:
        assert f"`{variant}`" in markdown
    assert (tmp_path / "ablations_quick.png").stat().st_size > 10_000
    assert not any("checkpoint" in r for r in payload["records"])  # temporary paths stay out of the results

    # --render rewrites the table and plot from the JSON alone
    (tmp_path / "ablations_quick.md").unlink()
    (tmp_path / "ablations_quick.png").unlink()
    assert ablations.main(["--render", str(tmp_path / "ablations_quick.json")]) == 0
    assert (tmp_path / "ablations_quick.md").read_text() == markdown
    assert (tmp_path / "ablations_quick.png").stat().st_size > 10_000


def test_bad_jobs_is_a_usage_error(ablations, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ablations.main(["--quick", "--jobs", "0"])
    assert exit_info.value.code == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err
