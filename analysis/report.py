"""The HTML report: one self-contained index.html (charts embedded as base64 PNG) plus the chart
files (PNG and SVG), the tidy table as CSV, and a copy of the asv results it was made from.

Every string from the results reaches the page through `html.escape`. The report is built in a
temporary folder next to the target and renamed into place, so a failed or interrupted run never
replaces a good report with part of one.
"""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from forkspawn import vocabulary as vocab

from . import charts, fleet, parity, screen, starts, summary, verdict
from .capacity import BUSY_HOURS, RESTARTS_PER_DAY
from .derive import INCLUDES, executors, interval_text, no_small_n_intervals, view
from .fmt import cause, num
from .load import VLLM_ENGINES, BadInput, Results, is_legacy, latest, load
from .verdict import method_order

CAPTIONS = {
    "startup_phases": "When each start-up phase ended (slowest rank), stacked in time order, one row per engine: "
                      "each segment runs from the previous phase's end to this one's (clamped at 0), so a bar is the "
                      "time to ready (record/3: exec to ready, the parent's interpreter start, state and imports "
                      "first; vLLM's interpreter starts + imports are segments of their own). One scale per engine; "
                      "whiskers: its 99% CI; ▼: a bar too short to see; hatched: failed, labelled with the exception. "
                      "Under fork the child skips the imports its parent did; forkserver-preload does them in the "
                      "forkserver.",
    "memory": "Host memory of every process of one replica at ready, stacked so that the bar is the worker "
              "group (parent, forkserver if any, ranks). USS and PSS stacks are the real footprint; an RSS "
              "stack counts each shared page once per process (it overstates); group PSS after decode (–) and gc "
              "(×) marked where read. GPU memory (NVML, per process, CUDA context included) on GPU machines.",
    "throughput": "Steady-state decode rate after warm-up (all ranks of a replica together), median of the cold "
                  "starts; whiskers are asv's 99% confidence interval of the median; one cut at the axis is marked "
                  "(▲) and its end listed in the panel, which also names the rates not resolved from fork's at 99%. "
                  "With few cold starts the interval is wide: compare bars whose whiskers do not overlap; the "
                  "decision above weighs decode across cold starts where a fork/spawn pair has it.",
    "tradeoff": "Each point is one start method in one setting (engine, parent state, TP size) compared with "
                "fork in the same setting: to the right it needs more memory per replica, upwards a restart "
                "takes longer. Settings where fork failed have no reference and are left out.",
    "amortisation": "For each engine and mode, the method that restarts fastest against its spawn twin (or the next "
                    "fastest): how much slower it may decode before its start-up saving is gone (the break-even "
                    "decode gap), against the busy hours a day, one line per number of (re)starts a day. The red band "
                    "is the 99% interval of how much slower it decodes (across cold starts where measured so, else "
                    "asv's intervals): where a line runs above the band, the faster start pays at every point of the "
                    "interval; inside or below it there is no verdict. The dotted line is where the planner's verdict "
                    "holds up to at 24 starts a day (the start-up interval's low end against the decode's worst case).",
    "compatibility": "Whether a worker group reached ready under each start method from each parent state "
                     "(torch imported, CUDA queried or initialised in the parent). The errors are listed in "
                     "full in the table below the chart.",
}

