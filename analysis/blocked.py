"""Blocks combined: the statistics behind decode parity across leases (analysis/parity.py), beside
the paired estimate within a block (`forkspawn.stats.signed_rank_shift`: the Hodges-Lehmann
estimate of paired differences, the median of their Walsh averages, with its exact Wilcoxon
signed-rank interval [W_(k), W_(M+1-k)]; at 99% it needs 8 pairs). Standard library only.

- `random_effects`: DerSimonian-Laird: blocks' estimates y_b with within-block variances v_b,
  weights 1 / v_b, Q = sum w_b (y_b - y_FE)^2, the between-block variance
  tau^2 = max(0, (Q - (k - 1)) / (sum w - sum w^2 / sum w)), the estimate weighted by
  1 / (v_b + tau^2), its interval +- t(k - 1) x sqrt(1 / sum 1 / (v_b + tau^2)). With 2 or 3
  blocks t has 1 or 2 degrees of freedom (t = 63.7 and 9.9 at 99%): a very wide interval, as it
  should be where two leases are all there is to tell lease-to-lease variation from a shift.
- `t_quantile`: Student's t for integer degrees of freedom (Abramowitz & Stegun 26.7.3-4, inverted
  by bisection), so that the analysis needs no scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

Z = statistics.NormalDist()


def variance_of(lo: float, hi: float, confidence: float = 0.99) -> float:
    """The variance a symmetric normal interval of this width would have: how the blocks' exact
    intervals become the within-block variances the combination weighs."""
    return ((hi - lo) / (2 * Z.inv_cdf(0.5 + confidence / 2))) ** 2


def random_effects(estimates: Sequence[float], variances: Sequence[float],
                   confidence: float = 0.99) -> dict[str, float | int]:
    """DerSimonian-Laird over k >= 2 blocks (module docstring): estimate, ci_low, ci_high, tau2
    (the between-block variance), se, t (the quantile used), k."""
    k = len(estimates)
    if k < 2 or len(variances) != k or min(variances) <= 0:
        raise ValueError("a random-effects combination needs 2 or more blocks, each with a positive variance")
    w = [1 / v for v in variances]
    fixed = sum(wi * y for wi, y in zip(w, estimates)) / sum(w)
    q = sum(wi * (y - fixed) ** 2 for wi, y in zip(w, estimates))
    tau2 = max(0.0, (q - (k - 1)) / (sum(w) - sum(wi ** 2 for wi in w) / sum(w)))
    ws = [1 / (v + tau2) for v in variances]
    est = sum(wi * y for wi, y in zip(ws, estimates)) / sum(ws)
    se = math.sqrt(1 / sum(ws))
    t = t_quantile(0.5 + confidence / 2, k - 1)
    return {"estimate": est, "ci_low": est - t * se, "ci_high": est + t * se, "tau2": tau2, "se": se, "t": t, "k": k}


def half_width(variances: Sequence[float], tau2: float, confidence: float = 0.99) -> float:
    """The random-effects interval's half-width for blocks of these within-block variances."""
    k = len(variances)
    return t_quantile(0.5 + confidence / 2, k - 1) * math.sqrt(1 / sum(1 / (v + tau2) for v in variances))


def cheapest(variances: Sequence[float], pairs: Sequence[int], tau2: float, target: float,
             confidence: float = 0.99, most: int = 200, most_blocks: int = 50) -> tuple[str, int] | None:
    """What would bring a random-effects interval's half-width to `target` for the fewest pairs in
    all, if the blocks stay as measured: ("pairs", m), m pairs in each of these blocks (impossible
    where the between-block term alone, t x tau / sqrt(k), is wider: more pairs here shrink only
    the within-block variances, as 1/n), or ("blocks", k), k blocks each like the mean one; None
    where neither does within `most` pairs a block or `most_blocks` blocks."""
    k = len(variances)
    options = []
    if t_quantile(0.5 + confidence / 2, k - 1) * math.sqrt(tau2 / k) < target:
        m = next((m for m in range(max(pairs) + 1, most + 1)
                  if half_width([v * n / m for v, n in zip(variances, pairs)], tau2, confidence) <= target), None)
        if m:
            options.append((m * k, "pairs", m))
    v, n = statistics.fmean(variances), statistics.fmean(pairs)
    blocks = next((j for j in range(k + 1, most_blocks + 1) if half_width([v] * j, tau2, confidence) <= target), None)
    if blocks:
        options.append((blocks * n, "blocks", blocks))
    return min(options)[1:] if options else None


def t_cdf(x: float, df: int) -> float:
    """Student's t distribution function for integer degrees of freedom."""
    if df < 1:
        raise ValueError("degrees of freedom must be at least 1")
    theta = math.atan(x / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd: 1/2 + (theta + sin cos (1 + 2/3 cos^2 + 2.4/3.5 cos^4 + ...)) / pi
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for j in range(1, (df - 1) // 2):
            term *= c2 * (2 * j) / (2 * j + 1)
            total += term
        return 0.5 + (theta + (s * math.cos(theta) * total if df > 1 else 0.0)) / math.pi
    term, total = 1.0, 1.0  # even: 1/2 + sin/2 (1 + 1/2 cos^2 + 1.3/2.4 cos^4 + ...)
    for j in range(1, df // 2):
        term *= c2 * (2 * j - 1) / (2 * j)
        total += term
    return 0.5 + s * total / 2


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (bisection on `t_cdf`)."""
    if not 0 < p < 1:
        raise ValueError("p must be in (0, 1)")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2
