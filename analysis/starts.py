"""What the records say of their starts beyond asv's numbers: the first start of a configuration
(its warm-ups, kept out of every sample) and the notes on how an engine ran (its executor, and
whether vLLM was imported from bytecode).

A warm-up is the uncounted first start of a configuration (`Record.warmups`, record/3): what a node
pays once (an empty compile cache, a cold page cache, a JIT) is reported here, beside the counted
cold starts' median, never as their spread. Its longest silences in the engine's log (`log_gaps`)
and the files it wrote into the compile and JIT caches (`cache_writes`) say where the extra time
went.
"""

from __future__ import annotations

import re
import statistics
from html import escape
from typing import Any

import pandas as pd

from .fmt import num
from .load import CONFIG_KEY, latest
from .verdict import method_order

WARMUP_COLUMNS = ["machine", "engine", "tp", "parent_state", "method", "warmup", "status", "time_to_ready_s",
                  "counted_time_to_ready_s", "exec_to_ready_s", "counted_exec_to_ready_s", "n", "log_gaps",
                  "cache_writes", "counted_cache_writes"]
NOTE_PREFIXES = ("vLLM executor:", "bytecode:")  # the notes that say how an engine ran
# vLLM's log prefix ("(EngineCore pid=1) INFO 12-07 15:02:22 [core.py:87] "): the message is what tells
_LOG_PREFIX = re.compile(r"^(?:\([^)]*\)\s*)?(?:[A-Z]+\s+\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+\[[^\]]*\]\s*)?")


def _records(records: pd.DataFrame) -> pd.DataFrame:
    """The newest record of each configuration (as the tables show it), ok or not."""
    return latest(records, CONFIG_KEY) if len(records) else records


def warmups(records: pd.DataFrame) -> pd.DataFrame:
    """One row per warm-up of every configuration that has one (WARMUP_COLUMNS): its time to ready
    and exec to ready beside the counted cold starts' medians, its log's longest silences and its
    cache writes beside what the counted starts wrote (their median per cache)."""
    rows = []
    for r in _records(records).itertuples(index=False):
        rec = r.record
        counted = [c for c in rec.cold_starts or [] if c.get("status") == "ok"]
        for i, w in enumerate(rec.warmups or [], 1):
            rows.append({"machine": r.machine, "engine": r.engine, "tp": r.tp, "parent_state": r.parent_state,
                         "method": r.method, "warmup": i, "status": w.get("status"),
                         "time_to_ready_s": w.get("time_to_ready_s"), "counted_time_to_ready_s": rec.time_to_ready_s,
                         "exec_to_ready_s": w.get("exec_to_ready_s"), "counted_exec_to_ready_s": rec.exec_to_ready_s,
                         "n": len(counted), "log_gaps": w.get("log_gaps") or [],
                         "cache_writes": w.get("cache_writes") or {},
                         "counted_cache_writes": _median_writes(c.get("cache_writes") or {} for c in counted)})
    out = pd.DataFrame(rows, columns=WARMUP_COLUMNS)
    if out.empty:
        return out
    order = {m: i for i, m in enumerate(method_order(out["method"]))}
    return out.sort_values(["machine", "engine", "tp", "parent_state", "method", "warmup"],
                           key=lambda c: c.map(order) if c.name == "method" else c, kind="stable").reset_index(drop=True)


def _median_writes(writes: Any) -> dict[str, dict[str, float]]:
    """Per cache, the median over the counted cold starts of the files and MiB each wrote (0 where
    a start wrote nothing there)."""
    writes = list(writes)
    caches = dict.fromkeys(c for w in writes for c in w)
    return {c: {k: statistics.median(w.get(c, {}).get(k, 0) for w in writes) for k in ("files", "mib")}
            for c in caches}


def gap_text(gap: list[Any]) -> str:
    """'11.0 s between "Graph capturing finished in 9 secs" and "init engine ... took 22.1 s"'."""
    seconds, before, after = gap
    return f"{num(seconds)} s between \u201c{_message(before)}\u201d and \u201c{_message(after)}\u201d"


