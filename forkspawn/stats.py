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
