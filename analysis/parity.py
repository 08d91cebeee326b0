"""Decode parity: does a forked engine decode at the rate of a spawned one, across cold starts?

A process's decode rate can be set at its start and stay for its life, so the question is
asked of cold starts, not of decode windows: each cold start's rate (for a real engine the median
of that start's decode windows) on each side. Levels move between leases and hosts (same-method
medians 1.5-3.3% apart between two leases of one H100), so cold starts are compared where they
ran together:

- **blocks** are leases: a cold start's `host.boot_id` (a lent machine is booted per lease);
  records that do not name it (before record/3) form one block, "leases not recorded";
- **pairs**: within a block, each side's cold starts in the order they ran (`started_at`, else the
  record's order) are paired round by round, the i-th fork with the i-th spawn; a leftover is
  dropped and counted. Each pair gives its relative difference d = fork / spawn - 1 (in %);
- **within a block**: the Hodges-Lehmann shift of the d's with its exact Wilcoxon signed-rank 99%
  interval (`stats.signed_rank_shift`: 8 pairs at least);
- **across blocks**: one block gives its own interval, labelled "one lease: between-lease
  variation not in this interval"; two or more are combined by random effects (DerSimonian-Laird,
  each block's variance from its exact interval, t with k - 1 degrees of freedom:
  `blocked.random_effects`), an interval that widens with the lease-to-lease variation and is very
  wide with 2-3 leases. A block with too few pairs for its own interval is left out and named.
- **unpaired fallback**: where records keep no cold start of their own (record/1), the samples'
  Hodges-Lehmann shift with its exact Mann-Whitney interval (`forkspawn.stats.shift`, 5 a side).

The pairs: a fork-like method label against its spawn twin of the same mode (`fork` against
`spawn`, `fork-mp` against `spawn-mp`, `fork-eager` against `spawn-eager`); a fork mitigation
without a twin (`fork-gcfreeze`) against plain `spawn`, the rate it should reach.

Verdicts, at `TOLERANCE` (3%: the issue's goal; the break-even decode gap of a fleet that decodes
8 hours a day on the committed H200 start-up figures is about that, so a smaller tolerance is
for a busier fleet: `analysis plan` prints the break-even per deployment):
- "equal within ±3%": the interval lies inside ±3% of the reference;
- "differs": the interval excludes 0 and reaches beyond ±3% ("differs by less than 3%" where it
  excludes 0 inside it);
- otherwise "unresolved", with what would decide it at the spread measured: the cold starts a side
  (each bound's distance from the estimate shrinking as 1/sqrt(n), `stats.samples_for`) that would
  exclude 0 if the shift is as estimated, or fit the interval inside ±3%, whichever is fewer; or,
  across leases, where even infinitely many cold starts in these leases would leave the interval
  wider than that (its floor, t x tau / sqrt(k)), "cold starts from another lease would decide
  it, not more in this one", with about how many leases would;
- "no interval": too few pairs (or, unpaired, cold starts) for a 99% interval.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import pandas as pd

from forkspawn import vocabulary as vocab
from forkspawn.stats import min_pairs, samples_for, shift, signed_rank_shift

from . import blocked
from .load import CONFIG_KEY, latest

TOLERANCE = 0.03
CONFIDENCE = 0.99
MIN_PAIRS = min_pairs(CONFIDENCE)  # pairs a lease needs for its exact 99% interval (8)
MIN_UNPAIRED = 5  # cold starts a side the exact Mann-Whitney 99% interval needs
MAX_LEASES = 50  # beyond this a "leases needed" estimate says "more"
NO_LEASE = "lease not recorded"  # the block of cold starts without a boot id
UNPAIRED = "unpaired: the records keep no cold start of their own (before record/2)"
COLUMNS = ["machine", "engine", "model", "tp", "parent_state", "cuda_check", "method", "reference", "batch", "rate",
           "reference_rate", "n", "reference_n", "diff_pct", "ci_low_pct", "ci_high_pct", "verdict", "cold_starts_needed",
           "design", "pairs", "dropped", "leases", "tau_pct", "floor_pct", "lease_bound", "leases_needed", "scope",
           "blocks"]


def reference_of(method: str, methods: set[str]) -> str | None:
    """The spawn label a fork-like label is compared with (module docstring), or None."""
    base, variant = vocab.split_method(method)
    if base != "fork" or variant == vocab.OVERRIDE:
        return None
    twin = vocab.join_method("spawn", variant)
    return twin if twin in methods else ("spawn" if "spawn" in methods else None)


def table(records: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """One row per pair and batch of every configuration measured (`load.Results.records`, the
    newest measurement of each: `load.latest`): paired by lease and round where the records keep
    their cold starts, else unpaired."""
    rows = []
    for pair, rec, ref in _pairs(records):
        for batch in rec.batches or []:
            a, b = cold_starts(rec, batch), cold_starts(ref, batch)
            scope = UNPAIRED
            if a and b:
                paired = compare_paired(a, b, tolerance)
                if paired["pairs"]:
                    rows.append({**pair, "batch": batch, **paired})
                    continue
                scope = "unpaired: no lease holds cold starts of both (lease and method confounded)"
            a = rec.samples.get(vocab.tokens_per_s(batch)) or []
            b = ref.samples.get(vocab.tokens_per_s(batch)) or []
            if len(a) and len(b):
                rows.append({**pair, "batch": batch, **compare(a, b, tolerance, scope)})
    return pd.DataFrame(rows, columns=COLUMNS)


def cold_starts(rec: Any, batch: int) -> list[tuple[str, str, float]]:
    """(block, order, rate) of each ok cold start of a record that has a rate at `batch`: its
    lease (boot id, else NO_LEASE) and when it ran (`started_at`, else its place in the record)."""
    out = []
    for i, c in enumerate(rec.cold_starts or []):
        rate = (c.get("tokens_per_s") or {}).get(str(batch))
        if c.get("status") != "ok" or not isinstance(rate, (int, float)) or not math.isfinite(rate):
            continue
        boot = (c.get("host") or {}).get("boot_id")
        out.append((boot or NO_LEASE, c.get("started_at") or f"{i:06d}", float(rate)))
    return out


def compare_paired(a: list[tuple[str, str, float]], b: list[tuple[str, str, float]],
                   tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Cold starts a against reference cold starts b, (block, order, rate) each (`cold_starts`),
    paired by lease and round (module docstring): the shift in % of the reference with its 99%
    interval, the verdict and what would decide it."""
    blocks, dropped = {}, 0
    for block in dict.fromkeys(x[0] for x in a + b):
        mine = sorted((o, r) for k, o, r in a if k == block)
        ref = sorted((o, r) for k, o, r in b if k == block)
        dropped += abs(len(mine) - len(ref))
        if pairs := [100 * (x / y - 1) for (_, x), (_, y) in zip(mine, ref) if y]:
            blocks[block] = pairs
    base = statistics.median(r for *_, r in b)
    out: dict[str, Any] = {"rate": statistics.median(r for *_, r in a), "reference_rate": base, "n": len(a),
                           "reference_n": len(b), "design": "paired", "pairs": sum(map(len, blocks.values())),
                           "dropped": dropped, "leases": len(blocks), "tau_pct": None, "floor_pct": None,
                           "lease_bound": False, "leases_needed": None, "cold_starts_needed": None, "blocks": None}
    within = {k: signed_rank_shift(d, CONFIDENCE) for k, d in blocks.items()}
    bounded = {k: s for k, s in within.items() if s["ci_low"] is not None}
    short = [f"{_lease(k)} ({_pairs_text(len(blocks[k]))})" for k in blocks if k not in bounded]
    left_out = f"; left out, too few pairs for an interval: {', '.join(short)}" if short and bounded else ""
    tol = 100 * tolerance
    if not bounded:
        pooled = signed_rank_shift([d for ds in blocks.values() for d in ds], CONFIDENCE)
        most = max(map(len, blocks.values()), default=0)
        return out | {"diff_pct": pooled["estimate"], "ci_low_pct": None, "ci_high_pct": None,
                      "verdict": "no interval", "cold_starts_needed": MIN_PAIRS,
                      "scope": f"{_pairs_text(most)} in the largest block, {MIN_PAIRS} needed for an exact 99% interval"}
    if len(bounded) == 1:
        (block, s), = bounded.items()
        est, lo, hi = s["estimate"], s["ci_low"], s["ci_high"]
        one = "leases not recorded" if block == NO_LEASE else "one lease"
        out |= {"diff_pct": est, "ci_low_pct": lo, "ci_high_pct": hi, "leases": 1,
                "scope": f"{one}: between-lease variation not in this interval{left_out}"}
        verdict = _verdict(lo, hi, tol)
        if verdict == "unresolved":
            out["cold_starts_needed"] = _needed(est, lo, hi, len(blocks[block]), tol)
        return out | {"verdict": verdict}
    keys = list(bounded)
    # a block whose pairs all differ alike has a zero-width interval: weigh it as exact, not infinitely
    variances = [max(blocked.variance_of(bounded[k]["ci_low"], bounded[k]["ci_high"], CONFIDENCE), 1e-12) for k in keys]
    re = blocked.random_effects([bounded[k]["estimate"] for k in keys], variances, CONFIDENCE)
    est, lo, hi, k = re["estimate"], re["ci_low"], re["ci_high"], len(keys)
    floor = re["t"] * math.sqrt(re["tau2"] / k)  # the half-width left with every lease measured forever
    out |= {"diff_pct": est, "ci_low_pct": lo, "ci_high_pct": hi, "leases": k, "tau_pct": math.sqrt(re["tau2"]),
            "floor_pct": floor, "scope": f"{k} leases, random effects (DerSimonian-Laird, t with {k - 1} df){left_out}",
            # each lease's variance (%^2) and pairs, and tau^2: what the planner's own target needs (decide.py)
            "blocks": (tuple(variances), tuple(len(blocks[x]) for x in keys), re["tau2"])}
    verdict = _verdict(lo, hi, tol)
    if verdict == "unresolved":
        # the half-width that would exclude 0 or fit ±tolerance, whichever comes first
        more = blocked.cheapest(variances, [len(blocks[x]) for x in keys], re["tau2"], max(abs(est), tol - abs(est)),
                                CONFIDENCE, 200, MAX_LEASES)
        if more and more[0] == "blocks":
            out["lease_bound"], out["leases_needed"] = True, more[1]
        elif more:
            out["cold_starts_needed"] = more[1]
        else:
            out["lease_bound"] = floor >= max(abs(est), tol - abs(est))
    return out | {"verdict": verdict}


