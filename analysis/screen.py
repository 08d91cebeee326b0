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
from .capacity import BUSY_HOURS, HOST_READINGS, RESTARTS_PER_DAY, Node, Plan, mode_of, mode_text, plan
from .derive import INCLUDES, RESTART, Estimate, difference, executors, interval_text, view
from .fmt import engine_label, num, pct
from .load import ASKED, LEGACY_EXECUTOR, BadInput, Results, is_legacy, latest

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
    executor: str = ""  # which executor the mode's methods ran with (derive.executors), '' for none
    executor_note: str = ""  # where it comes from, where the records did not name it (load.LEGACY_EXECUTOR)
    # method -> metric -> its median with the 99% interval (time to ready, exec to ready, teardown,
    # restart, and the group's PSS readings): the clocks and readings beside the verdict's figures
    estimates: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    server_start: set[str] = field(default_factory=set)  # methods whose time to ready runs from a server's start

    @property
    def setting(self) -> str:
        mode = f" · {mode_text(self.mode)}" if self.mode else ""
        return f"{self.engine} · {self.model} · TP={self.tp}{mode} · parent {self.parent_state}"

    @property
    def mode_line(self) -> str:
        """'default mode (executor uni)', 'mp executor (a worker process at TP 1)'."""
        note = f", {self.executor_note}" if self.executor_note else ""
        executor = f" ({self.executor}{note})" if self.executor and self.mode != "mp" else ""
        return f"{mode_text(self.mode)}{executor}"

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


def decisions(results: Results, restarts_per_day: float = RESTARTS_PER_DAY, busy_hours: float = BUSY_HOURS,
              table: pd.DataFrame | None = None) -> list[Decision]:
    """Every measured setting's decision, on its own machine, for the deployment given (default:
    hourly restarts, busy all day). `table`: results.table's view where the caller derived it (a
    report does, once: derive.view); results.table otherwise."""
    table = latest(view(results.table if table is None else table))
    ok = table[table["status"] == "ok"]
    rows = parity.table(results.records)
    out = []
    for (machine, engine, model, tp), g in ok.groupby(["machine", "engine", "model", "tp"], sort=False, dropna=False):
        states = list(dict.fromkeys(g["parent_state"]))
        state = next((s for s in STATE_PREFERENCE if s in states), states[0])
        labels = set(g[ASKED])
        name = engine_label(engine, next((v for v in g["engine_version"] if isinstance(v, str)), None))
        size = models.of(model) if isinstance(model, str) else None
        info = results.machines[results.machines["machine"] == machine]
        node = Node.of_machine(info.iloc[-1]) if len(info) and pd.notna(info.iloc[-1]["num_cpu"]) else None
        for mode in sorted({mode_of(m, labels) for m in labels}, key=lambda m: (m != "", m != "mp", m)):
            d = Decision(machine, name, size.label if size else "model not recorded", int(tp), mode, state)
            mine = g[(g["parent_state"] == state) & g[ASKED].map(lambda m: mode_of(m, labels) == mode)]
            d.estimates = _estimates(mine)
            ttr = mine[(mine["metric"] == vocab.TIME_TO_READY) & mine[INCLUDES].str.startswith("server", na=False)]
            d.server_start = set(ttr["method"])
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
            # the executor the figures are for: the compared pair's (else every method of the mode's)
            pair = mine[mine["method"].isin((d.main.b.method, d.main.o.method))] if d.main is not None else mine
            d.executor, d.executor_note = _executor(results, pair)
            out.append(d)
    return out


def _executor(results: Results, rows: pd.DataFrame) -> tuple[str, str]:
    """(which executor the rows' methods ran with, and where their records are from before
    record/3, which did not name it, where it comes from: load.LEGACY_EXECUTOR)."""
    text = executors(rows[rows["metric"] == vocab.STATUS])
    recs = results.records
    mine = recs[recs["machine"].isin(rows["machine"]) & recs["engine"].isin(rows["engine"])
                & recs["tp"].isin(rows["tp"]) & recs["method"].isin(rows[ASKED])
                & recs["parent_state"].isin(rows["parent_state"])]
    return text, LEGACY_EXECUTOR if text and len(mine) and all(map(is_legacy, mine["record"])) else ""


CLOCKS = (vocab.TIME_TO_READY, vocab.EXEC_TO_READY, vocab.TEARDOWN, RESTART)


