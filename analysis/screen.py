"""The decision first: one row per measured setting (machine, engine, model, TP, mode) with the
planner's verdict for a fleet busy all day, the differences it rests on with their 99% intervals,
and what would decide it. The report's first screen (`html`) and the README's headline table
(`markdown`, `python -m analysis headline DIR`) are both drawn from these rows, so neither can
drift from the planner or from the committed results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

import pandas as pd

from forkspawn import vocabulary as vocab

from . import decide, models, parity
from .capacity import BUSY_HOURS, RESTARTS_PER_DAY, Node, Plan, mode_of, plan
from .derive import Estimate, difference, interval_text
from .fmt import engine_label, num, pct
from .load import BadInput, Results, latest

STATE_PREFERENCE = ("torch", "bare")  # the parent state a setting is decided for: a server that imported torch


@dataclass
class Decision:
    machine: str
    engine: str  # with its version
    model: str  # the model's label
    tp: int
    mode: str
    parent_state: str
    plan: Plan | None = None
    error: str = ""  # why no plan could be made
    by_batch: dict[int, decide.Outcome] = field(default_factory=dict)  # the compared pair at each batch

    @property
    def setting(self) -> str:
        mode = f" · {self.mode} mode" if self.mode else ""
        return f"{self.engine} · {self.model} · TP={self.tp}{mode} · parent {self.parent_state}"

    @property
    def main(self) -> decide.Outcome | None:
        """The comparison the verdict turns on: the first open one, else the first."""
        if self.plan is None or not self.plan.outcomes:
            return None
        return next((o for o in self.plan.outcomes if o.winner is None), self.plan.outcomes[0])

    @property
    def verdict(self) -> str:
        if self.plan is None:
            return f"no verdict: {self.error}"
        return self.plan.verdict


def decisions(results: Results, restarts_per_day: float = RESTARTS_PER_DAY,
              busy_hours: float = BUSY_HOURS) -> list[Decision]:
    """Every measured setting's decision, on its own machine, for the deployment given (default:
    hourly restarts, busy all day)."""
    table = latest(results.table)
    ok = table[table["status"] == "ok"]
    rows = parity.table(results.records)
    out = []
    for (machine, engine, model, tp), g in ok.groupby(["machine", "engine", "model", "tp"], sort=False, dropna=False):
        states = list(dict.fromkeys(g["parent_state"]))
        state = next((s for s in STATE_PREFERENCE if s in states), states[0])
        labels = set(g["method"])
        name = engine_label(engine, next((v for v in g["engine_version"] if isinstance(v, str)), None))
        size = models.of(model) if isinstance(model, str) else None
        info = results.machines[results.machines["machine"] == machine]
        node = Node.of_machine(info.iloc[-1]) if len(info) and pd.notna(info.iloc[-1]["num_cpu"]) else None
        for mode in sorted({mode_of(m, labels) for m in labels}):  # the default mode ('') first
            d = Decision(machine, name, size.label if size else "model not recorded", int(tp), mode, state)
            if node is None:
                d.error = "the machine's description is not in the records"
                out.append(d)
                continue
            try:
                kw = dict(machine=machine, engine=engine, model=size, mode=mode, parent_state=state,
                          busy_hours=busy_hours, parity_rows=rows, measured_gpu_mib=_gpu_mib(node))
                d.plan = plan(table, node, int(tp), restarts_per_day, **kw)
                if d.main is not None and d.main.startup is not None:
                    for batch in _batches(g, state, mode, labels):
                        p = plan(table, node, int(tp), restarts_per_day, batch=batch, **kw)
                        pair = (d.main.b.method, d.main.o.method)
                        d.by_batch.update({batch: o for o in p.outcomes if (o.b.method, o.o.method) == pair})
            except BadInput as e:
                d.error = str(e)
            out.append(d)
    return out


def _gpu_mib(node: Node) -> float | None:
    return node.gpu_mem_gib * 1024 if node.gpu_mem_gib else None


def _batches(g: pd.DataFrame, state: str, mode: str, labels: set[str]) -> list[int]:
    here = g[(g["parent_state"] == state) & g["method"].map(lambda m: mode_of(m, labels) == mode)]
    rates = here[here["metric"].str.fullmatch(vocab.TOKENS_RE)]
    return sorted(int(b) for b in rates["batch"].dropna().unique())


def figures(d: Decision) -> list[tuple[str, str, str, str]]:
    """(what, the faster starter's value, the other's, the difference with its 99% interval) of the
    comparison the verdict turns on: time to ready, decode per batch, host memory a replica."""
    o = d.main
    if o is None:
        return []
    out = []
    if o.b.ttr and o.o.ttr:
        diff = difference(o.b.ttr, o.o.ttr)
        out.append(("time to ready, s", num(o.b.ttr.value), num(o.o.ttr.value), _diff(diff, " s")))
    for batch, x in d.by_batch.items():
        dec = x.decode
        if dec is None or not (x.b.rate and x.o.rate):
            continue
        bounds = f" [{pct(dec.lo)}, {pct(dec.hi)}]" if dec.bounded else " (no interval)"
        out.append((f"decode tokens/s, batch {batch}", num(x.b.rate.value), num(x.o.rate.value),
                    f"{pct(dec.est)}{bounds} ({dec.source})"))
    if o.b.host and o.o.host:
        out.append(("host MiB a replica (PSS)", num(o.b.host.value), num(o.o.host.value),
                    _diff(difference(o.b.host, o.o.host), " MiB")))
    return out


def _diff(e: Estimate, unit: str) -> str:
    return f"{num(e.value, signed=True)}{unit} {interval_text(e.lo, e.hi, e.n, signed=True)}".strip()


def _open_text(o: decide.Outcome) -> str:
    """Why a comparison is open, in one sentence, and what would decide it; '' where it is decided."""
    if o.winner is not None:
        return ""
    why = ""
    if o.gap is not None and o.decode is not None and o.decode.bounded:
        worst = f"; the interval allows {pct(-o.decode.lo, signed=False)}" if o.decode.lo < 0 else ""
        why = f"{o.b.method} decoding {pct(o.gap, signed=False)} slower cancels its start-up saving{worst}. "
    elif o.why:
        why = o.why[0].upper() + o.why[1:] + ". "
    return why + (f"Would decide it: {o.decide}." if o.decide else "")


def _verdict_word(d: Decision) -> str:
    return d.plan.recommended if d.plan is not None and d.plan.recommended else "no verdict"


def html(ds: list[Decision], restarts_per_day: float = RESTARTS_PER_DAY, busy_hours: float = BUSY_HOURS) -> str:
    """The first screen: one table of decisions, and the break-even table of the first open one."""
    if not ds:
        return "<p class=\"note\">Nothing measured successfully: no decision to show.</p>"
    head = "".join(f"<th>{h}</th>" for h in ("setting", "verdict", "the comparison it turns on", "what would decide it"))
    body = []
    for d in ds:
        o = d.main
        if o is not None:
            figs = "".join(f"<li>{escape(w)}: {escape(f'{a} vs {b}: ' if a else '')}{escape(x)}</li>"
                           for w, a, b, x in figures(d))
            turns = f"<b>{escape(o.b.method)}</b> vs {escape(o.o.method)}<ul>{figs}</ul>"
        else:
            turns = escape(d.verdict.split(": ", 1)[-1])
        decide_ = escape(_open_text(o)) if o is not None else ""
        cls = "rec" if d.plan is not None and d.plan.recommended else "open"
        body.append(f"<tr class=\"{cls}\"><td>{escape(d.setting)}</td><td class=\"verdict\">"
                    f"{escape(_verdict_word(d))}</td><td>{turns}</td><td>{decide_}</td></tr>")
    be = next((d for d in ds if d.plan is not None and d.plan.break_even is not None and not d.plan.recommended), None)
    extra = ""
    if be is not None:
        o = be.main
        worst = (f" The 99% decode interval allows {escape(o.b.method)} to decode {-100 * o.decode.lo:.1f}% slower."
                 if o.decode and o.decode.bounded and o.decode.lo < 0 else "")
        extra = (f"<p class=\"note\"><b>What would decide it</b> ({escape(be.setting)}): how much slower "
                 f"{escape(o.b.method)} may decode than {escape(o.o.method)} before its start-up saving is gone, by "
                 f"(re)starts a day (rows) and busy hours a day (columns), and who holds at every point of the 99% "
                 f"intervals there (? = no verdict).{worst}</p>" + _small_table(be.plan.break_even))
    return (f"<p class=\"deploy\">Verdicts for a replica restarted {restarts_per_day:g} times a day and decoding "
            f"{busy_hours:g} hours a day (busy all day), on the measured machine: a method only where the difference "
            f"it rests on is resolved at 99% and at least {100 * decide.THRESHOLD:g}% of the other's, and holds at every "
            f"point of the intervals. Other deployments: <code>python -m analysis plan DIR --tp N --busy-hours H "
            f"--restarts-per-day R</code>.</p><div class=\"scroll\"><table class=\"decision\"><thead><tr>{head}</tr>"
            f"</thead><tbody>{''.join(body)}</tbody></table></div>{extra}")


def _small_table(t: pd.DataFrame) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in [f"{t.index.name} \\ busy"] + list(t.columns))
    body = "".join(f"<tr><th>{escape(str(i))}</th>" + "".join(f"<td class=\"num\">{escape(str(v))}</td>" for v in row)
                   + "</tr>" for i, row in t.iterrows())
    return f"<table class=\"breakeven\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown(ds: list[Decision]) -> str:
    """The README's headline: per decision, its figures as a table, the verdict and what would decide it."""
    out = []
    for d in ds:
        o = d.main
        out.append(f"**{d.setting}** ({d.machine}): **{_verdict_word(d)}**")
        out.append("")
        if o is not None:
            out += [f"| | {o.b.method} | {o.o.method} | {o.b.method} − {o.o.method} [99%] |", "|---|---|---|---|"]
            out += [f"| {w} | {a} | {b} | {x} |" for w, a, b, x in figures(d)]
            out.append("")
        out.append(f"- verdict: {d.verdict}")
        out.append("")
    return "\n".join(out)
