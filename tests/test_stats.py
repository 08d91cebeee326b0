"""The shift estimate and interval of two sets of cold starts (stats.shift), against the exact
Mann-Whitney distribution and by simulation."""

from __future__ import annotations

import math
import random

import pytest

from forkspawn.stats import _mann_whitney_counts, samples_for, shift


def test_the_mann_whitney_counts_are_the_published_distribution() -> None:
    counts = _mann_whitney_counts(6, 6)
    assert sum(counts) == math.comb(12, 6) and counts[:4] == (1, 1, 2, 3)
    # two-sided 5% critical value of U for 6 and 6 is 5 (P(U <= 5) = 0.0206 <= 0.025 < P(U <= 6))
    assert sum(counts[:6]) / 924 <= 0.025 < sum(counts[:7]) / 924


def test_the_interval_covers_a_known_shift_as_often_as_it_says() -> None:
    rng = random.Random(1)
    trials, missed = 2000, 0
    for _ in range(trials):
        a = [rng.lognormvariate(0, 0.2) + 0.3 for _ in range(6)]  # skewed, shifted by 0.3
        b = [rng.lognormvariate(0, 0.2) for _ in range(6)]
        s = shift(a, b, confidence=0.95)
        missed += not s["ci_low"] <= 0.3 <= s["ci_high"]
    # exact for continuous data: 1 - (confidence achievable with 6 and 6: 95.9%), give or take chance
    assert missed / trials == pytest.approx(0.041, abs=0.015)


def test_too_few_cold_starts_give_no_interval_and_an_estimate_of_how_many_would() -> None:
    assert shift([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])["ci_low"] is None  # 3 a side cannot reach 99%
    assert shift([1.0] * 5, [0.0] * 5) == {"estimate": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n_a": 5, "n_b": 5}
    assert samples_for(reach=0.06, n=6, target=0.03) == 24
    assert samples_for(reach=0.01, n=6, target=0.03) == 6
