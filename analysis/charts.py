"""The six charts of the report, drawn with matplotlib from the tidy table of one machine.

Figures are made with `matplotlib.figure.Figure` rather than pyplot: no GUI backend and no global
figure registry are involved (saving uses the Agg canvas), and a notebook can display them.

Each `chart_*` function takes the charts' `view` of the latest rows of one machine (`load.latest`)
and returns a Figure; `draw` makes that view, adds the title and writes PNG and SVG (the machine
and versions are under the chart on the report page: `provenance`). A chart with nothing to show
says so instead of being left out, so a report always has all six.
"""

from __future__ import annotations

import itertools
import re
import textwrap
import zlib
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, NullLocator

from forkspawn import vocabulary as vocab

from . import decide, derive, verdict
from .capacity import mode_of, mode_text, rates_differ
from .capacity import sides as capacity_sides
from .derive import RESTART, RESTART_CLOCK, difference, executors, has_interval
from .fmt import cause, engine_label, num, pct
from .load import ASKED
from .verdict import method_order

STYLE = {
    "text.parse_math": False,  # machine names and error texts may hold "$": never mathtext
    "font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "svg.fonttype": "none", "svg.hashsalt": "forkspawn",
}
KNOWN_METHOD_COLORS = {"fork": "#1f77b4", "spawn": "#ff7f0e", "forkserver": "#2ca02c", "forkserver-preload": "#d62728",
                       "ray": "#9467bd"}
EXTRA_COLORS = ["#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79"]
STATUS_COLORS = {verdict.WORKS: "#b7e1b0", verdict.FAILS: "#f4a6a6", verdict.HANGS: "#f8d08a", verdict.NA: "#e6e6e6",
                 verdict.NOT_RUN: "#f4f4f4", verdict.MIXED: "#f8e7a0"}
# exec to ready less time to ready (record/3): the restarted process's interpreter start, its state
# and imports (`from vllm import LLM`) before the start request: chart 1's first segment
BEFORE_START = "before the start request"
# A phase is named by what ended with it (the span since the phase before). vLLM's own, in order:
# the engine core's process created, its interpreter start and imports done (it took its vLLM
# title; a forked core inherits both), the same for the last `mp` worker, then weights and the rest.
PHASE_LABELS = {
    "cluster_joined": "Ray cluster joined", "process_entry": "process created", "imports_done": "imports (torch)", "device_ready": "device set-up",
    "dist_initialized": "distributed init", "weights_loaded": "weights loaded", "first_token": "first token",
    "ready": "ready (warm-up / last step)",
    "engine_core_started": "engine core: process created",
    "engine_core_imported": "engine core: interpreter start + imports",
    "workers_started": "worker: process created", "workers_imported": "worker: interpreter start + imports",
    "torch_compiled": "torch.compile", "kv_cache_profiled": "KV cache profiled",
    "cuda_graphs_captured": "CUDA graphs captured", "kv_cache_ready": "engine initialised (KV cache, warm-up)",
    BEFORE_START: "parent: interpreter start, state, imports (before the start request)",
}
# vLLM before record/3 stamped no `*_imported` phase: a spawned engine core's interpreter start and
# imports fell inside "workers started", a spawned worker's inside "weights loaded". Those spans are
# phases of their own here, so that a reader tells them from record/3's (`legacy_phases`).
LEGACY_PHASES = {"workers_started": "workers_started+imports", "weights_loaded": "weights_loaded+imports"}
PHASE_LABELS |= {LEGACY_PHASES["workers_started"]: "workers started (incl. the engine core's imports, before record/3)",
                 LEGACY_PHASES["weights_loaded"]: "weights loaded (incl. imports, before record/3)"}
MEMORY_KINDS = {
    "uss": "USS: private pages", "pss": "PSS: shared pages split among sharers",
    "rss": "RSS: shared pages counted in each process", "gpu": "GPU memory (NVML, incl. CUDA context)",
}
NO_DATA = "nothing measured successfully for this chart on this machine"


def method_colors(methods: list[str]) -> dict[str, str]:
    """A colour per method label, by the method that ran: "fork→spawn (forced)" is spawn's colour
    (told apart by FORCED_HATCH in bars and a dashed line in curves)."""
    extra = iter(EXTRA_COLORS * 3)
    ran = {m: verdict.ran_as(m) for m in method_order(methods)}
    own = {r: KNOWN_METHOD_COLORS.get(r) or next(extra) for r in dict.fromkeys(ran.values())}
    return {m: own[r] for m, r in ran.items()}


FORCED_HATCH = "//"  # a bar of a method the engine forced (asked one, ran another)


def _hatch(method: str) -> str | None:
    return FORCED_HATCH if "→" in method else None


def _engine_label(df: pd.DataFrame) -> pd.Series:
    """'vllm 0.26.0 · 1b': the engine with its version, and the model (two sizes never share a panel)."""
    model = df["model"] if "model" in df else pd.Series(None, index=df.index, dtype=object)
    return pd.Series([engine_label(e, v) + (f" · {m}" if isinstance(m, str) else "")
                      for e, v, m in zip(df["engine"], df["engine_version"], model)], index=df.index, dtype=object)


def _ok(df: pd.DataFrame, pattern: str) -> pd.DataFrame:
    ok = df[(df["status"] == "ok") & df["value"].notna() & df["metric"].str.fullmatch(pattern)]
    return ok.assign(engine_label=_engine_label(ok))


NVML_LABEL = " (NVML check)"


def label_nvml(df: pd.DataFrame) -> pd.DataFrame:
    """Charts show the NVML-based CUDA check (a variant of device-queried) as a parent state of its own."""
    nvml = df["cuda_check"] == vocab.NVML_CHECK
    return df.assign(parent_state=df["parent_state"].where(~nvml, df["parent_state"] + NVML_LABEL))


def _rows(df: pd.DataFrame, pattern: str) -> pd.DataFrame:
    """Every row of the metrics matching `pattern`, whatever its status, with `engine_label`: what
    a chart or panel would draw, and why it cannot (`_why`)."""
    rows = df[df["metric"].str.fullmatch(pattern)]
    return rows.assign(engine_label=_engine_label(rows))


def _why(what: str, rows: pd.DataFrame) -> str:
    """'<what>: <why>' for a chart or panel with nothing to draw: the reasons are the table's own for
    its rows (verdict.why_not: a failure's cause, a record's note such as "tokens/s at batch 16 not
    measured: ...")."""
    why = verdict.why_not(rows)
    return f"{what}: {why}" if why else what


def _empty(fig: Figure, why: str = NO_DATA) -> Figure:
    """A chart with nothing to draw at all: one sentence saying so and why, instead of axes."""
    fig.text(0.5, 0.5, textwrap.fill(why, 100), ha="center", va="center", fontsize=11, color="#555")
    return fig


