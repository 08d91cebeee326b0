"""Decode parity: does a forked engine decode at the rate of a spawned one, across cold starts?

A process's decode rate can be set at its start and stay for its life, so the question is
asked of cold starts, not of decode windows: each cold start's rate (the record's
`tokens_per_s.b<batch>` samples, one per cold start: the median of that start's windows for a
real engine) on each side, and their difference as the Hodges-Lehmann estimate with its exact,
distribution-free 99% interval (`forkspawn.stats.shift`), in percent of the reference's median.

The pairs: a fork-like method label against its spawn twin of the same mode (`fork` against
`spawn`, `fork-eager` against `spawn-eager`); a fork mitigation without a twin
(`fork-gcfreeze`) against plain `spawn`, the rate it should reach.

Verdicts, at `TOLERANCE` (3%: the issue's goal; the break-even decode gap of a fleet that decodes
8 hours a day on the committed H200 start-up figures is about that, so a smaller tolerance is
for a busier fleet: `analysis plan` prints the break-even per deployment):
- "equal within ±3%": the interval lies inside ±3% of the reference;
- "differs": the interval excludes 0 and reaches beyond ±3% ("differs by less than 3%" where it
  excludes 0 inside it);
- otherwise "unresolved", with the cold starts a side that would decide it at the spread
  measured (each bound's distance from the estimate shrinking as 1/sqrt(n), `stats.samples_for`): the fewer of
  those that would exclude 0 if the shift is as estimated, and those that would fit the interval
  inside ±3%;
- "no interval": fewer than 5 cold starts a side cannot give a 99% interval by this method.
"""

from __future__ import annotations

import statistics
from typing import Any

import pandas as pd

from forkspawn import vocabulary as vocab
from forkspawn.stats import samples_for, shift

from .load import CONFIG_KEY, latest

TOLERANCE = 0.03
CONFIDENCE = 0.99
COLUMNS = ["machine", "engine", "model", "tp", "parent_state", "cuda_check", "method", "reference", "batch", "rate",
           "reference_rate", "n", "reference_n", "diff_pct", "ci_low_pct", "ci_high_pct", "verdict", "cold_starts_needed"]


def reference_of(method: str, methods: set[str]) -> str | None:
    """The spawn label a fork-like label is compared with (module docstring), or None."""
    base, variant = vocab.split_method(method)
    if base != "fork" or variant == vocab.OVERRIDE:
        return None
    twin = vocab.join_method("spawn", variant)
    return twin if twin in methods else ("spawn" if "spawn" in methods else None)


def table(records: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """One row per pair and batch of every configuration measured (`load.Results.records`, the
    newest measurement of each: `load.latest`)."""
    rows = []
    for pair, rec, ref in _pairs(records):
        for batch in rec.batches or []:
            a = rec.samples.get(vocab.tokens_per_s(batch)) or []
            b = ref.samples.get(vocab.tokens_per_s(batch)) or []
            if len(a) and len(b):
                rows.append({**pair, "batch": batch, **compare(a, b, tolerance)})
    return pd.DataFrame(rows, columns=COLUMNS)


def compare(a: list[float], b: list[float], tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Rates a against reference rates b: medians, the difference in % of b's median with its
    interval, the verdict and the cold starts a side that would bring the interval to ±tolerance."""
    s = shift(a, b, CONFIDENCE)
    base = statistics.median(b)
    pct = (lambda x: None if x is None else 100 * x / base) if base else (lambda x: None)
    lo, hi = pct(s["ci_low"]), pct(s["ci_high"])
    tol = 100 * tolerance
    n = min(len(a), len(b))
    needed = None
    if lo is None or hi is None:
        verdict = "no interval"
    elif -tol <= lo and hi <= tol:
        verdict = f"equal within ±{tol:g}%" if lo <= 0 <= hi else f"differs by less than {tol:g}%"
    elif lo > 0 or hi < 0:
        verdict = "differs"
    else:
        # what would decide it at this spread: an interval that excludes 0 (a real gap the size of
        # the estimate: the bound on 0's side must pass it), or one that fits inside ±tolerance
        # (both bounds inside: the slower of the two)
        verdict, est = "unresolved", pct(s["estimate"]) or 0
        exclude = samples_for(hi - est, n, -est) if est < 0 else samples_for(est - lo, n, est) if est > 0 else None
        fit = (max(samples_for(est - lo, n, tol + est) or n, samples_for(hi - est, n, tol - est) or n)
               if abs(est) < tol else None)
        needed = min(filter(None, (exclude, fit)), default=None)
    return {"rate": statistics.median(a), "reference_rate": base, "n": len(a), "reference_n": len(b),
            "diff_pct": pct(s["estimate"]), "ci_low_pct": lo, "ci_high_pct": hi, "verdict": verdict,
            "cold_starts_needed": needed}


HEADER = ["setting", "method vs reference", "batch", "tokens/s (n cold starts)", "reference tokens/s (n)",
          "shift [99% interval]", "verdict"]


def cells(parity: pd.DataFrame) -> list[list[str]]:
    """The parity table's rows as text, in HEADER's order (for Markdown and HTML alike)."""
    out = []
    for r in parity.itertuples(index=False):
        check = "" if r.cuda_check in (None, "runtime") else f" ({r.cuda_check} check)"
        out.append([f"{r.machine} · {r.engine} · TP={r.tp} · parent {r.parent_state}{check}",
                    f"{r.method} vs {r.reference}", str(r.batch), f"{r.rate:,.0f} ({r.n})",
                    f"{r.reference_rate:,.0f} ({r.reference_n})", _pct(r), verdict_text(r)])
    return out


NOTE = ("Each side's rate: the median over cold starts of each cold start's rate (for an engine, the median of "
        "its decode windows). Shift: the Hodges-Lehmann estimate of method minus reference (the median of every "
        "pairwise difference of cold starts), in % of the reference's median, with its exact distribution-free "
        f"99% interval (Mann-Whitney); equal means the interval lies within ±{100 * TOLERANCE:g}%.")


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
    if r.verdict == "unresolved" and pd.notna(r.cold_starts_needed):
        return f"unresolved: about {int(r.cold_starts_needed)} cold starts a side would decide it"
    if r.verdict == "no interval":
        return f"no interval with {min(r.n, r.reference_n)} cold starts a side (5 needed)"
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
