"""Decode parity across cold starts (analysis/parity.py): the pairs, the shift and its verdicts,
from records built the way the harness builds them."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import parity
from analysis.load import RECORD_COLUMNS, load
from forkspawn.config import Config
from forkspawn.record import Run, build_record

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _record(method: str, rates: list[float], extra: dict | None = None):
    runs = []
    for r in rates:
        run = Run(method_used=method)
        run.tokens_per_s = {1: r}
        runs.append(run)
    return build_record(Config(engine="vllm", method=method, parent_state="torch", batches=(1,), extra=extra or {}),
                        runs, machine={}, versions={})


def _records(pairs: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"machine": "box", "commit": "c0ffee0", "env": "existing", "date": pd.Timestamp("2026-12-06"),
             "engine": "vllm", "method": label, "method_used": label.split("-")[0], "parent_state": "torch",
             "cuda_check": "runtime", "tp": 1, "status": "ok", "record": _record(label.split("-")[0], rates)}
            for label, rates in pairs.items()]
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def test_pairs_and_verdicts() -> None:
    spawn = [1000, 1004, 998, 1002, 1001, 999]
    t = parity.table(_records({
        "spawn": spawn,
        "fork": [r * 1.001 for r in spawn],  # equal within 3%
        "spawn-eager": [500, 503, 499, 502, 501, 498],
        "fork-eager": [400, 402, 399, 401, 400, 398],  # 20% slower: differs
        "fork-gcfreeze": [900, 1100, 950, 1080, 930, 1060],  # noisy: unresolved, against plain spawn
    })).set_index("method")
    assert t.loc["fork", "reference"] == "spawn" and t.loc["fork", "verdict"] == "equal within ±3%"
    assert t.loc["fork-eager", "reference"] == "spawn-eager" and t.loc["fork-eager", "verdict"] == "differs"
    assert t.loc["fork-eager", "diff_pct"] == pytest.approx(-20, abs=0.5)
    assert t.loc["fork-eager", "ci_high_pct"] < 0
    gc = t.loc["fork-gcfreeze"]
    assert gc["reference"] == "spawn" and gc["verdict"] == "unresolved" and gc["cold_starts_needed"] > 6
    assert "spawn" not in t.index, "a spawn label is a reference, not a method compared"


def test_too_few_cold_starts_give_no_interval_and_the_committed_reports_load() -> None:
    t = parity.table(_records({"spawn": [1.0, 2.0, 3.0], "fork": [1.0, 2.0, 3.0]}))
    assert t["verdict"].tolist() == ["no interval"]
    assert "5 needed" in parity.markdown(t)
    h200 = parity.table(load(ROOT / "reports" / "h200-tp1").records)
    # the 5 + 5 cold starts of the old two-request decode method: far from ±3%
    assert set(h200["verdict"]) == {"unresolved"} and (h200["cold_starts_needed"] > 30).all()


def test_what_would_decide_it_is_more_than_was_measured() -> None:
    """A rank interval is lopsided: the bound that has to move sets the cold starts asked for, so an
    unresolved pair never asks for the count it already has (reports/h100-vllm-tp1, eager: 10 a side;
    compiled: 14 a side, equal within ±3%)."""
    t = parity.table(load(ROOT / "reports" / "h100-vllm-tp1").records).set_index(["method", "batch"])
    assert set(t.loc["fork", "verdict"]) == {"equal within ±3%"} and set(t.loc["fork", "n"]) == {14}
    eager = t.loc["fork-eager"]
    assert set(eager["verdict"]) == {"unresolved"} and set(eager["n"]) == {10}
    assert (eager["cold_starts_needed"] > 10).all()
