"""The precision analysis of a records file: per configuration the CV and asv's 99% interval of
the headline metrics; per headline comparison whether it is resolved now, asv's verdict, and the
repeats it needs. Needs asv (not pandas); `forkspawn quality precision` prints it."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from forkspawn import sidecar
from forkspawn import vocabulary as vocab
from forkspawn.record import Record


def _ci(samples: list[float]) -> tuple[float, float, float]:
    """asv's median and 99% CI (asv_runner.statistics.compute_stats), as asv stores them."""
    from asv_runner.statistics import compute_stats

    median, st = compute_stats(list(samples), 1)
    return median, st["ci_99_a"], st["ci_99_b"]


def resolved(a: list[float], b: list[float]) -> bool:
    """The 99% CIs of the two medians do not overlap: asv's own fallback test in `is_different`."""
    if len(a) < 2 or len(b) < 2:
        return False
    _, a0, a1 = _ci(a)
    _, b0, b1 = _ci(b)
    return a1 < b0 or b1 < a0


def asv_is_different(a: list[float], b: list[float]) -> bool:
    """What `asv compare` would conclude (Mann-Whitney U at p < 0.002 where n allows, else the CIs)."""
    from asv._stats import is_different

    _, sa = _stats(a)
    _, sb = _stats(b)
    return bool(is_different(a, b, sa, sb))


def _stats(samples: list[float]):
    from asv_runner.statistics import compute_stats

    return compute_stats(list(samples), 1)


def repeats_needed(a: list[float], b: list[float], power: float = 0.95, draws: int = 200,
                   n_max: int = 30, seed: int = 9) -> int | None:
    """Smallest n (both sides) at which `resolved` holds in >= `power` of bootstrap draws of n
    samples from each observed set; None if not by `n_max`.

    Why a bootstrap: the CI that must separate is asv's, whose width at small n comes from a
    Laplace posterior and at n >= 8 from order statistics; redrawing from the observed samples
    asks how often a run of n repeats on this machine would show the difference, without
    assuming a noise model. It needs some samples to draw from: at least 5 per side.
    """
    import random

    if min(len(a), len(b)) < 5:
        return None
    rng = random.Random(seed)
    for n in range(2, n_max + 1):
        hits = sum(resolved(rng.choices(a, k=n), rng.choices(b, k=n)) for _ in range(draws))
        if hits >= power * draws:
            return n
    return None


def config_key(rec: Record) -> tuple:
    extra = json.dumps((rec.config or {}).get("extra") or {}, sort_keys=True)
    return (rec.engine, rec.method, (rec.config or {})["parent_state"], rec.cuda_check or "runtime", rec.tp, extra)


# (method A, parent state A) vs (method B, parent state B): the headline comparisons
HEADLINE_PAIRS = ((("fork", "torch"), ("spawn", "bare")),  # an engine that imported torch forks; or spawns from bare
                  (("fork", "bare"), ("spawn", "bare")),
                  (("fork", "torch"), ("spawn", "torch")))


HEADLINE_METRICS = (vocab.TIME_TO_READY, vocab.mem(vocab.rank_label(0), "uss"))


def precision(path: str | os.PathLike, power: float = 0.95) -> dict[str, Any]:
    """Per configuration: CV and asv CI of every headline metric; per headline comparison:
    resolved at 99% now, asv's verdict, and the repeats needed (see `repeats_needed`).

    When a configuration appears in several records (several runs), the last one is used.
    """
    from forkspawn.stats import summarize

    latest: dict[tuple, Record] = {}
    for rec in sidecar.records(path):
        if rec.status == "ok" and rec.samples:
            latest[config_key(rec)] = rec
    configs = []
    for key, rec in sorted(latest.items()):
        metrics = [m for m in rec.samples if m in HEADLINE_METRICS or re.fullmatch(vocab.mem_re(r"rank[^.]*", "uss"), m)]
        configs.append({"engine": key[0], "method": key[1], "parent_state": key[2], "tp": key[4],
                        "stats": {m: summarize(rec.samples[m]) for m in sorted(metrics)}})
    comparisons = []
    for key, rec in latest.items():
        engine, method, state, check, tp, extra = key
        for (ma, sa), (mb, sb) in HEADLINE_PAIRS:
            if (method, state) != (ma, sa):
                continue
            other = latest.get((engine, mb, sb, check, tp, extra))
            if other is None:
                continue
            for metric in HEADLINE_METRICS:
                a, b = rec.samples.get(metric), other.samples.get(metric)
                if not a or not b:
                    continue
                comparisons.append({
                    "engine": engine, "tp": tp, "metric": metric, "a": f"{ma}/{sa}", "b": f"{mb}/{sb}",
                    "median_a": _ci(a)[0], "median_b": _ci(b)[0], "ratio_b_over_a": _ci(b)[0] / _ci(a)[0],
                    "n": [len(a), len(b)], "resolved_99": resolved(a, b), "asv_is_different": asv_is_different(a, b),
                    "repeats_needed": repeats_needed(a, b, power=power), "power": power})
    return {"records": str(path), "configs": configs, "comparisons": comparisons}