def interval_needs(r: Any) -> str:
    """What a parity row without an interval would take to have one, by its design."""
    if r["design"] == "paired":
        return f"at least {MIN_PAIRS} cold starts a side, paired by round in one lease (decode parity)"
    return f"at least {MIN_UNPAIRED} cold starts a side (decode parity)"


def lease_text(k: int, floor: float, target: float, leases: Any, verb: bool = True) -> str:
    """'cold starts from another lease would decide it, not more in these 2 (about 5 leases in all)':
    where between-lease variation (the floor, t x tau / sqrt(k)) stands between the data and a
    verdict, or another lease costs fewer cold starts than more in these; `verb=False` for a list
    that already says "would decide it"."""
    here = f"not more in these {k}" if floor >= target else f"sooner than more in these {k}"
    about = (f"about {int(leases)} leases in all" if leases is not None and not pd.isna(leases)
             else f"more than {MAX_LEASES} leases at this variation")
    return f"cold starts from another lease{' would decide it' if verb else ''}, {here} ({about})"


def _lease(block: str) -> str:
    return NO_LEASE if block == NO_LEASE else f"lease {block[:8]}"


def _verdict(lo: float, hi: float, tol: float) -> str:
    if -tol <= lo and hi <= tol:
        return f"equal within ±{tol:g}%" if lo <= 0 <= hi else f"differs by less than {tol:g}%"
    return "differs" if lo > 0 or hi < 0 else "unresolved"