def _nothing(ax, why: str) -> None:
    """A panel with nothing to draw: the sentence saying why in its place, no axes that would claim
    a scale (and never a bar of nothing)."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, textwrap.fill(why, 50), transform=ax.transAxes, ha="center", va="center", fontsize=8,
            color="#555")


def _grid(rows: int, cols: int, w: float = 4.2, h: float = 3.2, sharey: bool = False) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(max(6.0, w * cols + 1.5), h * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey="row" if sharey else False)
    return fig, axes


def _group_ticks(ax, groups: list[tuple[str, list[str]]], width: float = 1.0) -> list[float]:
    """x positions for bars in labelled groups (a gap between groups); group names above the ticks."""
    xs, ticks, labels, groups_at, pos = [], [], [], [], 0.0
    for name, members in groups:
        start = pos
        for m in members:
            xs.append(pos)
            ticks.append(pos)
            labels.append(m)
            pos += width
        groups_at.append((name, (start + pos - width) / 2))
        pos += width * 0.6
    labels = [m.replace(" (", "\n(") for m in labels]  # "fork→spawn (forced)" on two lines: narrower
    ax.set_xticks(ticks, labels, rotation=35, ha="right", rotation_mode="anchor")
    drop = 20 + 5.0 * max(len(x) for m in labels for x in m.splitlines()) * 0.57  # below the rotated tick labels
    sizes = [len(members) for _, members in groups]
    for (name, x), size in zip(groups_at, sizes):  # wrapped to the group's width: no overprinting
        text = "\n".join(textwrap.fill(line, max(7, int(size * 6.5)), break_long_words=False, break_on_hyphens=False)
                         for line in name.split("\n"))  # words whole: "executor", "fork-mp"
        ax.annotate(text, xy=(x, 0), xycoords=("data", "axes fraction"), xytext=(0, -drop), textcoords="offset points",
                    ha="center", va="top", fontweight="bold", fontsize=8)
    return xs


def _headroom(ax, tops: np.ndarray) -> None:
    """Room above the tallest bar for its value label."""
    if len(tops) and np.nanmax(tops) > 0:
        ax.set_ylim(top=max(ax.get_ylim()[1], np.nanmax(tops) * 1.12))


# 1 ------------------------------------------------------------------------------------------------
UNTIL_READY = "until ready"  # time to ready left after the last recorded phase
# One colour per phase in every report, whatever else was measured (a phase several engines share, such
# as weights_loaded, looks the same in each); a phase not listed gets one from its name, as stable.
PHASE_COLORS = {
    "cluster_joined": "#ff7f0e", "process_entry": "#1f77b4", "imports_done": "#2ca02c", "device_ready": "#d62728",
    "dist_initialized": "#9467bd", "first_token": "#e377c2", "ready": "#7f7f7f",
    "server_ready": "#ffbb78", "launch_requested": "#98df8a", "model_started": "#c5b0d5",
    "engine_core_started": "#bcbd22", "workers_started": "#17becf", "weights_loaded": "#8c564b",
    "engine_core_imported": "#dbdb8d", "workers_imported": "#9edae5",
    LEGACY_PHASES["workers_started"]: "#6b6ecf", LEGACY_PHASES["weights_loaded"]: "#a55194",
    "torch_compiled": "#ff9896", "kv_cache_profiled": "#c49c94", "cuda_graphs_captured": "#393b79",
    "kv_cache_ready": "#aec7e8", UNTIL_READY: "#d9d9d9", BEFORE_START: "#525252",
}
_MORE_PHASE_COLORS = ["#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1"]


def phase_color(phase: str) -> str:
    """The colour of a phase in every chart of every report."""
    return PHASE_COLORS.get(phase) or _MORE_PHASE_COLORS[zlib.crc32(phase.encode()) % len(_MORE_PHASE_COLORS)]


def phase_label(phase: str) -> str:
    """What a phase's span is called in every chart and table."""
    return PHASE_LABELS.get(phase, phase.replace("_", " "))


def legacy_phases(ends: pd.DataFrame) -> pd.DataFrame:
    """`ends` (configurations x phases) with vLLM's spans from before record/3 under their own
    names (LEGACY_PHASES): a configuration whose engine core was started but never stamped as
    imported."""
    if "engine_core_started" not in ends:
        return ends
    imported = ends["engine_core_imported"] if "engine_core_imported" in ends else pd.Series(np.nan, index=ends.index)
    old = ends["engine_core_started"].notna() & imported.isna()
    if not old.any():
        return ends
    ends = ends.copy()
    for phase, legacy in LEGACY_PHASES.items():
        if phase in ends:
            ends[legacy] = ends[phase].where(old)
            ends[phase] = ends[phase].where(~old)
    return ends.dropna(axis=1, how="all")


def phase_order(ends: pd.DataFrame) -> list[str]:
    """One engine's phases in time order: a phase comes before those it ended before in most of
    the configurations that have both (eager mode has no torch.compile: a median over all would
    put it after the KV-cache profiling it precedes), ties by the median end."""
    phases = [p for p in ends.columns if p != "start_requested"]
    median = ends.median()

    def precedes(p: str, q: str) -> bool:
        both = ends[[p, q]].dropna()
        return bool((both[p] < both[q]).sum() > (both[p] > both[q]).sum())

    score = {p: sum(precedes(p, q) for q in phases if q != p) for p in phases}
    return sorted(phases, key=lambda p: (-score[p], median[p]))


def phase_stacks(df: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """engine label -> (spans, ends): one row per (parent_state, tp, method), columns BEFORE_START,
    the engine's phases (usual time order) then UNTIL_READY. `ends` is when each phase ended on the
    bar's own clock; `spans` the time from the previous phase's end (in this configuration's own
    time order: a Ray worker joins the cluster before its process starts) to this one's, clamped at
    0, so that a row sums to the configuration's exec to ready where it was recorded (record/3: the
    parent's interpreter start, state and imports before the start request are BEFORE_START), else
    to its time to ready, exactly.

    Phases are seconds since the start request when the slowest rank ended them. An engine whose
    time to ready starts later than its phases' clock (Xinference: the server starts first, time to
    ready runs from the launch request) is shifted so that `ready` lands on time to ready; what
    ended before that origin takes no time in the bar."""
    ok = _ok(df, f"{vocab.PHASE_RE}|{vocab.TIME_TO_READY}|{vocab.EXEC_TO_READY}")
    out = {}
    index = ["parent_state", "tp", "method"]
    for engine, sub in ok.groupby("engine_label", sort=True):
        ttr = sub[sub["metric"] == vocab.TIME_TO_READY].set_index(index)["value"]
        since_exec = sub[sub["metric"] == vocab.EXEC_TO_READY].set_index(index)["value"]
        ph = sub[sub["metric"].str.fullmatch(vocab.PHASE_RE)]
        if ttr.empty:
            continue
        # no phase recorded: the bar is time to ready alone ("until ready")
        ends = legacy_phases(ph.pivot_table(index=index, columns="phase", values="value") if len(ph)
                             else pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=index)))
        order = phase_order(ends)
        rows, at = {}, {}
        for key, total in ttr.items():
            e = ends.loc[key, order] if key in ends.index else pd.Series(np.nan, index=order)
            origin = max(e.get("ready", np.nan) - total, 0) if pd.notna(e.get("ready", np.nan)) else 0.0
            done = (e - origin).clip(lower=0, upper=total).dropna().sort_values(kind="stable")
            spans = done.diff().fillna(done).clip(lower=0).reindex(order, fill_value=0.0)
            spans[UNTIL_READY] = max(total - (done.iloc[-1] if len(done) else 0.0), 0.0)
            before = float(since_exec[key]) - total if key in since_exec.index else None
            before = before if before is not None and before >= 0 else None  # exec to ready is the longer clock
            rows[key] = pd.concat([pd.Series({BEFORE_START: before or 0.0}), spans])
            at[key] = pd.concat([pd.Series({BEFORE_START: before if before is not None else -1.0}),
                                 (done + (before or 0.0)).reindex(order).fillna(-1.0),
                                 pd.Series({UNTIL_READY: total + (before or 0.0)})])
        out[engine] = (pd.DataFrame(rows).T.rename_axis(index), pd.DataFrame(at).T.rename_axis(index))
    return out


