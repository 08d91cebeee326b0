"""Spread over repeats, computed once and the way asv computes it.

asv derives a result's median and 99% confidence interval with `asv_runner.statistics`
(a distribution-free interval for the median, widened by an exponential-noise model when
there are few samples). Using the same estimator here means the `forkspawn measure` record,
asv's result files and the analysis tables agree to the digit.
"""

from __future__ import annotations

import functools
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
    of this repeated look is checked by tests/test_stopping.py's simulation
    (docs/measurement-quality.md).
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


def shift(a: list[float], b: list[float], confidence: float = 0.99) -> dict[str, float | int | None]:
    """How much larger `a` is than `b`: the Hodges-Lehmann estimate (the median of every
    difference a_i - b_j) with its distribution-free confidence interval, the order statistics
    of those differences that the exact Mann-Whitney distribution gives (the rank test asv
    itself uses to tell two results apart). Distribution-free, like asv's interval of a median:
    no normality of cold starts is assumed, which a bimodal start-up would break. Exact for any
    sizes; at 99% it needs 5 samples a side (4 and 6), below that the interval is unbounded (None).
    """
    diffs = sorted(x - y for x in a for y in b)
    out: dict[str, float | int | None] = {"estimate": statistics.median(diffs) if diffs else None,
                                          "ci_low": None, "ci_high": None, "n_a": len(a), "n_b": len(b)}
    if not diffs:
        return out
    cdf, total = 0, math.comb(len(a) + len(b), len(a))
    k = 0  # the interval is [diffs[k - 1], diffs[-k]]: the largest k with P(U <= k - 1) <= (1 - confidence) / 2
    for u, ways in enumerate(_mann_whitney_counts(len(a), len(b))):
        cdf += ways
        if cdf / total > (1 - confidence) / 2:
            break
        k = u + 1
    if k:
        out["ci_low"], out["ci_high"] = diffs[k - 1], diffs[-k]
    return out


@functools.cache
def _mann_whitney_counts(m: int, n: int) -> tuple[int, ...]:
    """How many arrangements of m and n samples give each value 0..m*n of the U statistic."""
    if m == 0 or n == 0:
        return (1,)
    with_last_of_m = _mann_whitney_counts(m - 1, n)  # the largest value belongs to a: it beats all n
    without = _mann_whitney_counts(m, n - 1)
    return tuple((with_last_of_m[u - n] if 0 <= u - n < len(with_last_of_m) else 0) +
                 (without[u] if u < len(without) else 0) for u in range(m * n + 1))


def samples_for(reach: float, n: int, target: float) -> int | None:
    """Samples a side that would bring an interval's bound, `reach` from the estimate with `n` a
    side, to within `target` of it, with intervals shrinking as 1/sqrt(n) (an estimate: the spread
    measured stands for the next). `reach` is the one bound's distance: a rank interval is not
    symmetric, and its half-width would call a bound that still crosses the target close enough."""
    if not reach or not target or n < 1:
        return None
    return max(n, math.ceil(n * (reach / target) ** 2))
