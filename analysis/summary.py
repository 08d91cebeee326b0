"""The executive summary: per machine x engine x TP x parent state, does each start method work,
what it costs against fork (time to ready, host and GPU memory, decode rate) with 99% intervals,
and a verdict that never rests on a difference inside its interval.

Intervals of a difference: asv stores a 99% interval per median, not the samples' joint
distribution, so the difference a - b of two medians gets the conservative interval
[lo_a - hi_b, hi_a - lo_b] (it contains every difference both intervals allow). A difference is
*resolved* when that interval excludes 0. The cold starts needed to resolve one are estimated by
letting the interval shrink as 1/sqrt(n): M = n * (reach / |difference|)^2, rounded up (reach:
the distance from the difference to the bound on 0's side, as intervals are not symmetric); at
small n asv widens its intervals more than that, so M is a lower bound ("about").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from forkspawn import vocabulary as vocab

from . import models, verdict
from .capacity import BUSY_HOURS, HOST_READINGS, RESTARTS_PER_DAY, host_memory
from .decide import THRESHOLD, break_even_gap
from .derive import RESTART, Estimate, as_asked, difference, runs_needed, view  # noqa: F401 (Estimate, difference: the API)
from .fmt import cause, engine_label, interval, num
from .load import latest, method_order

GROUP = ["machine", "engine", "tp", "parent_state", "cuda_check", "model"]  # two model sizes never mix
CUDA_STATES = verdict.CUDA_STATES


# (key, label, metric regex, the better direction); the decode metric is the largest batch's; a
# replica's memory is the largest of the group's PSS readings (at ready, after decode, after gc)
METRICS = [
    ("ttr", "start request to ready, s", vocab.TIME_TO_READY, -1),
    ("exec", "exec to ready, s", vocab.EXEC_TO_READY, -1),
    ("teardown", "teardown, s", vocab.TEARDOWN, -1),
    ("restart", "restart: teardown + exec to ready, s", RESTART, -1),
    ("rank_mib", "host MiB per rank (PSS, rank 0)", re.escape(vocab.mem(vocab.rank_label(0), "pss")), -1),
    ("replica_mib", "host MiB per replica (PSS, group; the largest reading)",
     "|".join(re.escape(m) for _, m in HOST_READINGS), -1),
    ("gpu_mib", "GPU MiB per GPU process (the largest)", vocab.mem_re(r"(?!group\.|parent\.|ray\.)[^.]+",
                                                                    vocab.GPU_KIND), -1),
    ("decode", "decode tokens/s", vocab.TOKENS_RE, 1),
]
# A restart (teardown + exec to ready) where exec to ready was recorded (record/3): then it is what
# is judged, and its parts are shown beside it; else time to ready, as before
RESTART_KEYS = ("exec", "teardown", "restart")
WORDS = {"ttr": ("starts {d} s faster", "starts {d} s slower"),
         "restart": ("restarts {d} s faster", "restarts {d} s slower"),
         "rank_mib": ("needs {d} MiB less host memory per rank", "needs {d} MiB more host memory per rank"),
         "replica_mib": ("needs {d} MiB less host memory per replica", "needs {d} MiB more host memory per replica"),
         "gpu_mib": ("needs {d} MiB less GPU memory per rank", "needs {d} MiB more GPU memory per rank"),
         "decode": ("decodes {d} tokens/s faster", "decodes {d} tokens/s slower")}


@dataclass
class MethodRow:
    method: str
    method_used: str | None
    status: str
    cause: str | None
    values: dict[str, Estimate] = field(default_factory=dict)
    deltas: dict[str, Estimate] = field(default_factory=dict)  # this method minus the reference
    readings: dict[str, float] = field(default_factory=dict)  # the group's PSS by when it was read
    executor: str | None = None  # the engine's executor as it ran (vLLM: uni, mp, ray)

    @property
    def label(self) -> str:
        """The method that ran ("fork→spawn (forced)"); a labelled variant says it is a non-default override."""
        text = verdict.method_label(self.method, self.method_used, self.status)
        return text + " (non-default override)" if vocab.is_override(self.method) else text


@dataclass
class Group:
    key: dict[str, Any]  # GROUP values, engine_version, batch
    rows: list[MethodRow]
    reference: str | None  # the method the deltas are taken against (fork, or what ran as fork)
    verdicts: list[str]

    @property
    def keys(self) -> list[str]:
        """The METRICS shown: a restart and its parts only where exec to ready was recorded."""
        timed = any("exec" in r.values for r in self.rows)
        return [k for k, *_ in METRICS if timed or k not in RESTART_KEYS]

    @property
    def judged(self) -> list[str]:
        """The METRICS a verdict rests on: the restart where recorded (else time to ready), memory, decode."""
        start = "restart" if "restart" in self.keys else "ttr"
        return [k for k in self.keys if k not in ("ttr", *RESTART_KEYS) or k == start]

    @property
    def title(self) -> str:
        k = self.key
        check = "" if k["cuda_check"] in (None, "runtime") else f" ({k['cuda_check']} check)"
        size = models.of(k.get("model"))
        return (f"{k['machine']} · {engine_label(k['engine'], k.get('engine_version'))}"
                f"{f' · {size.label}' if size else ''} · TP={k['tp']} · parent {k['parent_state']}{check}")


def summarize(df: pd.DataFrame) -> tuple[list[Group], list[str]]:
    """Groups with a verdict each (the newest measurement of every configuration: load.latest), and one line per set of
    configurations that could not run at all (folded by reason). `df`: a tidy table or its view (derive.view); the
    rows are the methods asked for, each saying what ran."""
    df = as_asked(latest(view(df)))
    status = df[df["metric"] == "status"]
    groups, skipped = [], {}
    for key, st in status.groupby(GROUP, sort=False, dropna=False):
        if (st["status"] == "skipped").all():  # "not run" or "n/a", by the reason
            reason = cause(st["error"].dropna().iloc[0]) if st["error"].notna().any() else "skipped"
            skipped.setdefault((key[0], key[1], reason), []).append(f"TP={key[2]} parent {key[3]}"
                                                                     + ("" if key[4] == "runtime" else f" ({key[4]})"))
            continue
        rows = df[(df[GROUP[0]] == key[0]) & (df["engine"] == key[1]) & (df["tp"] == key[2])
                  & (df["parent_state"] == key[3]) & (df["cuda_check"] == key[4])
                  & ((df["model"] == key[5]) | (df["model"].isna() & pd.isna(key[5])))]
        groups.append(_group(dict(zip(GROUP, key)), rows, st, df))
    lines = [f"{m} · {e}: {verdict.word('skipped', reason)} ({len(where)} setting{'s' * (len(where) > 1)}: "
             f"{', '.join(where)}): {reason}"
             for (m, e, reason), where in skipped.items()]
    return groups, lines


def _estimate(rows: pd.DataFrame, pattern: str) -> Estimate | None:
    r = rows[(rows["status"] == "ok") & rows["value"].notna() & rows["metric"].str.fullmatch(pattern)]
    if r.empty:
        return None
    x = r.loc[r["value"].idxmax()] if r["metric"].nunique() > 1 else r.iloc[-1]  # several processes: the largest
    f = lambda v: float(v) if pd.notna(v) else None  # noqa: E731
    return Estimate(float(x["value"]), f(x["ci_low"]), f(x["ci_high"]), int(x["n"]) if pd.notna(x["n"]) else None)


def _group(key: dict, rows: pd.DataFrame, st: pd.DataFrame, everything: pd.DataFrame) -> Group:
    ok = rows[rows["status"] == "ok"]
    batches = ok[ok["metric"].str.fullmatch(vocab.TOKENS_RE)]["batch"].dropna()
    batch = int(batches.max()) if len(batches) else None
    key |= {"engine_version": next((v for v in rows["engine_version"] if isinstance(v, str)), None), "batch": batch}
    out = []
    for method in method_order(st["method"]):
        s = st[st["method"] == method].iloc[-1]
        used = s["method_used"] if isinstance(s["method_used"], str) else None
        row = MethodRow(method, used, s["status"], cause(s["error"]) if s["status"] != "ok" else None,
                        executor=s["executor"] if isinstance(s.get("executor"), str) else None)
        mine = rows[rows["method"] == method]
        for k, _, pattern, _ in METRICS:
            est = _estimate(mine, re.escape(vocab.tokens_per_s(batch)) if k == "decode" else pattern)
            if est is not None:
                row.values[k] = est
        row.readings = host_memory(mine[mine["status"] == "ok"].drop_duplicates("metric", keep="last")
                                   .set_index("metric"))[1]
        out.append(row)
    ref = _reference(out)
    if ref is not None:
        for r in out:
            if r is not ref and r.status == "ok":
                r.deltas = {k: difference(v, ref.values[k]) for k, v in r.values.items() if k in ref.values}
    group = Group(key, out, ref.method if ref else None, [])
    group.verdicts = _verdicts(key, out, ref, everything, group.judged)
    return group


def _reference(rows: list[MethodRow]) -> MethodRow | None:
    """fork as it ran: the row asked for fork that ran as fork, else any that ran as fork (a
    labelled override, e.g. vLLM-CPU's fork-override), else the fork row whatever it did."""
    ran_fork = [r for r in rows if r.status == "ok" and (r.method_used or r.method) == "fork"]
    plain = [r for r in ran_fork if r.method == "fork"]
    if plain or ran_fork:
        return (plain or ran_fork)[0]
    return next((r for r in rows if r.method == "fork"), None)


def _verdicts(key: dict, rows: list[MethodRow], ref: MethodRow | None, df: pd.DataFrame,
              judged: list[str]) -> list[str]:
    works = [r for r in rows if r.status == "ok"]
    failed = [r for r in rows if verdict.failed(r.status)]
    lines = []
    if not works:
        unmeasured = [r.label for r in rows if r.status == "skipped"]
        lines.append(("nothing works here: " if not unmeasured else "no measured method works here: ")
                     + "; ".join(f"{r.label} {_failed(r)}" for r in failed)
                     + (f" ({', '.join(unmeasured)}: {verdict.NOT_RUN})" if unmeasured else ""))
    elif ref is None or ref.status not in ("ok", *verdict.FAILED):  # fork not run (skipped)
        lines.append(f"only {', '.join(r.label for r in works)} measured here: no comparison with fork")
    elif ref.status != "ok":
        alt = next((r for r in works if r.method == "spawn"), works[0])
        lines.append(f"use {alt.label}: fork {_failed(ref)}")
    else:
        for r in works:
            if r is ref:
                continue
            lines.append(_pair(r, ref, judged))
    for r in failed:
        if r is not ref or works:
            if r is not ref:
                lines.append(f"{r.label} {_failed(r)}")
    for r in rows:
        if r.status == "ok" and r.method_used and r.method_used != vocab.base_method(r.method):
            lines.append(f"{r.label}: the engine replaced the asked method {r.method}, it ran as {r.method_used}")
    lines.append(verdict.fork_caveat(key["machine"], key["engine"], df))
    return lines


def _failed(r: MethodRow) -> str:
    return verdict.failure(r.status, r.cause)


def _pair(r: MethodRow, ref: MethodRow, judged: list[str]) -> str:
    """One method against fork: a conclusion ("use", "trade-off") only where every difference it
    rests on (`judged`) is resolved at 99%, and each that counts at least THRESHOLD of fork's value;
    otherwise what is resolved, what is not, and no verdict (`analysis plan` weighs the open ones
    for a deployment)."""
    better, worse, unresolved, small = [], [], [], []
    names = {k: lbl.split(",")[0].split(" (")[0].split(":")[0] for k, lbl, *_ in METRICS}
    start = "restart" if "restart" in judged else "ttr"
    for k, _, _, sign in METRICS:
        if k not in judged:
            continue
        d = r.deltas.get(k)
        if d is None:
            continue
        if d.value == 0 and d.lo == 0 and d.hi == 0:
            continue  # identical in every cold start: nothing to resolve
        if not d.resolved:
            unresolved.append(k)
            continue
        base = abs(ref.values[k].value) if k in ref.values else 0
        if base and abs(d.value) < THRESHOLD * base:  # resolved, but practically nothing
            small.append(f"{names[k]} {num(d.value, signed=True)} ({100 * abs(d.value) / base:.1f}%)")
            continue
        words = WORDS[k][0 if d.value * sign > 0 else 1].format(d=num(abs(d.value)))
        (better if d.value * sign > 0 else worse).append(f"{words} {interval(d.lo, d.hi, signed=True)}")
    who = f"{r.label} vs {ref.label}"
    open_ = f"; not resolved: {', '.join(names[k] for k in unresolved)}" if unresolved else ""
    if "decode" in unresolved and r.deltas.get(start) is not None and r.deltas[start].resolved:
        open_ += _break_even(r, ref, start)
    if small:
        open_ += f"; below the practical threshold of {100 * THRESHOLD:g}%: {', '.join(small)}"
    if not better and not worse and small:
        return f"{who}: no verdict: every resolved difference is below {100 * THRESHOLD:g}% of fork's{open_}"
    if not better and not worse:
        d = r.deltas.get(start)
        n = d.n if d is not None and d.n else "few"
        m = runs_needed(d) if d is not None else None
        why = ("no interval from so few" if d is None or d.lo is None else "no difference excludes 0 at 99%")
        return (f"{who}: not resolved with {n} cold start{'s' * (n != 1)}: run "
                f"{f'about {m}' if m else 'more'} ({why})")
    if unresolved:
        head = f"no verdict yet, {who}"
    elif better and not worse:
        head = f"use {r.label} over {ref.method}"
    elif worse and not better:
        head = f"use {ref.label} over {r.method}"
    else:
        head = f"trade-off, {r.label} vs {ref.label}"
    return f"{head}: {r.method} " + "; ".join(better + worse) + f" (99% intervals){open_}"


def _break_even(r: MethodRow, ref: MethodRow, start: str = "ttr") -> str:
    """The decision rests on start-up while decode is unresolved: the decode-rate gap that would
    cancel the start-up saving, at the report's deployment (`analysis plan` weighs the interval)."""
    d = r.deltas[start].value
    faster, slower = (ref, r) if d > 0 else (r, ref)
    gap = break_even_gap(abs(d), RESTARTS_PER_DAY, BUSY_HOURS)
    return (f" (break-even: at {RESTARTS_PER_DAY} starts and {BUSY_HOURS:g} busy hours a day, {faster.label} "
            f"decoding {100 * gap:.2g}% slower than {slower.label} cancels its start-up saving)") if gap else ""


def markdown(groups: list[Group], skipped: list[str]) -> str:
    """The summary as Markdown (what `python -m analysis summary DIR` prints)."""
    out = ["# Executive summary", "",
           "Values: median [99% interval] over n cold starts; Δ: this method minus fork (conservative "
           "interval [lo_a - hi_b, hi_a - lo_b]). A difference whose interval contains 0 is not a conclusion.",
           ""]
    for g in groups:
        out += [f"## {g.title}", "", "| method | works | n | " + " | ".join(label_of(k, g) for k in g.keys) + " |",
                "|---" * (3 + len(g.keys)) + "|"]
        for r in g.rows:
            out.append("| " + " | ".join(_md(c) for c in cells(r, g.keys)) + " |")
        out += [""] + [f"- {_md(v)}" for v in g.verdicts] + [""]
    if skipped:
        out += ["## Not run", ""] + [f"- {_md(s)}" for s in skipped] + [""]
    return "\n".join(out)


def label_of(key: str, g: Group) -> str:
    label = next(lbl for k, lbl, *_ in METRICS if k == key)
    return f"{label} (batch {g.key['batch']})" if key == "decode" and g.key.get("batch") else label


def cells(r: MethodRow, keys: list[str] | None = None) -> list[str]:
    """method, works, n, then each metric (`keys`, default every METRICS key) as 'value [ci]' and,
    against fork, 'Δ +d [lo, hi]'; a replica's memory with its readings' range where read again."""
    short = r.cause if r.cause is None or len(r.cause) <= 110 else r.cause[:109] + "…"
    works = verdict.failure(r.status, short) if verdict.failed(r.status) else verdict.word(r.status, r.cause)
    ns = [v.n for v in r.values.values() if v.n]
    out = [r.label + (f" · executor {r.executor}" if r.executor else ""), works, str(min(ns)) if ns else ""]
    for k in keys or [k for k, *_ in METRICS]:
        v, d = r.values.get(k), r.deltas.get(k)
        text = v.text() if v else ""
        if k == "replica_mib":
            text += readings_text(r.readings)
        if d is not None and d.value == d.lo == d.hi == 0:
            text += "; Δ 0 (identical)"
        elif d is not None:
            text += f"; Δ {d.text(signed=True)}" + ("" if d.resolved else " (not resolved)")
        out.append(text)
    return out


def readings_text(readings: dict[str, float]) -> str:
    """' (2,484-2,610 from at ready to after gc)' where the replica was read again, else ''."""
    if len(readings) < 2:
        return ""
    lo, hi = min(readings.values()), max(readings.values())
    return f" ({num(lo)}-{num(hi)}: {', '.join(f'{w} {num(v)}' for w, v in readings.items())})"


def _md(text: str) -> str:
    return re.sub(r"([|\\])", r"\\\1", str(text)).replace("\n", " ")


def html(groups: list[Group], skipped: list[str]) -> str:
    """The summary as HTML tables (the report's first section); every string escaped."""
    from html import escape

    parts = ["<p class=\"note\">Median [99% interval] over n cold starts. Second line: this method minus "
             f"{escape(chr(0x201c))}fork{escape(chr(0x201d))} (or what ran as fork), conservative interval "
             "[lo<sub>a</sub> &minus; hi<sub>b</sub>, hi<sub>a</sub> &minus; lo<sub>b</sub>]; bold when it excludes "
             "0 (resolved), grey when not: no conclusion is drawn from a grey difference.</p>"]
    for g in groups:
        head = "".join(f"<th>{escape(h)}</th>" for h in
                       ["method", "works", "n"] + [label_of(k, g) for k in g.keys])
        body = []
        for r in g.rows:
            cls = {"ok": "ok", "error": "error", "timeout": "timeout"}.get(r.status, "skipped")
            c = cells(r, g.keys)
            tds = [f"<td>{escape(c[0])}</td>", f"<td>{escape(c[1])}</td>", f"<td class=\"num\">{escape(c[2])}</td>"]
            for k in g.keys:
                v, d = r.values.get(k), r.deltas.get(k)
                text = escape(v.text() + (readings_text(r.readings) if k == "replica_mib" else "")) if v else ""
                if d is not None:
                    same = d.value == d.lo == d.hi == 0
                    dcls = "same" if same else ("resolved" if d.resolved else "unresolved")
                    dtext = "Δ 0 (identical)" if same else f"Δ {d.text(signed=True)}"
                    text += f"<br><span class=\"{dcls}\">{escape(dtext)}</span>"
                tds.append(f"<td class=\"num\">{text}</td>")
            body.append(f"<tr class=\"{cls}\">{''.join(tds)}</tr>")
        verdicts = "".join(f"<li>{escape(v)}</li>" for v in g.verdicts)
        parts.append(f"<h4>{escape(g.title)}</h4><div class=\"scroll\"><table><thead><tr>{head}</tr></thead>"
                     f"<tbody>{''.join(body)}</tbody></table></div><ul class=\"verdicts\">{verdicts}</ul>")
    if skipped:
        parts.append("<p>Not run:</p><ul>" + "".join(f"<li>{escape(s)}</li>" for s in skipped) + "</ul>")
    return "".join(parts)