def _needed(est: float, lo: float, hi: float, n: int, tol: float) -> int | None:
    """Cold starts a side that would decide an unresolved interval at this spread: one that
    excludes 0 (a real gap the size of the estimate: the bound on 0's side must pass it), or one
    that fits inside ±tol (both bounds inside: the slower of the two), whichever is fewer."""
    exclude = samples_for(hi - est, n, -est) if est < 0 else samples_for(est - lo, n, est) if est > 0 else None
    fit = (max(samples_for(est - lo, n, tol + est) or n, samples_for(hi - est, n, tol - est) or n)
           if abs(est) < tol else None)
    return min(filter(None, (exclude, fit)), default=None)


def compare(a: list[float], b: list[float], tolerance: float = TOLERANCE, scope: str | None = None) -> dict[str, Any]:
    """Rates a against reference rates b, unpaired (the fallback where records keep no cold start
    of their own): medians, the difference in % of b's median with its interval, the verdict and
    the cold starts a side that would bring the interval to ±tolerance."""
    s = shift(a, b, CONFIDENCE)
    base = statistics.median(b)
    pct = (lambda x: None if x is None else 100 * x / base) if base else (lambda x: None)
    lo, hi = pct(s["ci_low"]), pct(s["ci_high"])
    tol = 100 * tolerance
    n = min(len(a), len(b))
    needed = None
    if lo is None or hi is None:
        verdict = "no interval"
    else:
        verdict = _verdict(lo, hi, tol)
        if verdict == "unresolved":
            needed = _needed(pct(s["estimate"]) or 0, lo, hi, n, tol)
    return {"rate": statistics.median(a), "reference_rate": base, "n": len(a), "reference_n": len(b),
            "diff_pct": pct(s["estimate"]), "ci_low_pct": lo, "ci_high_pct": hi, "verdict": verdict,
            "cold_starts_needed": needed, "design": "unpaired", "pairs": None, "dropped": None, "leases": None,
            "tau_pct": None, "floor_pct": None, "lease_bound": False, "leases_needed": None,
            "scope": scope or UNPAIRED, "blocks": None}