METHODOLOGY = """
<dl>
<dt>Clock</dt><dd>Every rank stamps its phases with <code>time.monotonic</code> (CLOCK_MONOTONIC), which is
system-wide, so stamps of different processes compare directly. A phase's time is seconds since the group's
first start request; time to ready is the slowest rank's <code>ready</code>. Exec to ready (record/3) runs from
the exec of the process a user restarts (our fresh parent: its interpreter start, its state, the engine's
imports; a server's exec) to ready. Teardown is the time from the stop request until every process of the group
exited. Warm-up starts (record/3) are made first and kept out of every figure but their own table.</dd>
<dt>Cold starts and spread</dt><dd>Each configuration is measured as <em>repeat</em> cold starts, each in a fresh
parent interpreter. asv stores one sample per cold start; the median and its 99% confidence interval are asv's
own estimator (<code>asv_runner.statistics.compute_stats</code>: a distribution-free interval for the median,
widened when there are few samples). <code>n</code> in the tables is the number of cold starts.</dd>
<dt>Memory</dt><dd>Read at ready through psutil <code>memory_full_info</code> (<code>/proc/PID/smaps_rollup</code>),
and (record/3) again once decoding ended and after the parent's <code>gc.collect()</code>: a replica's host
memory is the range of the three, the planner counts the largest.
<b>RSS</b> counts every resident page, shared copy-on-write pages once per process (so RSS sums overstate).
<b>USS</b> counts the pages private to a process. <b>PSS</b> splits each shared page among the processes sharing
it, so PSS sums to the real footprint of the group. <b>Peak RSS</b> is the kernel's high-water mark (VmHWM).
<b>GPU</b> memory is NVML's per-PID figure, which includes the CUDA context. The group row is the sum over the
parent, the forkserver (if any) and the ranks.</dd>
<dt>Throughput</dt><dd>Steady-state tokens/s = batch &times; timed decode steps / their summed wall time, after
the warm-up steps, timed with <code>time.perf_counter</code> in rank 0.</dd>
<dt>Status</dt><dd><b>works</b>: every cold start reached ready; <b>fails</b>: an error (the first failure is kept);
<b>hangs</b>: the start did not reach ready before the timeout; <b>n/a</b>: skipped, the configuration cannot
exist on this machine (e.g. a CUDA parent state without a GPU).</dd>
<dt>Capacity planning and verdicts</dt><dd>Replicas per node = the smallest of GPUs / TP, CPU cores / TP (one
core per rank), host RAM / the group's PSS (the largest of its readings), and whether a rank's GPU memory fits a
GPU (unknown where an engine's KV-cache reservation was not recorded). A replica-day costs its restarts (restarts a
day &times; a restart &times; TP devices; a restart is teardown + exec to ready where recorded, record/3, else time
to ready from the start request) and its decode load (busy hours at the faster rate; busy all day by default). A
method is the verdict only where it costs less than every other that works at every point of the 99% intervals of
the differences (the restart, its interval the sum of its parts'; decode rate across cold starts where a
fork/spawn pair has it, paired by lease and round, else asv's intervals of the medians), and the difference it
rests on is at least 3% of the other's (the decode parity tolerance);
otherwise "no verdict", with the break-even decode gap over restarts and busy hours and the cold starts that
would decide it.</dd>
<dt>Executive summary</dt><dd>Differences of two medians carry the conservative interval
[lo<sub>a</sub> &minus; hi<sub>b</sub>, hi<sub>a</sub> &minus; lo<sub>b</sub>] from asv's 99% intervals; a verdict rests only on
differences whose interval excludes 0. Cold starts needed: n &times; (reach / |difference|)<sup>2</sup>, reach being
the distance from the difference to the interval's bound on 0's side; a lower bound.</dd>
</dl>
"""

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{margin-bottom:0.2em} h2{border-bottom:1px solid #ccc;padding-bottom:0.2em;margin-top:2em}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.85em}
th,td{border:1px solid #ddd;padding:0.25em 0.6em;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.5em 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:0.9em;color:#444;max-width:70em} .prov{font-size:0.85em;color:#666}
.ok{background:#e4f4e0} .error{background:#fbe1e1} .timeout{background:#fdf0d5} .skipped{color:#777}
.rec{font-weight:bold;background:#e4f4e0} code{background:#f5f5f5;padding:0 0.2em}
dt{font-weight:bold;margin-top:0.6em}
.scroll{overflow-x:auto;max-width:100%} .scroll table{margin:0.4em 0}
.resolved{font-weight:bold} .unresolved,.same{color:#888} .note{font-size:0.9em;color:#444;max-width:70em}
ul.verdicts li{margin:0.15em 0} h4{margin:1.2em 0 0.2em}
pre{white-space:pre-wrap;font-size:0.8em;background:#f8f8f8;padding:0.5em}
td{overflow-wrap:anywhere;max-width:60em} table.decision{font-size:0.9em;width:100%}
table.decision td{padding:0.3em 0.6em} table.decision ul{margin:0.2em 0;padding-left:1.1em}
td.verdict{font-weight:bold;font-size:1.1em;white-space:nowrap} tr.open td.verdict{color:#a40}
table.breakeven{font-size:0.8em} table.breakeven th{font-weight:normal}
.deploy{font-size:0.95em;margin:0.3em 0} h1{font-size:1.6em;margin:0.3em 0}
details{margin:0.6em 0} summary{cursor:pointer;font-weight:bold;color:#335}
ul.toc{font-size:0.9em} figure img{max-height:90vh;width:auto}
@media print{details{display:none} figure{break-inside:avoid} body{max-width:none}}
"""


def write_report(results_dir: str | Path, out_dir: str | Path) -> Path:
    """Load the results and write the report folder; returns the path of index.html."""
    results = load(results_dir)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out}: exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would stay on the published folder
    try:
        _copy_results(results, tmp / "results")
        no_small_n_intervals(results.table).to_csv(tmp / "table.csv", index=False)  # no interval below n=3
        (tmp / "index.html").write_text(render(results, tmp), encoding="utf-8")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"


def _replace(new: Path, target: Path) -> None:
    """Move the finished report into place; the old one is removed only after that."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
    os.rename(new, target)
    if old:
        shutil.rmtree(old)


def _copy_results(results: Results, dest: Path) -> None:
    """The asv files the report was made from, so that it can be rebuilt and re-analysed."""
    for f in results.files:
        rel = f.relative_to(results.root)
        if rel.parts[0] == dest.name:  # read from a report folder (its results/): rebuilding it must not nest them
            rel = rel.relative_to(dest.name)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)


def render(results: Results, out_dir: Path) -> str:
    """index.html for the results; chart files are written into out_dir. The first screen is the
    decision (screen.py); then each machine's charts; every table is folded below them."""
    table = latest(view(results.table))  # derived once: what the summary, screen, charts and tables read
    machines = list(dict.fromkeys(table["machine"]))
    groups, not_run = summary.summarize(table)
    decisions = screen.decisions(results, table=table)
    decode_parity = parity.table(results.records)
    decode_diag = parity.diagnostics(results.records)
    where = machines[0] if len(machines) == 1 else f"{len(machines)} machines"
    caveats = dict.fromkeys(f"{g.key['engine']}: {g.verdicts[-1]}" if len(machines) == 1 else
                            f"{g.key['machine']} · {g.key['engine']}: {g.verdicts[-1]}" for g in groups if g.verdicts)
    body = [f"<h1>Start method verdicts: {e(where)}</h1>", screen.html(decisions),
            f"<p class=\"note\"><b>When fork becomes wrong</b>: {e(' · '.join(caveats))}</p>" if caveats else "",
            f"<p class=\"note\">What the multiprocessing start method of tensor-parallel workers costs, measured with "
            f"asv: {len(results.files)} result files from <code>{e(results.root)}</code> (copied to "
            f"<a href=\"results/\">results/</a>); every measured value is in <a href=\"table.csv\">table.csv</a>. "
            f"Below: each machine's charts, then its tables (folded).</p>"]
    toc = [f"<li><a href=\"#m{i}\">{e(m)}</a></li>" for i, m in enumerate(machines)]
    body.append(f"<ul class=\"toc\">{''.join(toc)}<li><a href=\"#methodology\">Methodology</a></li></ul>")
    if len(machines) > 1:
        body.append(_fold("Fleet: each method against fork on every machine and TP size", fleet.section(groups)))
    slugs: set[str] = set()
    for i, machine in enumerate(machines):
        rows = table[table["machine"] == machine]
        info = results.machines[(results.machines["machine"] == machine)
                                & results.machines["commit"].isin(rows["commit"].unique())
                                & results.machines["env"].isin(rows["env"].unique())]
        if info.empty:  # no record at all: describe it from asv alone
            info = pd.DataFrame([{"machine": machine, "commit": rows["commit"].iloc[0], "env": rows["env"].iloc[0],
                                  "date": rows["date"].iloc[0], "engine": rows["engine"].iloc[0],
                                  "engine_version": None, "gpu": rows["gpu"].iloc[0], "gpu_count": 0,
                                  "gpu_memory_mib": None, "gpu_driver": None, "cpu": None, "num_cpu": None,
                                  "ram_gib": None, "os": None, "versions": ""}])
        slug = _slug(machine, slugs)
        mine = [g for g in groups if g.key["machine"] == machine]
        lines = [x for x in not_run if x.startswith(f"{machine} · ")]
        older = results.table[(results.table["machine"] == machine) & ~results.table.index.isin(rows.index)]
        parity_html = parity.html(decode_parity[decode_parity["machine"] == machine])
        diag_html = parity.diagnostics_html(decode_diag[decode_diag["machine"] == machine])
        summary_html = summary.html(mine, lines) + (f"<h4>Decode parity across cold starts</h4>{parity_html}"
                                                    if parity_html else "") + _fold(
            "What the processes did while decoding (medians over the cold starts; counters over the decode "
            "windows; step times as the parent saw them)", diag_html, f"m{i}-decode")
        plans = [d for d in decisions if d.machine == machine]
        files = charts.draw(rows, info, out_dir, prefix=f"{slug}-",
                            parity_rows=decode_parity[decode_parity["machine"] == machine])
        body.append(_machine_section(i, machine, rows, info, files, summary_html, older, plans,
                                     _starts_html(results.records[results.records["machine"] == machine])))
    body.append(_fold("Methodology", METHODOLOGY, "methodology"))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>forkspawn-bench report: {e(', '.join(machines))}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")


def _fold(summary_text: str, content: str, anchor: str = "") -> str:
    """A folded section (closed: on screen one line, in print nothing)."""
    if not content:
        return ""
    where = f" id=\"{e(anchor)}\"" if anchor else ""
    return f"<details{where}><summary>{e(summary_text)}</summary>{content}</details>"


def _starts_html(records: pd.DataFrame) -> dict[str, str]:
    """A machine's first starts (warm-ups) and its engines' notes on how they ran, as HTML."""
    legacy = sorted({r.engine for r in records.itertuples() if r.engine in VLLM_ENGINES and is_legacy(r.record)})
    return {"warmups": starts.warmups_html(starts.warmups(records)),
            "notes": starts.notes_html(starts.engine_notes(records), legacy)}


def _machine_section(i: int, machine: str, rows: pd.DataFrame, info: pd.DataFrame, files: dict,
                     summary_html: str = "", older: pd.DataFrame | None = None,
                     plans: list | None = None, starts_html: dict[str, str] | None = None) -> str:
    """One machine's charts and folded tables; `rows`: its latest rows of the view (derive.view)."""
    parts = [f"<h2 id=\"m{i}\">Machine {e(machine)}</h2><p class=\"prov\">{e(charts.provenance(info))}</p>"]
    for name, (title, _) in charts.CHARTS.items():
        png, svg = files[name]["png"], files[name]["svg"]
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<figure data-chart=\"{e(name)}\"><img src=\"data:image/png;base64,{data}\" "
                     f"alt=\"{e(title)} ({e(machine)})\"><figcaption><b>{e(title)}.</b> {e(CAPTIONS[name])} "
                     f"Files: <a href=\"{e(png.name)}\">PNG</a>, <a href=\"{e(svg.name)}\">SVG</a>.</figcaption></figure>")
    parts.append(_fold("Executive summary: every setting, each method against fork, with 99% intervals",
                       summary_html, f"m{i}-summary"))
    starts_html = starts_html or {}
    parts.append(_fold("First starts: each warm-up beside the counted cold starts (not counted anywhere)",
                       starts_html.get("warmups", ""), f"m{i}-warmups"))
    parts.append(_fold("How the engines ran: executor and bytecode", starts_html.get("notes", ""), f"m{i}-notes"))
    exec_rows = rows[rows["metric"] == vocab.EXEC_TO_READY]
    tables = ("<h3>Time to ready (from the start request to ready: median [99% CI], seconds)</h3>"
              + _median_table(rows, vocab.TIME_TO_READY) + _includes(rows)
              + ("<h3>Exec to ready (from the exec of the process a user restarts: its interpreter start, the "
                 "parent state and the engine's imports included; median [99% CI], seconds)</h3>"
                 + _median_table(rows, vocab.EXEC_TO_READY) if exec_rows["value"].notna().any() else "")
              + "<h3>Start-up phases (seconds each phase's span took, the bars of chart 1)</h3>" + _phase_tables(rows)
              + "<h3>Steady-state decoding (output tokens/s, median [99% CI])</h3>"
              + _median_table(rows, r"tokens_per_s\.b\d+")
              + "<h3>Teardown (seconds from the stop request until every process exited, median [99% CI])</h3>"
              + _median_table(rows, vocab.TEARDOWN)
              + "<h3>Memory at ready, per process and per replica (MiB, median of the cold starts)</h3>"
              "<p class=\"note\">The <code>group</code> row is the replica: parent, forkserver (if any) and "
              "every rank. USS and PSS sum to the real footprint; RSS counts shared pages in each process; "
              "GPU is NVML's per-process figure; PSS after decode and after gc: read again once decoding ended, "
              "and after the parent's gc.collect() (record/3). Intervals are in the executive summary and "
              "table.csv.</p>"
              + _memory_table(rows))
    if rows["metric"].str.startswith("roofline_fraction").any():
        tables += ("<h3>Fraction of the decode roofline (tokens/s over batch &times; measured memory bandwidth "
                   "/ weight bytes per rank)</h3>" + _median_table(rows, r"roofline_fraction\.b\d+"))
    parts.append(_fold("Tables: time to ready, decoding, teardown, memory", tables))
    parts.append(_fold("Compatibility, with the errors", _compatibility_table(charts.compatibility(rows))))
    parts.append(_fold(f"Capacity plans for this machine ({RESTARTS_PER_DAY} starts and {BUSY_HOURS:g} busy hours "
                       f"a day)", _capacity_section(plans or [])))
    if older is not None and len(older):
        parts.append(_fold("History: older commits", _history(older)))
    parts.append(_fold("Machine and versions", _html_table(
        info[["engine", "engine_version", "commit", "env", "date", "gpu", "gpu_count", "gpu_driver", "cpu", "num_cpu",
              "ram_gib", "os", "versions"]])))
    return "".join(parts)


def _compatibility_table(cells: pd.DataFrame) -> str:
    """Cells that ran, with the cause of each failure (full text on hover); configurations that
    could not run here folded into one line per reason."""
    unmeasured = cells["verdict"].isin([verdict.NA, verdict.NOT_RUN])
    run = cells[~unmeasured].copy()
    run["cause"] = [cause(x) if isinstance(x, str) and v != verdict.WORKS else ""
                    for x, v in zip(run["error"], run["verdict"])]
    out = _html_table(run[["engine", "method", "parent_state", "text", "cause"]].rename(columns={"text": "verdict"}),
                      row_class=run["verdict"].map({verdict.WORKS: "ok", verdict.FAILS: "error", verdict.HANGS: "timeout",
                                                    verdict.MIXED: "timeout"}).fillna(""))
    na = cells[unmeasured]
    if len(na):
        folded = []
        for (word, reason), g in na.groupby([na["verdict"], na["error"].map(cause)], sort=False):
            where = ", ".join(f"{r.engine} {r.method} / {r.parent_state}" for r in g.itertuples())
            folded.append(f"<li>{len(g)} {e(word)}: {e(reason)} <span class=\"skipped\">({e(where)})</span></li>")
        out += f"<ul>{''.join(folded)}</ul>"
    errors = run[run["error"].notna() & (run["verdict"] != verdict.WORKS)].drop_duplicates("error")
    if len(errors):
        out += "<details><summary>Full error texts</summary>" + "".join(
            f"<p><b>{e(r.engine)} {e(r.method)} / {e(r.parent_state)}</b></p><pre>{e(r.error)}</pre>"
            for r in errors.itertuples()) + "</details>"
    return out


MEMORY_COLUMNS = {"uss": "USS", "pss": "PSS", "rss": "RSS", "peak_rss": "peak RSS", "gpu": "GPU",
                  "pss_after_decode": "PSS after decode", "pss_after_gc": "PSS after gc"}


def _phase_tables(rows: pd.DataFrame) -> str:
    """Chart 1's bars as tables, one per engine (its own phases)."""
    every = charts.phase_table(charts.view(rows))
    if every.empty:
        return _none_measured(rows[rows["metric"] == vocab.TIME_TO_READY], "start-up phase")
    return "".join(f"<p>{e(engine)}</p>" + _html_table(t.drop(columns="engine").dropna(axis=1, how="all"))
                   for engine, t in every.groupby("engine", sort=False))


def _memory_table(rows: pd.DataFrame) -> str:
    """One row per configuration and process, columns USS / PSS / RSS / peak RSS / GPU."""
    m = rows[rows["metric"].str.fullmatch(vocab.MEM_RE) & (rows["status"] == "ok")]
    if m.empty:
        return _none_measured(rows[rows["metric"].str.fullmatch(vocab.MEM_RE)], "memory")
    kind = m["metric"].str.extract(vocab.mem_re(kinds="([a-z_]+)"))[0]
    wide = m.assign(k=kind).pivot_table(index=["engine", "tp", "parent_state", "method", "process"], columns="k",
                                        values="value", aggfunc="first", sort=False)
    wide = wide[[c for c in MEMORY_COLUMNS if c in wide.columns]].rename(columns=MEMORY_COLUMNS)
    wide = wide.reset_index()
    order = {p: i for i, p in enumerate(["group", "parent", "forkserver"])}
    methods = {mth: i for i, mth in enumerate(method_order(wide["method"]))}
    wide = wide.sort_values(["engine", "tp", "parent_state", "method", "process"], key=lambda c: c.map(
        lambda v: (methods.get(v, order.get(v, 99)), str(v)) if c.name in ("method", "process") else v), kind="stable")
    return _html_table(wide, row_class=["rec" if p == "group" else "" for p in wide["process"]])


def _history(older: pd.DataFrame) -> str:
    """Older commits of this machine: time to ready per commit, newest first."""
    r = older[older["metric"] == vocab.TIME_TO_READY].copy()
    if r.empty:
        return ""
    r["cell"] = [_ci_text(x) if s == "ok" else s for x, s in zip(r.itertuples(), r["status"])]
    r["commit"] = r["commit"].str[:8] + " (" + r["date"].dt.strftime("%Y-%m-%d") + ")"
    wide = r.pivot_table(index=["commit", "engine", "parent_state", "tp"], columns="method", values="cell",
                         aggfunc="first", sort=False)
    wide = wide[method_order(wide.columns)].reset_index().sort_values("commit", ascending=False, kind="stable")
    return "<h3>History: older commits (time to ready, seconds, median [99% CI])</h3>" + _html_table(wide)


def _median_table(rows: pd.DataFrame, metric: str) -> str:
    """One metric (a regex over metric names) as a method-wide table of medians with their CI."""
    r = rows[rows["metric"].str.fullmatch(metric)].copy()
    if r.empty or r["value"].isna().all():  # the statuses alone would say less than the reasons
        return _none_measured(r)
    r["cell"] = [_ci_text(x) if s == "ok" else s for x, s in zip(r.itertuples(), r["status"])]
    index = ["engine", "parent_state", "cuda_check", "tp"] + (["batch"] if r["batch"].notna().any() else [])
    wide = r.pivot_table(index=index, columns="method", values="cell", aggfunc="first", sort=False)
    wide = wide[method_order(wide.columns)].reset_index()
    if r["executor"].notna().any():  # which executor each method of a row ran with
        ran = {k: executors(g) for k, g in r.groupby(index, sort=False, dropna=False)}
        wide.insert(len(index), "executor", [ran.get(tuple(k), "") for k in wide[index].itertuples(index=False)])
    return _html_table(wide)


def _none_measured(rows: pd.DataFrame, what: str = "value") -> str:
    """A table with nothing to show: one line saying why (verdict.why_not), in its place."""
    return f"<p class=\"note\">No {e(what)} measured on this machine: {e(verdict.why_not(rows))}.</p>"


def _includes(rows: pd.DataFrame) -> str:
    """What a time to ready covers where it is more than start request to ready (Xinference's server)."""
    ttr = rows[(rows["metric"] == vocab.TIME_TO_READY) & (rows["status"] == "ok")]
    other = ttr[ttr[INCLUDES].str.startswith("server", na=False)]
    items = "".join(f"<li>{e(r.engine)} {e(r.method)}, parent {e(r.parent_state)}: {e(r.includes)}</li>"
                    for r in other.itertuples())
    return (f"<p class=\"note\">Time to ready as a restart pays it; where that includes a server's start:</p>"
            f"<ul>{items}</ul>") if items else ""


def _ci_text(x: Any) -> str:
    lo = max(x.ci_low, 0) if pd.notna(x.ci_low) else None  # a time or a rate is never negative
    n = x.n if pd.notna(x.n) else None
    ci = interval_text(lo, x.ci_high if pd.notna(x.ci_high) else None, n)
    return (f"{num(x.value)} {ci}" + ("" if ci.startswith("n=") or n is None else f" n={n}")).strip()


def _capacity_section(decisions: list) -> str:
    """Each decision's plan on the measured machine (screen.decisions made them)."""
    parts = ["<p>Run <code>python -m analysis plan DIR --tp N --restarts-per-day R --busy-hours H --gpus G "
             "--gpu-mem-gib M --ram-gib R --cpus C</code> for another deployment or node.</p>"]
    for d in decisions:
        if d.plan is None:
            parts.append(f"<p>{e(d.setting)}: {e(d.error)}</p>")
            continue
        p = d.plan
        parts.append(f"<h4>{e(d.setting)}</h4><p class=\"note\">{e(p.scenario)}</p><p><b>verdict</b>: {e(p.verdict)}</p>"
                     + _html_table(p.table.drop(columns=["recommended"]),
                                   row_class=p.table["recommended"].map({True: "rec", False: ""})))
    return "".join(parts)


def _html_table(df: pd.DataFrame, row_class: Iterable[str] | None = None) -> str:
    head = "".join(f"<th>{e(c)}</th>" for c in df.columns)
    classes = list(row_class) if row_class is not None else [""] * len(df)
    body = []
    for cls, row in zip(classes, df.itertuples(index=False)):
        cells = "".join(f"<td class=\"num\">{_fmt(v)}</td>" if isinstance(v, (int, float)) and not isinstance(v, bool)
                        else f"<td>{_fmt(v)}</td>" for v in row)
        body.append(f"<tr class=\"{e(cls)}\">{cells}</tr>")
    return f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _fmt(v: Any) -> str:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    if isinstance(v, (float, int)) and not isinstance(v, bool):
        return e(num(v))
    if isinstance(v, pd.Timestamp):
        return e(f"{v:%Y-%m-%d %H:%M}")
    return e(v)


def e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "machine"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug
