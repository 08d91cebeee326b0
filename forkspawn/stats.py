"""Spread over repeats, computed once and the way asv computes it.

asv derives a result's median and 99% confidence interval with `asv_runner.statistics`
(a distribution-free interval for the median, widened by an exponential-noise model when
there are few samples). Using the same estimator here means the `forkspawn measure` record,
asv's result files and the analysis tables agree to the digit.
"""

from __future__ import annotations

import math
import statistics

from asv_runner.statistics import compute_stats


def resolved(a: dict, b: dict) -> bool:
    """Whether two `summarize` results differ at 99%: their intervals of the median are bounded
    and disjoint (conservative: two disjoint 99% intervals mean a difference well beyond 99%)."""
    bounds = (a["ci_low"], a["ci_high"], b["ci_low"], b["ci_high"])
    return None not in bounds and (a["ci_high"] < b["ci_low"] or b["ci_high"] < a["ci_low"])


def precise(s: dict, precision: float) -> bool:
    """Whether the 99% interval's half-width is within `precision` (relative to the median)."""
    if not precision or s["ci_low"] is None or s["ci_high"] is None or not s["median"]:
        return False
    return (s["ci_high"] - s["ci_low"]) / 2 <= precision * abs(s["median"])


def settled(samples: list[float], reference: list[float] | None, least: int, precision: float) -> str | None:
    """The sequential stopping rule: why no further cold start is needed, or None.

    After `least` samples a configuration is settled once its interval is disjoint from its
    reference's (`resolved`: the question it serves, e.g. spawn against fork, is answered) or
    narrower than `precision` (`precise`: more samples would not move the answer). The error rate
    of this repeated look is checked by tests/test_stopping.py's simulation (README,
    "Measurement quality").
    """
    if len(samples) < max(least, 1):
        return None
    mine = summarize(samples)
    if reference and resolved(mine, summarize(reference)):
        return "resolved"
    if precise(mine, precision):
        return "precise"
    return None


def summarize(samples: list[float]) -> dict[str, float | int | None]:
    """Median, 99% CI (None where asv's estimate is unbounded), quartiles, n and CV."""
    median, st = compute_stats(list(samples), 1)
    if median is None:
        return {"median": None, "ci_low": None, "ci_high": None, "q25": None, "q75": None, "n": 0, "cv": None}

    def finite(x: float) -> float | None:
        return x if math.isfinite(x) else None

    mean = statistics.fmean(samples)
    cv = statistics.stdev(samples) / mean if len(samples) > 1 and mean else None
    return {
        "median": median,
        "ci_low": finite(st["ci_99_a"]),
        "ci_high": finite(st["ci_99_b"]),
        "q25": st["q_25"],
        "q75": st["q_75"],
        "n": len(samples),
        "cv": cv,
    }