def _estimates(rows: pd.DataFrame) -> dict[str, dict[str, Estimate]]:
    """method (as it ran) -> metric -> Estimate, for the clocks of a restart and the replica's PSS readings."""
    wanted = set(CLOCKS) | {m for _, m in HOST_READINGS}
    ok = rows[(rows["status"] == "ok") & rows["metric"].isin(wanted) & rows["value"].notna()]
    f = lambda v: float(v) if pd.notna(v) else None  # noqa: E731
    out: dict[str, dict[str, Estimate]] = {}
    for r in ok.itertuples(index=False):
        out.setdefault(r.method, {})[r.metric] = Estimate(float(r.value), f(r.ci_low), f(r.ci_high),
                                                         int(r.n) if pd.notna(r.n) else None)
    return out


def _gpu_mib(node: Node) -> float | None:
    return node.gpu_mem_gib * 1024 if node.gpu_mem_gib else None


def _batches(g: pd.DataFrame, state: str, mode: str, labels: set[str]) -> list[int]:
    here = g[(g["parent_state"] == state) & g[ASKED].map(lambda m: mode_of(m, labels) == mode)]
    rates = here[here["metric"].str.fullmatch(vocab.TOKENS_RE)]
    return sorted(int(b) for b in rates["batch"].dropna().unique())


def figures(d: Decision) -> list[tuple[str, str, str, str]]:
    """(what, the faster starter's value, the other's, the difference with its 99% interval) of the
    comparison the verdict turns on: the restart it weighs and the clocks beside it, decode per
    batch, host memory a replica (a range where it was read again after decode and gc)."""
    o = d.main
    if o is None:
        return []
    out = []
    b, c = d.estimates.get(o.b.method, {}), d.estimates.get(o.o.method, {})
    if o.b.restart and o.o.restart:
        since = "server start" if o.b.method in d.server_start else "start request"
        rows = [(f"{since} to ready, s", RESTART)]  # time to ready, named by its clock as exec to ready is
        if o.b.verb == "restarts":
            rows = [("restart: teardown + exec to ready, s", RESTART), ("exec to ready, s", vocab.EXEC_TO_READY),
                    ("teardown, s", vocab.TEARDOWN), (rows[0][0], vocab.TIME_TO_READY)]
        for what, metric in rows:
            x, y = (o.b.restart, o.o.restart) if metric == RESTART else (b.get(metric), c.get(metric))
            if x and y:
                out.append((what, num(x.value), num(y.value), _diff(difference(x, y), " s")))
    for batch, x in d.by_batch.items():
        dec = x.decode
        if dec is None or not (x.b.rate and x.o.rate):
            continue
        bounds = f" [{pct(dec.lo)}, {pct(dec.hi)}]" if dec.bounded else " (no interval)"
        out.append((f"decode tokens/s, batch {batch}", num(x.b.rate.value), num(x.o.rate.value),
                    f"{pct(dec.est)}{bounds} ({dec.source})"))
    if o.b.host and o.o.host:
        readings = [when for when, m in HOST_READINGS if m in b and m in c]
        what = ("host MiB a replica (PSS)" if readings == ["at ready"] else
                f"host MiB a replica (PSS {', '.join(readings)}; difference of the largest)")
        out.append((what, _range(b), _range(c), _diff(difference(o.b.host, o.o.host), " MiB")))
    return out


def _range(e: dict[str, Estimate]) -> str:
    """The group's PSS readings as '2,484' or a range '2,484-2,610' (at ready .. after gc)."""
    values = [e[m].value for _, m in HOST_READINGS if m in e]
    lo, hi = min(values), max(values)
    return num(lo) if num(lo) == num(hi) else f"{num(lo)}-{num(hi)}"


def _diff(e: Estimate, unit: str) -> str:
    return f"{num(e.value, signed=True)}{unit} {interval_text(e.lo, e.hi, e.n, signed=True)}".strip()


