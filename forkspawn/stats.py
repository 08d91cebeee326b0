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
    # imported here: the harness's other commands (`forkspawn model`, `machine`) then run on a
    # Python with nothing installed beside torch, as a GPU box's is before the install
    from asv_runner.statistics import compute_stats

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
    return {**_hodges_lehmann(diffs, _mann_whitney_counts(len(a), len(b)), confidence), "n_a": len(a), "n_b": len(b)}


def signed_rank_shift(d: list[float], confidence: float = 0.99) -> dict[str, float | int | None]:
    """The paired counterpart of `shift`: the Hodges-Lehmann estimate of paired differences `d`
    (the median of their Walsh averages (d_i + d_j) / 2, i <= j) with its exact, distribution-free
    interval from the Wilcoxon signed-rank distribution. At 99% it needs `min_pairs()` (8) pairs."""
    n = len(d)
    walsh = sorted((d[i] + d[j]) / 2 for i in range(n) for j in range(i, n))
    return {**_hodges_lehmann(walsh, _signed_rank_counts(n), confidence), "n": n}


def min_pairs(confidence: float = 0.99) -> int:
    """The fewest pairs that give a bounded signed-rank interval: the all-positive arrangement
    (probability 2^-n) must fit in one tail."""
    return math.ceil(math.log2(2 / (1 - confidence)))


def _hodges_lehmann(values: list[float], counts: tuple[int, ...], confidence: float) -> dict[str, float | None]:
    """The median of `values` (sorted: a rank statistic's differences or averages) and its interval
    [values[k - 1], values[-k]], k the largest with P(T <= k - 1) <= (1 - confidence) / 2 under the
    statistic's exact null distribution (`counts`: the arrangements giving each value); the ends
    are None where too few samples leave every arrangement inside the tails."""
    out: dict[str, float | None] = {"estimate": statistics.median(values) if values else None,
                                    "ci_low": None, "ci_high": None}
    total, cdf, k = sum(counts), 0, 0
    for t, ways in enumerate(counts):
        cdf += ways
        if cdf / total > (1 - confidence) / 2:
            break
        k = t + 1
    if values and k:
        out["ci_low"], out["ci_high"] = values[k - 1], values[-k]
    return out


@functools.cache
def _signed_rank_counts(n: int) -> tuple[int, ...]:
    """How many of the 2^n sign patterns give each value 0..n(n+1)/2 of the signed-rank statistic."""
    counts = [1]
    for r in range(1, n + 1):  # rank r positive or not
        grown = counts + [0] * r
        for t in range(len(counts)):
            grown[t + r] += counts[t]
        counts = grown
    return tuple(counts)


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