HEADER = ["setting", "method vs reference", "batch", "tokens/s (n cold starts)", "reference tokens/s (n)",
          "how compared", "shift [99% interval]", "verdict"]


def cells(parity: pd.DataFrame) -> list[list[str]]:
    """The parity table's rows as text, in HEADER's order (for Markdown and HTML alike)."""
    out = []
    for r in parity.itertuples(index=False):
        check = "" if r.cuda_check in (None, "runtime") else f" ({r.cuda_check} check)"
        out.append([f"{r.machine} · {r.engine} · TP={r.tp} · parent {r.parent_state}{check}",
                    f"{r.method} vs {r.reference}", str(r.batch), f"{r.rate:,.0f} ({r.n})",
                    f"{r.reference_rate:,.0f} ({r.reference_n})", design_text(r), _pct(r), verdict_text(r)])
    return out


def design_text(r: Any) -> str:
    """'14 pairs by round; leases not recorded: between-lease variation not in this interval' (and
    how many were dropped), or the unpaired fallback's reason."""
    if r.design != "paired":
        return str(r.scope)
    dropped = f", {int(r.dropped)} dropped" if r.dropped else ""
    scope = "" if r.verdict == "no interval" else f"; {r.scope}"  # the verdict says why there is none
    return f"{_pairs_text(int(r.pairs))} by round{dropped}{scope}"


def _pairs_text(n: int) -> str:
    return f"{n} pair{'s' * (n != 1)}"


NOTE = ("Each side's rate: the median over cold starts of each cold start's rate (for an engine, the median of "
        "its decode windows). Paired: within each lease (the cold start's boot id), fork's and spawn's cold starts "
        "paired round by round in the order they ran; shift: the Hodges-Lehmann estimate of the pairs' relative "
        "differences (the median of their Walsh averages) with its exact Wilcoxon signed-rank 99% interval "
        f"({MIN_PAIRS} pairs at least); several leases combined by random effects (DerSimonian-Laird, t with k - 1 "
        "degrees of freedom: wide with 2-3 leases). Unpaired (records without their cold starts): the median of every "
        "pairwise difference, in % of the reference's median, with its exact Mann-Whitney 99% interval. Equal means "
        f"the interval lies within ±{100 * TOLERANCE:g}%.")


def markdown(parity: pd.DataFrame) -> str:
    """The parity table as Markdown ('' where no pair was measured)."""
    if parity.empty:
        return ""
    rows = ["| " + " | ".join(HEADER) + " |", "|---" * len(HEADER) + "|"]
    return "\n".join(["## Decode parity across cold starts", "", NOTE, ""] + rows +
                     ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells(parity)] + [""])