def phase_table(df: pd.DataFrame) -> pd.DataFrame:
    """Chart 1's bars as a table: per engine and configuration, the seconds each phase's span took
    (named as in the chart's legend, in the engine's order; empty where the configuration has no
    such phase), what was left until ready, and the bar's total and what it counts from."""
    totals = bar_totals(df)
    statuses = _rows(df, vocab.STATUS).drop_duplicates(["engine_label", "parent_state", "tp", "method"], keep="last")
    executor = statuses.set_index(["engine_label", "parent_state", "tp", "method"])["executor"] \
        if "executor" in statuses else pd.Series(dtype=object)
    out = []
    for engine, (spans, ends) in phase_stacks(df).items():
        shown = [p for p in spans.columns if (spans[p] > 0).any() or p == UNTIL_READY]
        for key, row in spans.iterrows():
            full = (engine,) + key
            cells = {phase_label(p): (row[p] if ends.at[key, p] >= 0 or p == UNTIL_READY else None) for p in shown}
            total = totals.loc[full]
            out.append({"engine": engine, "parent_state": key[0], "tp": key[1], "method": key[2],
                        "executor": executor.get(full), **cells, "total, s": float(row.sum()),
                        "counted from": "exec" if total["metric"] == vocab.EXEC_TO_READY else "start request"})
    return pd.DataFrame(out)


def bar_totals(df: pd.DataFrame) -> pd.DataFrame:
    """Chart 1's bars (engine label, parent state, tp, method): each one's total with its 99%
    interval, exec to ready where recorded (the bar starts at the exec: `phase_stacks`), else time
    to ready; `metric` says which."""
    key = ["engine_label", "parent_state", "tp", "method"]
    rows = _ok(df, f"{vocab.TIME_TO_READY}|{vocab.EXEC_TO_READY}")
    rows.attrs = {}  # the view's attrs (chart 5's parity table) would make concat compare DataFrames
    ttr = rows[rows["metric"] == vocab.TIME_TO_READY].drop_duplicates(key, keep="last").set_index(key)
    since_exec = rows[rows["metric"] == vocab.EXEC_TO_READY].drop_duplicates(key, keep="last").set_index(key)
    longer = since_exec[since_exec["value"] >= ttr["value"].reindex(since_exec.index)]
    return pd.concat([ttr.drop(index=longer.index), longer])


def _failures(df: pd.DataFrame) -> pd.DataFrame:
    """Configurations that failed or hung, with a short cause, for placeholders in the charts."""
    st = df[(df["metric"] == vocab.STATUS) & df["status"].map(verdict.failed)]
    st = st.assign(engine_label=_engine_label(st))
    def short(e: object) -> str:  # the exception itself, not the harness's "rank 0 failed during ..." prefix
        c = cause(e)
        m = re.search(r"\b[A-Za-z_.]*(Error|Exception|Timeout)\b.*", c)
        return textwrap.shorten(m.group(0) if m else c, 60)

    return st.assign(why=[verdict.failure(s, short(e)) for s, e in zip(st["status"], st["error"])])


def _placeholder(ax, x: float, why: str) -> None:
    """A failed configuration: a hatched, labelled slot where its bar would be."""
    ax.add_patch(Rectangle((x - 0.4, 0), 0.8, 1, transform=ax.get_xaxis_transform(), fill=False, hatch="///",
                           ec="#c44", lw=0.8))
    # short enough to fit the slot's height: matplotlib drops a clipped text that overflows it
    ax.text(x, 0.03, why if len(why) <= 60 else why[:59] + "…", transform=ax.get_xaxis_transform(), rotation=90,
            ha="center", va="bottom", fontsize=6.5, color="#a00", clip_on=True,
            bbox={"boxstyle": "square,pad=0.15", "fc": "white", "ec": "none"})  # readable over the hatching


def chart_startup(df: pd.DataFrame) -> Figure:
    """Stacked start-up phases (slowest rank's phase ends, median) per method and TP, per engine,
    each engine in its own phase order, each bar from the exec where recorded (`bar_totals`);
    whiskers: the bar's 99% CI; each TP group names its executors; failures hatched."""
    stacks = phase_stacks(df)
    fails = _failures(df)
    if not stacks:
        return _empty(Figure(figsize=(8, 3)), _why(NO_DATA, _rows(df, vocab.TIME_TO_READY)))
    totals_of = bar_totals(df)
    all_phases = list(dict.fromkeys(p for s, _ in stacks.values() for p in s.columns
                                    if p != UNTIL_READY and (p != BEFORE_START or (s[p] > 0).any())))
    colors = {p: phase_color(p) for p in all_phases} | {UNTIL_READY: phase_color(UNTIL_READY)}
    engines = list(stacks)
    states = [s for s in df["parent_state"].drop_duplicates()
              if any(s in st.index.get_level_values(0) for st, _ in stacks.values())
              or s in set(fails[fails["engine_label"].isin(engines)]["parent_state"])]
    fig, axes = _grid(len(engines), len(states), w=3.6, h=4.0, sharey=False)
    statuses = _rows(df, vocab.STATUS)
    drawn: dict[int, list] = {}  # panels with bars, per engine row: one y-scale across a row, so that bars
    # compare within an engine and no engine's scale flattens another's (Xinference's 200 s, vLLM's 20 vs 61)
    totals: dict[int, list[tuple[float, float]]] = {}
    for r, engine in enumerate(engines):
        sub, ends = stacks[engine]
        for c, state in enumerate(states):
            ax = axes[r, c]
            ax.set_title(f"{engine}\nparent: {state}")
            here = sub[sub.index.get_level_values(0) == state].droplevel(0)
            when = ends[ends.index.get_level_values(0) == state].droplevel(0)
            failed = fails[(fails["engine_label"] == engine) & (fails["parent_state"] == state)]
            keys_all = list(here.index) + [(tp, m) for tp, m in zip(failed["tp"], failed["method"])
                                           if (tp, m) not in here.index]
            if not keys_all:  # this engine has no run from this parent state: no panel at all
                ax.remove()
                continue
            tps = sorted({tp for tp, _ in keys_all})
            here_st = statuses[(statuses["engine_label"] == engine) & (statuses["parent_state"] == state)]
            groups = [(_with_executors(f"TP={tp}", here_st[here_st["tp"] == tp], "\n"),
                       method_order([m for t, m in keys_all if t == tp])) for tp in tps]
            xs = _group_ticks(ax, groups)
            keys = [(tp, m) for tp, (_, ms) in zip(tps, groups) for m in ms]
            bottom = np.zeros(len(keys))
            for i, k in enumerate(keys):  # each bar stacked in its own time order
                if k not in here.index:
                    continue
                for phase in when.loc[k].sort_values(kind="stable").index:
                    h = float(here.at[k, phase])
                    if h > 0:
                        ax.bar([xs[i]], [h], bottom=[bottom[i]], color=colors[phase], width=0.8)
                        bottom[i] += h
            tops = []
            for x, k, total in zip(xs, keys, bottom):
                row = totals_of.loc[(engine, state) + k] if (engine, state) + k in totals_of.index else None
                if row is None:
                    why = failed[(failed["tp"] == k[0]) & (failed["method"] == k[1])]["why"]
                    _placeholder(ax, x, why.iloc[0] if len(why) else verdict.NOT_RUN)
                    continue
                lo, hi = row["ci_low"], row["ci_high"]
                if pd.notna(lo) and pd.notna(hi):
                    ax.errorbar([x], [total], yerr=[[max(total - max(lo, 0), 0)], [max(hi - total, 0)]], fmt="none",
                                ecolor="#222", elinewidth=0.8, capsize=2, zorder=4)
                    tops.append(hi)
                label = num(total) if has_interval(row["n"]) else f"{num(total)}\nn={row['n']}: no interval"
                ax.annotate(label, (x, max(total, hi if pd.notna(hi) else total)), xytext=(0, 4),
                            textcoords="offset points", ha="center", va="bottom", fontsize=6.5)
            _headroom(ax, np.array(list(bottom) + tops) * 1.15)
            if not bottom.any():  # only failures here: a seconds axis would claim a scale it does not have
                ax.set_yticks([])
                ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)  # no bar was drawn to set the x range
            else:
                drawn.setdefault(r, []).append(ax)
                totals[id(ax)] = list(zip(xs, bottom))
            here_totals = totals_of.index.get_level_values(0) == engine
            since = set(totals_of["metric"][here_totals & (totals_of.index.get_level_values(1) == state)])
            ax.set_ylabel("seconds since the exec of the process restarted" if since == {vocab.EXEC_TO_READY} else
                          "seconds since start request" if vocab.EXEC_TO_READY not in since else
                          "seconds since exec (where recorded) or start request")
    for row in drawn.values():
        top = max(ax.get_ylim()[1] for ax in row)
        for ax in row:
            ax.set_ylim(0, top)
            _mark_short_bars(ax, top, totals[id(ax)])
    shown = all_phases + [UNTIL_READY]
    handles = [Rectangle((0, 0), 1, 1, color=colors[p]) for p in shown]
    labels = [phase_label(p) for p in shown]
    handles.append(Rectangle((0, 0), 1, 1, fill=False, hatch="///", ec="#c44"))
    labels.append("fails / hangs (cause in the bar)")
    fig.legend(handles[::-1], labels[::-1], loc="outside right center", title="phase ended (top = last)")
    return fig