def _open_text(o: decide.Outcome) -> str:
    """Why a comparison is open, in a sentence, and what would decide it; for a decided one, what
    decided it."""
    if o.winner is not None:
        return f"Decided: {o.winner} {o.why}, at every point of the 99% intervals."
    if o.gap is not None and o.decode is not None and o.decode.bounded:
        worst = f"; its 99% interval allows up to {pct(-o.decode.lo, signed=False)} slower" if o.decode.lo < 0 else ""
        why = f"{o.b.method} decoding {pct(o.gap, signed=False)} slower cancels its start-up saving{worst}. "
    else:
        open_ = ([] if o.startup is not None and o.startup.resolved else ["start-up"]) + \
            ([] if o.decode is not None and o.decode.bounded else ["decode (no interval)"])
        why = f"Not resolved at 99%: {', '.join(open_)}. " if open_ else (o.why[0].upper() + o.why[1:] + ". ")
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
            # the executor's provenance (old records) is the report's "How the engines ran", and the hover
            executor = (f" <small title=\"{escape(d.executor_note)}\">({escape(d.executor)})</small>" if d.executor
                        else "")
            turns = f"<b>{escape(o.b.method)}</b> vs {escape(o.o.method)}{executor}<ul>{figs}</ul>"
        else:
            turns = escape(d.verdict.split(": ", 1)[-1])
        decide_ = escape(_open_text(o)) if o is not None else ""  # decided: what decided it
        cls = "rec" if d.plan is not None and d.plan.recommended else "open"
        where = f"<b>{escape(d.machine)}</b><br>" if len({x.machine for x in ds}) > 1 else ""
        body.append(f"<tr class=\"{cls}\"><td>{where}{escape(d.setting)}</td><td class=\"verdict\">"
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


def provenance(results: Results, machine: str) -> str:
    """One line: the engine, the machine, the software and the runs behind a machine's figures."""
    info = results.machines[results.machines["machine"] == machine]
    recs = results.records[(results.records["machine"] == machine) & (results.records["status"] == "ok")]
    if info.empty:
        return machine
    m = info.iloc[-1]
    versions = dict(v.split(" ", 1) for v in str(m["versions"]).split(", ") if " " in v)
    gpu = f"{int(m['gpu_count'])}x {m['gpu']} (driver {m['gpu_driver']}), " if m["gpu_count"] else ""
    runs = sorted({int(r.runs_ok) for r in recs["record"] if r.runs_ok}) if len(recs) else []
    starts = f"{'-'.join(map(str, dict.fromkeys((runs[0], runs[-1]))))} cold starts a configuration; " if runs else ""
    commits = ", ".join(sorted({str(c)[:7] for c in info["commit"]}))
    return (f"{engine_label(m['engine'], m['engine_version'])} on {gpu}{m['num_cpu']} CPUs, torch "
            f"{versions.get('torch', '?')}, Python {versions.get('python', '?')}; {starts}commit {commits}")


def markdown(ds: list[Decision], results: Results | None = None) -> str:
    """The README's headline: per machine and setting, where it was measured, one table of the
    figures each mode's verdict turns on, and each mode's verdict with what would decide it."""
    out = []
    for (machine, setting), group in _by_setting(ds).items():
        if results is not None:
            out += [f"Measured: {provenance(results, machine)}.", ""]
        first = next((d.main for d in group if d.main is not None), None)
        if first is not None:
            out += [f"| {setting} | {first.b.method} | {first.o.method} | difference [99%] |", "|---|---|---|---|"]
            for d in group:
                o = d.main
                if o is None:
                    continue
                if len(group) > 1 or d.executor:
                    out.append(f"| *{d.mode_line}: {o.b.method} vs {o.o.method}* | | | |")
                out += [f"| {w} | {a} | {b} | {x} |" for w, a, b, x in figures(d)]
            out.append("")
        for d in group:
            text = _open_text(d.main) if d.main is not None and d.main.winner is None else d.verdict
            out.append(f"- {d.mode_line}, busy all day at {RESTARTS_PER_DAY:g} starts a day: "
                       f"**{_verdict_word(d)}**. {text}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _by_setting(ds: list[Decision]) -> dict[tuple[str, str], list[Decision]]:
    """Decisions of one machine and setting (engine, model, TP, parent state) together, modes in order."""
    out: dict[tuple[str, str], list[Decision]] = {}
    for d in ds:
        setting = f"{d.engine} · {d.model} · TP={d.tp} · parent {d.parent_state}"
        out.setdefault((d.machine, setting), []).append(d)
    return out


def brief(reports: list[tuple[str, list[Decision]]]) -> str:
    """One Markdown table over several reports: each setting's verdict busy all day, and why in a
    sentence (`python -m analysis headline --brief DIR...`, the README's list of reports)."""
    out = [f"| report | setting | verdict at {RESTARTS_PER_DAY:g} starts a day, busy all day |", "|---|---|---|"]
    for link, ds in reports:
        for d in ds:
            o = d.main
            why = (_lower(_open_text(o).split(". ")[0]) if o is not None and o.winner is None
                   else d.verdict.split(": ", 1)[-1].split("; ")[0])
            mode = f" · {mode_text(d.mode)}" if d.mode else ""
            out.append(f"| {link} | {d.engine} · {d.model} · TP={d.tp}{mode} · parent {d.parent_state} | "
                       f"**{_verdict_word(d)}**{': ' + why if why else ''} |")
    return "\n".join(out) + "\n"


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]