def _message(line: str, limit: int = 90) -> str:
    text = _LOG_PREFIX.sub("", str(line)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def writes_text(writes: dict[str, dict[str, float]]) -> str:
    """'vllm 2 files (1.4 MiB), triton 31 files (12 MiB)', or 'nothing'."""
    shown = [(c, w) for c, w in writes.items() if w.get("files")]
    return ", ".join(f"{c} {num(w['files'])} file{'s' * (w['files'] != 1)} ({num(w.get('mib', 0))} MiB)"
                     for c, w in shown) or "nothing"


def warmups_html(rows: pd.DataFrame) -> str:
    """The warm-ups as a table, every string escaped ('' where no record has one)."""
    if rows.empty:
        return ""
    head = "".join(f"<th>{escape(h)}</th>" for h in (
        "setting", "method", "warm-up", "time to ready, s: the warm-up's (counted median, n; warm-up minus it)",
        "exec to ready, s: the warm-up's (counted median, n; warm-up minus it)",
        "the longest silences of its log", "it wrote into the caches (counted starts: median)"))
    body = []
    for r in rows.itertuples(index=False):
        gaps = "".join(f"<li>{escape(gap_text(g))}</li>" for g in r.log_gaps)
        body.append(
            f"<tr><td>{escape(f'{r.engine} · TP={r.tp} · parent {r.parent_state}')}</td><td>{escape(r.method)}</td>"
            f"<td class=\"num\">{r.warmup}{'' if r.status == 'ok' else escape(f' ({r.status})')}</td>"
            f"<td class=\"num\">{escape(_beside(r.time_to_ready_s, r.counted_time_to_ready_s, r.n))}</td>"
            f"<td class=\"num\">{escape(_beside(r.exec_to_ready_s, r.counted_exec_to_ready_s, r.n))}</td>"
            f"<td>{f'<ul>{gaps}</ul>' if gaps else 'not recorded'}</td>"
            f"<td>{escape(writes_text(r.cache_writes))} (counted: {escape(writes_text(r.counted_cache_writes))})</td>"
            f"</tr>")
    return (f"<p class=\"note\">The uncounted first start(s) of a configuration, made before its counted cold starts "
            f"and kept out of every median, interval and verdict: what a node pays once (an empty compile cache, a "
            f"cold page cache, a JIT). Each beside the median of the counted cold starts (n of them), with the "
            f"longest silences in the engine's log before ready and the files it wrote into the vLLM, inductor, "
            f"Triton and CUDA-JIT caches: where its extra time went.</p><div class=\"scroll\"><table><thead><tr>{head}"
            f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _beside(first: Any, counted: Any, n: int) -> str:
    """'22.4 (11.6, n=10; +10.8)': a warm-up's figure beside the counted median and the difference."""
    if not isinstance(first, (int, float)):
        return "not recorded"
    if not isinstance(counted, (int, float)):
        return num(first)
    return f"{num(first)} ({num(counted)}, n={n}; {num(first - counted, signed=True)})"


def engine_notes(records: pd.DataFrame) -> pd.DataFrame:
    """Per machine and engine, each note on how it ran (NOTE_PREFIXES: the executor vLLM resolved,
    whether vLLM came from bytecode) with the methods whose records carry it."""
    rows = []
    for r in _records(records).itertuples(index=False):
        for note in r.record.notes or []:
            if note.startswith(NOTE_PREFIXES):
                rows.append({"machine": r.machine, "engine": r.engine, "note": note, "method": r.method})
    if not rows:
        return pd.DataFrame(columns=["machine", "engine", "note", "methods"])
    df = pd.DataFrame(rows)
    return (df.groupby(["machine", "engine", "note"], sort=False)["method"]
            .agg(lambda m: ", ".join(method_order(m))).rename("methods").reset_index())


def notes_html(notes: pd.DataFrame, legacy: list[str] = ()) -> str:
    """The notes as a list per engine; `legacy`: engines whose records predate them (what that means)."""
    parts = []
    for engine, g in notes.groupby("engine", sort=False):
        items = "".join(f"<li>{escape(n)} <span class=\"skipped\">({escape(m)})</span></li>"
                        for n, m in zip(g["note"], g["methods"]))
        parts.append(f"<p>{escape(engine)}:</p><ul>{items}</ul>")
    for engine in legacy:
        parts.append(f"<p>{escape(engine)}: records from before record/3 name neither the executor nor whether vLLM "
                     f"was imported from bytecode; the vLLM adapters then passed the <code>mp</code> executor at every "
                     f"TP size (<code>ray</code> for the ray method).</p>")
    return "".join(parts)