def _with_executors(name: str, rows: pd.DataFrame, sep: str = " · ") -> str:
    """A group's or panel's name with the executor its methods ran with ('TP=1 · executor uni')."""
    ex = executors(rows)
    return f"{name}{sep}{ex}" if ex else name


def _mark_short_bars(ax, top: float, bars: list[tuple[float, float]]) -> None:
    """A bar too short to see at this scale (under 2% of it: cpu-default's 0.2 s fork) gets a marker
    over it, so its value label does not float over nothing."""
    for x, total in bars:
        if 0 < total < 0.02 * top:
            ax.plot([x], [total], marker="v", ms=5, color="#222", zorder=5)


# 2 ------------------------------------------------------------------------------------------------
def chart_memory(df: pd.DataFrame) -> Figure:
    """Memory at ready, stacked by process (the stack is the worker group), per method and kind;
    whiskers: the group's 99% CI; the group's PSS after decode and after gc marked beside its PSS
    bar where read (LATER_PSS); failed configurations hatched. Panels wrap so that every bar keeps
    room for its total."""
    pattern = vocab.mem_re(kinds="(uss|pss|rss|gpu)")
    ok = _ok(df, pattern)
    group = ok[ok["process"] == "group"].set_index(["engine_label", "tp", "parent_state", "method", "kind"])
    ok = ok[ok["process"] != "group"]
    if ok.empty:
        return _empty(Figure(figsize=(8, 3)), _why(NO_DATA, _rows(df, pattern)))
    every = _rows(df, pattern)
    fails = _failures(df)
    kinds = [k for k in MEMORY_KINDS if k in set(ok["kind"])]
    procs = sorted(ok["process"].unique(), key=lambda p: ({"parent": 0, "forkserver": 1}.get(p, 2), _natural(p)))
    pcolors = _process_colors(procs)
    data = ok.pivot_table(index=["engine_label", "tp", "parent_state", "method"], columns=["kind", "process"],
                          values="value")
    panels = [(e, tp, k) for e, tp in dict.fromkeys((e, tp) for e, tp, _, _ in data.index) for k in kinds]
    states_of, nbars = {}, 0
    for e, tp in dict.fromkeys((e, tp) for e, tp, _ in panels):
        sub = data.loc[(e, tp)]
        f = fails[(fails["engine_label"] == e) & (fails["tp"] == tp)]
        keys = list(sub.index) + [(s, m) for s, m in zip(f["parent_state"], f["method"]) if (s, m) not in sub.index]
        states = [s for s in df["parent_state"].drop_duplicates() if s in {k[0] for k in keys}]
        states_of[(e, tp)] = [(s, method_order([m for t, m in keys if t == s])) for s in states]
        nbars = max(nbars, len(keys))
    width = max(4.0, 0.36 * nbars + 1.4)  # inches per panel: room for a total over each bar
    cols = max(1, min(len(kinds), int(15 // width)))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(max(7.0, width * cols + 1.6), 3.9 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.remove()
    later = _ok(df, LATER_PSS).set_index(["engine_label", "tp", "parent_state", "method", "kind"])["value"]
    marked: set[str] = set()
    for ax, (engine, tp, kind) in zip(axes, panels):
        sub = data.loc[(engine, tp)]
        name = _with_executors(f"{engine}, TP={tp}", every[(every["engine_label"] == engine) & (every["tp"] == tp)])
        ax.set_title(f"{textwrap.fill(name, int(width * 72 / 5.6))}\n{MEMORY_KINDS[kind]}")
        groups = states_of[(engine, tp)]
        xs = _group_ticks(ax, groups)
        keys = [(s, m) for s, ms in groups for m in ms]
        bottom, drawn = np.zeros(len(keys)), np.zeros(len(keys), dtype=bool)
        for p in procs:
            if (kind, p) not in sub.columns:
                continue
            h = np.array([sub.at[k, (kind, p)] if k in sub.index else np.nan for k in keys], dtype=float)
            has = np.isfinite(h)  # a process without this kind's value: no bar of nothing
            if has.any():
                ax.bar(np.asarray(xs)[has], h[has], bottom=bottom[has], color=pcolors[p], width=0.8, label=p)
            bottom[has] += h[has]
            drawn |= has
        tops = []
        for x, k, total, seen in zip(xs, keys, bottom, drawn):
            if not seen:
                why = fails[(fails["engine_label"] == engine) & (fails["tp"] == tp) & (fails["parent_state"] == k[0])
                            & (fails["method"] == k[1])]["why"]
                here = every[(every["engine_label"] == engine) & (every["tp"] == tp)
                             & (every["parent_state"] == k[0]) & (every["method"] == k[1]) & (every["kind"] == kind)]
                _placeholder(ax, x, why.iloc[0] if len(why) else verdict.why_not(here) or verdict.NOT_RUN)
                continue
            g = group.loc[(engine, tp) + k + (kind,)] if (engine, tp) + k + (kind,) in group.index else None
            top = total
            if g is not None and pd.notna(g["ci_low"]) and pd.notna(g["ci_high"]):
                ax.errorbar([x], [total], yerr=[[max(total - g["ci_low"], 0)], [max(g["ci_high"] - total, 0)]],
                            fmt="none", ecolor="#222", elinewidth=0.8, capsize=2, zorder=4)
                top = max(total, g["ci_high"])
            if kind == "pss":  # the replica read again once it worked: after decode, after the parent's gc
                for dx, (when, (marker, color)) in zip((-0.2, 0.2), LATER_MARKERS.items()):  # side by side: both seen
                    v = later.get((engine, tp) + k + (f"pss_{when}",))
                    if v is not None and np.isfinite(v):
                        ax.plot([x + dx], [v], ls="", marker=marker, ms=7, mew=1.4, color=color, zorder=5,
                                gid=f"pss_{when}")
                        marked.add(when)
                        top = max(top, v)
            tops.append(top)
            ax.annotate(num(total), (x, top), xytext=(0, 5), textcoords="offset points", ha="center", va="bottom",
                        fontsize=6, rotation=90)  # clear of the whisker's cap
        _headroom(ax, np.array(tops + [0.0]) * 1.2)
        ax.set_ylabel("MiB at ready (stack = worker group)")
    handles = [Rectangle((0, 0), 1, 1, color=pcolors[p]) for p in procs]
    handles.append(Rectangle((0, 0), 1, 1, fill=False, hatch="///", ec="#c44"))
    labels = procs + ["fails / hangs"]
    for when in (w for w in LATER_MARKERS if w in marked):
        marker, color = LATER_MARKERS[when]
        handles.append(Line2D([], [], ls="", marker=marker, ms=7, mew=1.4, color=color))
        labels.append(f"group PSS {when.replace('_', ' ')}")
    fig.legend(handles, labels, loc="outside right center", title="process")
    return fig


# The group's PSS read again after decoding and after the parent's gc.collect(), drawn over its PSS
# bar at ready: together the range a replica's host memory moves in once it works
LATER_PSS = vocab.mem_re(vocab.GROUP, "pss_after_(?:decode|gc)")
LATER_MARKERS = {"after_decode": ("_", "#d62728"), "after_gc": ("x", "#111111")}


def _process_colors(procs: list[str]) -> dict[str, str]:
    """Parent grey, forkserver brown, ranks in purples (not the methods' colours), others after."""
    ranks = iter(["#54278f", "#9e9ac8", "#756bb1", "#bcbddc", "#3f007d", "#dadaeb", "#6a51a3", "#efedf5"])
    others = iter(["#1b9e77", "#66a61e", "#e6ab02", "#a6761d", "#666666"] * 4)
    fixed = {"parent": "#a0a0a0", "forkserver": "#8c6d31"}
    return {p: fixed.get(p) or (next(ranks, "#54278f") if re.fullmatch(r"rank\d+", p) else next(others))
            for p in procs}


def _natural(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


# 3 ------------------------------------------------------------------------------------------------
def chart_throughput(df: pd.DataFrame) -> Figure:
    """Steady-state tokens/s per method and TP size, medians with asv's 99% CI."""
    ok = _ok(df, vocab.TOKENS_RE)
    rates = _rows(df, vocab.TOKENS_RE)
    if ok.empty:
        return _empty(Figure(figsize=(8, 3)), _why(NO_DATA, rates))
    engines = sorted(ok["engine_label"].unique())
    batches = sorted(ok["batch"].dropna().unique())
    colors = method_colors(ok["method"].unique())
    most = max(len(set(zip(g["tp"], g["parent_state"]))) for _, g in ok.groupby("engine_label"))
    panel_w = max(5.0, 1.5 * most)  # inches: room for each setting's tick label
    fig, axes = _grid(len(engines), len(batches), w=panel_w, h=3.8)
    labelled: set[str] = set()  # every engine's methods in the legend, once each
    for r, engine in enumerate(engines):
        for c, batch in enumerate(batches):
            ax = axes[r, c]
            sub = ok[(ok["engine_label"] == engine) & (ok["batch"] == batch)]
            if sub.empty:  # e.g. an engine whose batch-16 rate was not measured: the record's note says why
                ax.set_title(f"{engine}, batch {batch}")
                _nothing(ax, _why(f"no tokens/s at batch {batch}", rates[(rates["engine_label"] == engine)
                                                                          & (rates["batch"] == batch)]))
                continue
            n = sub["n"].dropna()
            span = "?" if not len(n) else f"{n.min():g}" if n.min() == n.max() else f"{n.min():g}-{n.max():g}"
            ex = executors(sub)
            ax.set_title(f"{engine}, batch {batch}{chr(10) + ex if ex else ''}\n"
                         f"(whiskers: 99% CI of the median, n={span} samples)")
            combos = list(dict.fromkeys(zip(sub["tp"], sub["parent_state"])))
            methods = method_order(sub["method"])
            width = 0.8 / len(methods)
            top = sub["value"].max() * 1.6  # n is small: a CI can be far wider than the bars; cut here, marked
            clipped = []
            for i, m in enumerate(methods):
                rows = sub[sub["method"] == m].set_index(["tp", "parent_state"]).reindex(combos)
                xs = np.arange(len(combos)) + (i - (len(methods) - 1) / 2) * width
                lo = (rows["value"] - rows["ci_low"].clip(lower=0)).clip(lower=0)
                hi = (rows["ci_high"].clip(upper=top) - rows["value"]).clip(lower=0)
                has = rows["value"].notna().to_numpy()  # a setting this method was not measured in: no bar
                ax.bar(xs[has], rows["value"][has], width=width, color=colors[m], hatch=_hatch(m), edgecolor="white",
                       label=None if m in labelled else m)
                labelled.add(m)
                known = rows["ci_low"].notna() & rows["ci_high"].notna()
                ax.errorbar(xs[known.to_numpy()], rows["value"][known], yerr=[lo[known], hi[known]], fmt="none",
                            ecolor="#333", elinewidth=0.8, capsize=2)
                for x, v, k, h in zip(xs, rows["value"], rows["n"], rows["ci_high"]):
                    if pd.notna(v) and pd.notna(k) and not has_interval(int(k)):  # say why there is no whisker
                        ax.annotate(f"n={int(k)}: no interval", (x, v), xytext=(0, 2), textcoords="offset points",
                                    ha="center", va="bottom", fontsize=6.5, rotation=90)
                    elif pd.notna(h) and h > top:  # a whisker cut at the axis: an arrow and where it ends
                        ax.plot([x], [top], marker="^", ms=5, color="#333", clip_on=False, zorder=5)
                        clipped.append(f"{m} {num(h)}")
            chars = max(8, int(panel_w * 72 / max(len(combos), 1) / 5.6))  # 9 pt text: about 5.6 pt a character
            ax.set_xticks(range(len(combos)), [f"TP={tp}\n" + textwrap.fill(f"parent: {s}", chars) for tp, s in combos])
            ax.set_ylim(0, top)
            notes = ([f"▲ whisker cut at the axis, ends at: {', '.join(clipped)}"] if clipped else []) + \
                _unresolved(sub, combos, df.attrs.get("parity"), batch)
            if notes:
                ax.text(0.01, 0.99, "\n".join(notes), transform=ax.transAxes, va="top", ha="left", fontsize=7,
                        color="#a40", bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "#dca", "alpha": 0.95})
            ax.set_ylabel("output tokens/s (whole replica)")
    fig.legend(loc="outside right center", title="start method")
    return fig


FORK_OVERRIDE = vocab.join_method("fork", vocab.OVERRIDE)


def _unresolved(sub: pd.DataFrame, combos: list, parity_rows: pd.DataFrame | None = None,
                batch: float | None = None) -> list[str]:
    """The panel's rates that are not resolved at 99% from their fork of the same mode (fork-eager
    for spawn-eager; fork, or what ran as fork, for the rest), in each setting: one line saying so,
    so that no bar difference reads as a result; with decode parity's verdict across cold starts
    where `parity_rows` has the pair (asv's intervals of the medians cannot say "equal")."""
    pairs = []
    for tp, state in combos:
        here = sub[(sub["tp"] == tp) & (sub["parent_state"] == state)].set_index("method")
        fork = next((m for m in here.index if verdict.ran_as(m) == "fork" or m == FORK_OVERRIDE), None)
        ci = lambda m: (here.at[m, "ci_low"], here.at[m, "ci_high"])  # noqa: E731
        for m in here.index:
            twin = vocab.join_method("fork", vocab.split_method(m)[1] if "→" not in m else "")
            ref = twin if twin in here.index else fork
            if ref is not None and m != ref and vocab.base_method(m) != "fork" and not rates_differ(ci(m), ci(ref)):
                word = _parity_verdict(parity_rows, here, m, ref, tp, state, batch)
                pairs.append(f"{m} vs {ref}" + (f" ({word} across cold starts)" if word else ""))
    if not pairs:
        return []
    if len(pairs) > 3:
        return [f"≈ not resolved at 99%: {len(pairs)} pairs"]
    pairs = list(dict.fromkeys(pairs))
    # a pair a line: with parity's verdict one line can be wider than the panel
    return ["≈ not resolved at 99%: " + pairs[0]] if len(pairs) == 1 else ["≈ not resolved at 99%:", *pairs]


def _parity_verdict(parity_rows: pd.DataFrame | None, here: pd.DataFrame, m: str, ref: str, tp: int, state: str,
                    batch: float | None) -> str:
    """Decode parity's verdict for the pair (by the labels asked for) in this setting, or ''."""
    if parity_rows is None or not len(parity_rows) or batch is None:
        return ""
    a, r = (here.at[x, "asked"] if pd.notna(here.at[x, "asked"]) else x for x in (m, ref))
    p = parity_rows
    hit = p[(p["machine"] == here.at[m, "machine"]) & (p["engine"] == here.at[m, "engine"]) & (p["tp"] == int(tp))
            & (p["parent_state"] == state) & (p["batch"] == int(batch))
            & (((p["method"] == a) & (p["reference"] == r)) | ((p["method"] == r) & (p["reference"] == a)))]
    return str(hit["verdict"].iloc[0]) if len(hit) else ""


# 4 ------------------------------------------------------------------------------------------------
def chart_tradeoff(df: pd.DataFrame) -> Figure:
    """Extra restart time (the planner's: derive.RESTART) against extra memory per replica,
    relative to fork in the same setting."""
    pattern = f"{RESTART}|{vocab.mem_re(vocab.GROUP, '(pss|gpu)')}"
    ok = _ok(df, pattern)
    if ok.empty:
        return _empty(Figure(figsize=(8, 3)), _why(NO_DATA, _rows(df, pattern)))
    wide = ok.pivot_table(index=["engine_label", "parent_state", "tp", "method"], columns="metric", values="value")
    if "fork" not in wide.index.get_level_values("method"):
        return _empty(Figure(figsize=(8, 3)), "fork did not run successfully anywhere on this machine: "
                                                    "no reference for the trade-off map")
    resources = [(c, t) for c, t in ((vocab.mem(vocab.GROUP, "pss"), "host memory (PSS of the group)"),
                                     (vocab.mem(vocab.GROUP, vocab.GPU_KIND), "GPU memory (all ranks)")) if c in wide.columns]
    if not resources or RESTART not in wide.columns:
        return _empty(Figure(figsize=(8, 3)), _why("no time to ready and memory per replica of one configuration",
                                                   _rows(df, pattern)))
    fork = wide.xs("fork", level="method")
    rel = wide.sub(fork.reindex(wide.index.droplevel("method")).set_axis(wide.index), axis=0).dropna(how="all")
    same_gpu = ""  # a GPU panel whose every point sits on the reference is a sentence, not a panel
    gpu_col = vocab.mem(vocab.GROUP, vocab.GPU_KIND)
    if gpu_col in rel:
        gpu = rel[gpu_col].drop(index="fork", level="method", errors="ignore").dropna()
        if len(gpu) and (gpu.abs() < 0.5).all():
            same_gpu = (f"GPU memory: every method uses the same per replica as fork (within 0.5 MiB, "
                        f"{len(gpu)} setting{'s' * (len(gpu) != 1)})")
            resources = [r for r in resources if r[0] != gpu_col]
    states = list(dict.fromkeys(rel.index.get_level_values("parent_state")))
    markers = dict(zip(states, itertools.cycle("osD^vP")))
    colors = method_colors(rel.index.get_level_values("method").unique())
    multi = rel.index.get_level_values("engine_label").nunique() > 1
    several_tp = rel.index.get_level_values("tp").nunique() > 1
    fig, axes = _grid(1, len(resources), w=6.0, h=4.8)
    fig.set_figwidth(max(fig.get_figwidth(), 9.5))  # room for the title
    ci = ok.set_index(["engine_label", "parent_state", "tp", "method", "metric"])[["ci_low", "ci_high"]]

    def err(key: tuple, col: str) -> list[list[float]]:
        """Half-widths of the conservative 99% interval of (method - fork): [lo_a - hi_f, hi_a - lo_f]."""
        a, f = key + (col,), key[:3] + ("fork", col)
        if a not in ci.index or f not in ci.index or ci.loc[[a, f]].isna().any().any():
            return [[0.0], [0.0]]
        d = rel.at[key, col]
        lo, hi = ci.at[a, "ci_low"] - ci.at[f, "ci_high"], ci.at[a, "ci_high"] - ci.at[f, "ci_low"]
        return [[max(d - lo, 0.0)], [max(hi - d, 0.0)]]

    numbers: dict[str, int] = {}  # point label -> its number, the same in both panels
    for ax, (col, title) in zip(axes[0], resources):
        diffs = rel[col].drop(index="fork", level="method", errors="ignore").dropna()
        if col.endswith("gpu_mib") and len(diffs) and (diffs.abs() < 0.5).all():
            ax.set_axis_off()  # every point would sit on the reference: say so instead
            ax.text(0.5, 0.5, f"no GPU-memory difference:\nevery method uses the same GPU memory per replica\n"
                    f"as fork (within 0.5 MiB, {len(diffs)} settings)", transform=ax.transAxes, ha="center",
                    va="center", fontsize=10, color="#444")
            ax.set_title(f"extra restart time vs extra {title}")
            continue
        points = [(k, row) for k, row in rel.iterrows()
                  if k[3] != "fork" and pd.notna(row.get(col)) and pd.notna(row.get(RESTART))]
        if not points:  # only fork here, or the others lack a number: a reference alone is no map
            ax.set_title(f"extra restart time vs extra {title}")
            others = _rows(df, f"{vocab.TIME_TO_READY}|{re.escape(col)}")
            _nothing(ax, _why(f"no method besides fork has a time to ready and {title} in a setting where fork ran",
                              others[others["method"] != "fork"]))
            continue
        ax.axhline(0, color="#888", lw=0.8)
        ax.axvline(0, color="#888", lw=0.8)
        for (engine, state, tp, m), row in points:
            ax.scatter(row[col], row[RESTART], color=colors[m], marker=markers[state], s=45, zorder=3,
                       edgecolors="k" if "→" in m else "none")
            ax.errorbar([row[col]], [row[RESTART]], xerr=err((engine, state, tp, m), col),
                        yerr=err((engine, state, tp, m), RESTART), fmt="none", ecolor=colors[m],
                        alpha=0.5, elinewidth=0.8, capsize=2, zorder=2)
            if multi or several_tp:  # a number only where it tells points apart; the key is beside the legend
                what = f"TP{tp}" + (f" {engine}" if multi else "") + f" {m}, parent {state}"
                ax.annotate(str(numbers.setdefault(what, len(numbers) + 1)), (row[col], row[RESTART]),
                            xytext=(3, 2), textcoords="offset points", fontsize=6.5, color="#333")
        ax.scatter([0], [0], color="k", marker="*", s=120, zorder=4)
        ax.annotate("fork (reference)", (0, 0), xytext=(5, -10), textcoords="offset points", fontsize=8)
        ax.set_title(f"extra restart time vs extra {title}")
        ax.set_xlabel(f"extra MiB per replica vs fork ({title})")
        # the planner's restart where records have exec to ready, else time to ready: say which the points are
        restarts = ok[ok["metric"] == RESTART].set_index(["engine_label", "parent_state", "tp"])[derive.INCLUDES]
        drawn = restarts[restarts.index.isin([k[:3] for k, _ in points])]
        clock = " or ".join(sorted({_clock_text(c) for c in drawn.dropna()}))
        ax.set_ylabel(f"extra seconds a restart takes vs fork\n({clock})")
    handles = [Line2D([], [], color=colors[m], marker="o", ls="", label=m) for m in colors if m != "fork"]
    handles += [Line2D([], [], color="#555", marker=markers[s], ls="", label=f"parent: {s}") for s in states]
    # Numbered points with their key (labels beside clustered points would overlap).
    handles += [Line2D([], [], ls="", label=f"{n}: {what}") for what, n in numbers.items()]
    fig.legend(handles=handles, loc="outside right center", title="method / parent state", fontsize=7.5)
    if same_gpu:
        axes[0, 0].text(0.98, 0.03, same_gpu, transform=axes[0, 0].transAxes, ha="right", va="bottom", fontsize=8,
                        color="#444", bbox={"boxstyle": "round", "fc": "white", "ec": "#bbb"})
    return fig


def _clock_text(includes: str) -> str:
    """What a restart figure counts (derive's `includes`, or the planner's shorter form of it), as
    an axis or a title says it."""
    return ("teardown + exec to ready" if includes == RESTART_CLOCK else "from the server's start request"
            if includes.startswith(("server", "from the server")) else "from the start request")


# 5 ------------------------------------------------------------------------------------------------
def scenario(df: pd.DataFrame, engine: str) -> tuple[str, int, int] | None:
    """The configuration the amortisation chart shows for an engine: parent state `torch` if it
    ran, the largest TP and then batch with throughput measured, among methods whose time to ready
    was measured too (a curve needs both); None if no method has both."""
    ok = _ok(df, f"{vocab.TOKENS_RE}|{vocab.TIME_TO_READY}")
    ok = ok[ok["engine_label"] == engine]
    ready = ok[ok["metric"] == vocab.TIME_TO_READY].set_index(["parent_state", "tp", "method"]).index
    tput = ok[ok["metric"].str.fullmatch(vocab.TOKENS_RE)]
    tput = tput[tput.set_index(["parent_state", "tp", "method"]).index.isin(ready)]
    if tput.empty:
        return None
    states = list(tput["parent_state"].unique())
    state = "torch" if "torch" in states else states[0]
    tput = tput[tput["parent_state"] == state]
    tp = int(tput["tp"].max())
    return state, tp, int(tput[tput["tp"] == tp]["batch"].max())


def chart_amortisation(df: pd.DataFrame) -> Figure:
    """Does the faster start pay for a slower decode? Per engine and mode, the fastest starter F
    against its spawn twin (or the next fastest): the break-even decode gap (how much slower F may
    decode before its start-up saving is gone, `decide.break_even_gap`) against busy hours a day,
    one line per restarts a day, over the 99% interval of how much slower F decodes (decode parity
    across cold starts where `df.attrs["parity"]` has the pair, else asv's intervals). Where a line
    runs above the band F's saving holds at every point; inside or under it, no verdict."""
    pattern = f"{vocab.TOKENS_RE}|{vocab.TIME_TO_READY}"
    ok = _ok(df, f"{pattern}|{RESTART}")  # the restart the planner weighs (derive.RESTART)
    panels = []
    for engine in sorted(ok["engine_label"].unique()):
        chosen = scenario(df, engine)
        if chosen is None:
            continue
        state, tp, batch = chosen
        sub = ok[(ok["engine_label"] == engine) & (ok["parent_state"] == state) & (ok["tp"] == tp)]
        asked = dict(zip(sub["method"], sub[ASKED]))
        labels = set(asked.values())
        for mode in sorted({mode_of(a, labels) for a in labels}):
            mine = sub[sub["method"].map(lambda m: mode_of(asked[m], labels) == mode)]
            sides = {m: s for m, s in capacity_sides(mine, batch).items() if s.restart and s.rate}
            if len(sides) < 2:
                continue
            order = sorted(sides, key=lambda m: sides[m].restart.value)
            f = order[0]
            twin = vocab.join_method("spawn", vocab.split_method(asked[f])[1])
            o = next((m for m in order[1:] if asked[m] == twin), order[1])
            dec = decide.decode_of(sides[f], sides[o], df.attrs.get("parity"), batch, asked)
            panels.append((f"{engine}{f', {mode_text(mode)}' if mode else ''}, parent {state}, TP={tp}, batch {batch}",
                           sides[f], sides[o], dec, tp))
    if not panels:
        return _empty(Figure(figsize=(8, 3)), _why(f"{NO_DATA} (two methods with a time to ready and a decode rate in "
                                                   "one setting)", _rows(df, pattern)))
    fig, axes = _grid(1, len(panels), w=5.6, h=4.4)
    hours = np.logspace(np.log10(0.1), np.log10(24), 200)
    for ax, (where, f, o, dec, tp) in zip(axes[0], panels):
        saving = o.restart.value - f.restart.value
        floor = []
        for i, r in enumerate(decide.RESTARTS):
            gap = [100 * g if (g := decide.break_even_gap(saving, r, h)) else np.nan for h in hours]
            ax.plot(hours, gap, color=RESTART_COLORS[i], lw=1.6, label=f"{r:g} start{'s' * (r != 1)}/day")
            floor.append(np.nanmin(gap) if np.isfinite(gap).any() else np.nan)
        bottom = np.nanmin(floor) / 3 if np.isfinite(floor).any() else 1e-3
        if dec is not None and dec.bounded:
            slow_lo, slow_hi = max(-dec.hi, 0.0), max(-dec.lo, 0.0)
            if slow_hi > 0:
                ax.axhspan(max(100 * slow_lo, bottom), 100 * slow_hi, color="#d62728", alpha=0.15, lw=0,
                           label=f"99% interval: {f.method} up to {pct(slow_hi, signed=False)} slower")
                ax.axhline(100 * slow_hi, color="#d62728", lw=1, ls="--")
            held = decide.hours_max(difference(o.restart, f.restart), dec, decide.Deployment(24, 24, tp))
            if held is not None:
                ax.axvline(held, color="#444", lw=1, ls=":",
                           label=f"{f.method} holds up to {decide.hours_text(held)} a day at 24 starts/day")
        note = (f"decode {dec.text(f.method, o.method)}" if dec is not None else "decode rates not both measured")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
            axis.set_minor_locator(NullLocator())
        ax.set_xticks([0.1, 0.25, 0.5, 1, 2, 4, 8, 24])
        ax.set_xlim(0.1, 24)
        ax.set_ylim(bottom=bottom)
        ax.set(title=textwrap.fill(f"{f.method} {f.verb} {num(saving)} s sooner than {o.method} "
                                   f"({_clock_text(f.clock)})", 75)
               + "\n" + textwrap.fill(where, 75),
               xlabel="busy hours a day (decode load at the faster rate)\n" + textwrap.fill(note, 80),
               ylabel=f"break-even: {f.method} decoding this % slower")
        ax.legend(fontsize=7, loc="lower left")
    return fig


RESTART_COLORS = ["#9ecae1", "#4292c6", "#08519c", "#08306b"]  # restarts a day, light to dark: few to many


# 6 ------------------------------------------------------------------------------------------------
def compatibility(df: pd.DataFrame) -> pd.DataFrame:
    """Method asked x parent state x engine (version) -> works / fails / hangs / n/a / not run,
    with the error (verdict.compatibility); one cell per configuration, TP sizes folded. `df`: a
    tidy table or its view (derive.view)."""
    return _compatibility(view(df))


def _compatibility(df: pd.DataFrame) -> pd.DataFrame:
    """`compatibility` of the charts' view: its rows are the methods asked for; a forced one says what ran."""
    st = derive.as_asked(df[df["metric"] == vocab.STATUS])
    return verdict.compatibility(st.assign(engine_label=_engine_label(st)))


def chart_compatibility(df: pd.DataFrame) -> Figure:
    """What ran from which parent state, and whether it worked: only rows and columns with something
    run; what was not run (or cannot exist here) is summarised once, under the matrix."""
    every = _compatibility(df)
    if every.empty:
        return _empty(Figure(figsize=(8, 3)), "no start-up status recorded")
    ran = ~every["verdict"].isin([verdict.NOT_RUN, verdict.NA])
    if not ran.any():
        return _empty(Figure(figsize=(8, 3)), _why("nothing was run here", every.assign(
            status="skipped", value=np.nan)))
    keep_rows = set(zip(every.loc[ran, "engine"], every.loc[ran, "method"]))
    keep_cols = set(every.loc[ran, "parent_state"])
    inside = [(e, m) in keep_rows and c in keep_cols for e, m, c in zip(every["engine"], every["method"],
                                                                        every["parent_state"])]
    cells = every[pd.Series(inside, index=every.index) & ran]
    left = every[~ran]
    columns = [c for c in dict.fromkeys(every["parent_state"]) if c in keep_cols]
    rows = [(e, m) for e in sorted(cells["engine"].unique())
            for m in method_order(cells[cells["engine"] == e]["method"])]
    notes: dict[str, int] = {}
    fig = Figure(figsize=(max(7.5, 2.1 * len(columns) + 3), 0.45 * len(rows) + 1.8), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlim(0, len(columns))
    ax.set_ylim(len(rows), 0)
    ax.grid(False)
    for c in cells.itertuples():
        y, x = rows.index((c.engine, c.method)), columns.index(c.parent_state)
        label = c.text
        if isinstance(c.error, str) and c.error.strip():
            key = cause(c.error, 150)  # the exception line, not "Traceback (most recent call last):"
            label += f" [{notes.setdefault(key, len(notes) + 1)}]"
        ax.add_patch(Rectangle((x + 0.02, y + 0.05), 0.96, 0.9, color=STATUS_COLORS[c.verdict]))
        ax.text(x + 0.5, y + 0.5, label, ha="center", va="center", fontsize=8)
    ax.set_xticks(np.arange(len(columns)) + 0.5, [f"parent: {c}" for c in columns])
    ax.xaxis.tick_top()
    ax.set_yticks(np.arange(len(rows)) + 0.5, [f"{e} · {m}" for e, m in rows])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(length=0)
    lines = [f"[{i}] " + textwrap.shorten(e, 150) for e, i in notes.items()]
    for word in (verdict.NOT_RUN, verdict.NA):
        here = left[left["verdict"] == word]
        if len(here):
            states = len(every["parent_state"].unique())
            where = "; ".join(f"{e} · {m}: " + ("every parent state" if len(g) == states else
                                                ", ".join(g["parent_state"]))
                              for (e, m), g in here.groupby(["engine", "method"], sort=False))
            lines.append(textwrap.shorten(f"{word} ({len(here)}): {where}", 400))
    lines.append("works = every cold start reached ready; fails = an error; hangs = timed out; "
                 "n/a = cannot exist here (e.g. a device state without a GPU); blank = not run")
    chars = int(fig.get_figwidth() * 72 / 4.9)  # 8 pt text: about 4.9 pt a character; the notes fit the figure
    fig.supxlabel("\n".join(textwrap.fill(ln, chars) for ln in lines), x=0.01, ha="left", fontsize=8)
    return fig


CHARTS: dict[str, tuple[str, Callable[[pd.DataFrame], Figure]]] = {
    "startup_phases": ("1. Start-up phase breakdown (slowest rank, median of cold starts)", chart_startup),
    "memory": ("2. Memory per process and worker group at ready", chart_memory),
    "throughput": ("3. Steady-state decode throughput", chart_throughput),
    "tradeoff": ("4. Trade-off map: extra restart time vs extra memory per replica, relative to fork", chart_tradeoff),
    "amortisation": ("5. Break-even: when does a faster start pay for a slower decode?", chart_amortisation),
    "compatibility": ("6. Compatibility: does each start method work from each parent state?", chart_compatibility),
}


def view(df: pd.DataFrame) -> pd.DataFrame:
    """What the charts draw, from a tidy table or its view (derive.view: the method that ran,
    restart time, no interval below n=3): the NVML check shown as a parent state of its own."""
    return label_nvml(derive.view(df))


def provenance(machine: pd.DataFrame) -> str:
    """One line for under a chart: machine, engines with versions and commits (the rest is in the
    report's "Machine and versions" table)."""
    m = machine.iloc[0]
    engines = ", ".join(f"{e.engine} {e.engine_version or ''}".strip() + f" @ {str(e.commit)[:8]}"
                        for e in machine.itertuples())
    return f"{m['machine']} · {engines} · full versions: the machine's \"Machine and versions\" table"


def draw(df: pd.DataFrame, machine: pd.DataFrame, out_dir: Path, prefix: str = "",
         parity_rows: pd.DataFrame | None = None) -> dict[str, dict[str, Path]]:
    """Draw the six charts of one machine's rows (a tidy table or its view) into out_dir as PNG and
    SVG; name -> paths. `parity_rows` (parity.table): chart 5's decode differences across cold starts."""
    out: dict[str, dict[str, Path]] = {}
    df = view(df)
    df.attrs["parity"] = parity_rows
    with matplotlib.rc_context(STYLE):
        for name, (title, make) in CHARTS.items():
            fig = make(df)
            # provenance (machine, commits, versions) is under the chart on the report page: `provenance`
            fig.suptitle(f"{title}\n{machine['machine'].iloc[0]}", fontsize=12, fontweight="bold")
            longest = max(len(title), len(str(machine["machine"].iloc[0])))
            fig.set_figwidth(max(fig.get_figwidth(), 0.105 * longest + 0.6))  # the title fits the figure
            out[name] = {}
            for ext in ("png", "svg"):
                path = out_dir / f"{prefix}{name}.{ext}"
                fig.savefig(path, format=ext, dpi=110, metadata=_metadata(ext))
                out[name][ext] = path
    return out


def _metadata(ext: str) -> dict:
    """No creation dates in the files, so re-drawing the same results gives the same bytes."""
    return {"Date": None} if ext == "svg" else {"Software": None}