def html(parity: pd.DataFrame) -> str:
    """The parity table as HTML, every string escaped ('' where no pair was measured)."""
    from html import escape

    if parity.empty:
        return ""
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in cells(parity))
    return (f"<p class=\"note\">{escape(NOTE)}</p><div class=\"scroll\"><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


def verdict_text(r: Any) -> str:
    """The verdict with what would decide it: cold starts a side, or, where lease-to-lease
    variation is what is left, cold starts from other leases."""
    if r.verdict == "unresolved" and r.lease_bound:
        target = max(abs(r.diff_pct), 100 * TOLERANCE - abs(r.diff_pct))
        return f"unresolved: {lease_text(int(r.leases), r.floor_pct, target, r.leases_needed)}"
    if r.verdict == "unresolved" and pd.notna(r.cold_starts_needed):
        where = f" in each of these {int(r.leases)} leases" if r.design == "paired" and r.leases > 1 else ""
        return f"unresolved: about {int(r.cold_starts_needed)} cold starts a side{where} would decide it"
    if r.verdict == "no interval" and r.design == "paired":
        return f"no interval: {r.scope}"
    if r.verdict == "no interval":
        return f"no interval with {min(r.n, r.reference_n)} cold starts a side ({MIN_UNPAIRED} needed)"
    return r.verdict


def _pct(r: Any) -> str:
    if r.diff_pct is None or pd.isna(r.diff_pct):
        return ""
    bounds = "" if r.ci_low_pct is None or pd.isna(r.ci_low_pct) else f" [{r.ci_low_pct:+.1f}, {r.ci_high_pct:+.1f}]"
    return f"{r.diff_pct:+.1f}%{bounds}"


# What the diagnostics table shows of each process, in this order (the record's decode.<process>.<name>)
DIAGNOSTICS = ("threads", "torch_threads", "cpus", "cpu_user_s", "cpu_system_s", "voluntary_switches",
               "involuntary_switches", "minor_faults", "major_faults", "gc_collections", "gc_s")
DIAGNOSTIC_COLUMNS = ["machine", "engine", "model", "tp", "parent_state", "cuda_check", "method", "reference", "process", "name",
                      "value", "reference_value"]


def diagnostics(records: pd.DataFrame) -> pd.DataFrame:
    """Per pair, what each process did while decoding (medians over cold starts, method beside
    reference), and the step times the parent saw (medians over windows of each window's 50th and
    90th percentile, per batch): the evidence for why two rates differ, or that nothing differs."""
    rows = []
    for pair, rec, ref in _pairs(records):
        processes = dict.fromkeys(k.split(".")[1] for r in (rec, ref) for k in r.samples if k.startswith("decode."))
        for process in processes:
            for name in DIAGNOSTICS:
                metric = vocab.decode_activity(process, name)
                a, b = _median(rec.samples.get(metric)), _median(ref.samples.get(metric))
                if a is not None or b is not None:
                    rows.append({**pair, "process": process, "name": name, "value": a, "reference_value": b})
        for batch in rec.batches or []:
            for i, q in ((1, "p50"), (2, "p90")):
                a, b = _step_ms(rec, batch, i), _step_ms(ref, batch, i)
                if a is not None or b is not None:
                    rows.append({**pair, "process": "parent (sees)", "name": f"step ms {q}, batch {batch}",
                                 "value": a, "reference_value": b})
    return pd.DataFrame(rows, columns=DIAGNOSTIC_COLUMNS)


def diagnostics_html(diag: pd.DataFrame) -> str:
    """The diagnostics as one table per pair, processes down, method and reference across ('' if none)."""
    from html import escape

    parts = []
    for (engine, tp, state, method, reference), rows in diag.groupby(
            ["engine", "tp", "parent_state", "method", "reference"], sort=False):
        body = "".join(f"<tr><td>{escape(r.process)}</td><td>{escape(r.name)}</td><td class=\"num\">{_num(r.value)}</td>"
                       f"<td class=\"num\">{_num(r.reference_value)}</td></tr>" for r in rows.itertuples())
        parts.append(f"<p>{escape(f'{engine} · TP={tp} · parent {state}')}: {escape(method)} vs {escape(reference)}</p>"
                     f"<div class=\"scroll\"><table><thead><tr><th>process</th><th>while decoding</th>"
                     f"<th>{escape(method)}</th><th>{escape(reference)}</th></tr></thead><tbody>{body}</tbody></table></div>")
    return "".join(parts)


def _num(v: Any) -> str:
    from .fmt import num

    return "" if v is None or pd.isna(v) else num(v)


def _pairs(records: pd.DataFrame):
    """(pair, record, reference record) of every fork-like label and its spawn reference, in the
    newest ok measurements of each setting; `pair` is the setting with `method` and `reference`."""
    ok = records[records["status"] == "ok"]
    if ok.empty:
        return
    setting = ["machine", "engine", "model", "tp", "parent_state", "cuda_check"]
    for key, group in latest(ok, CONFIG_KEY).groupby(setting, sort=False, dropna=False):
        by_method = dict(zip(group["method"], group["record"]))
        for method, rec in by_method.items():
            if (ref := reference_of(method, set(by_method))) is not None:
                yield {**dict(zip(setting, key)), "method": method, "reference": ref}, rec, by_method[ref]


def _median(xs: list[float] | None) -> float | None:
    return statistics.median(xs) if xs else None


def _step_ms(rec: Any, batch: int, i: int) -> float | None:
    """The median over every window of every cold start of one percentile of its step times."""
    return _median([w[i] for c in rec.cold_starts or [] for w in c.get("window_step_ms", {}).get(str(batch), [])])
