"""The words for what happened to a configuration, and the verdicts built from them, in one place.

Every part of the analysis (summary, charts, plan, fleet view, report) says "works", "fails",
"hangs", "n/a" or "not run" through this module, so one status reads the same everywhere:

    works    every cold start reached ready
    fails    an error (the first failure is kept)
    hangs    a start did not reach ready before the timeout
    n/a      cannot exist here (a CUDA parent state on a CPU machine, rank 1 at TP=1, TP>1 for
             an engine without tensor parallelism)
    not run  could exist, but was not measured (left out of a profile, not reached in a lease)
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from forkspawn import vocabulary as vocab

from .fmt import cause
from .load import method_order as _base_order

WORKS, FAILS, HANGS, NA, NOT_RUN, MIXED = "works", "fails", "hangs", "n/a", "not run", "mixed"
FAILED = ("error", "timeout")  # statuses of a configuration that ran and did not reach ready
CUDA_STATES = ("device-queried", "device-initialized")  # the parent touched CUDA before the workers
# load.py's reason for a point asv never measured, or a record's note on a metric it could not
# measure ("tokens/s at batch 16 not measured: ..."); any other reason for a skip says it cannot exist
_NOT_MEASURED = re.compile(r"\bnot measured\b")
FORCED = "forced"  # the engine replaced the asked method


def word(status: Any, error: Any = None) -> str:
    """The status of a configuration (or of one metric) as a word."""
    if status == "ok":
        return WORKS
    if status == "timeout":
        return HANGS
    if status == "skipped":
        return NOT_RUN if not isinstance(error, str) or _NOT_MEASURED.search(error) else NA
    return FAILS


def why_not(rows: pd.DataFrame, limit: int = 2) -> str:
    """Why the table's rows for a panel or a table hold no value to show: each reason once, as its
    word and cause ("not run: tokens/s at batch 16 not measured: ...", "fails: RuntimeError: ..."),
    the most frequent first; "nothing recorded" where there are no rows at all, "" where every row
    has its value (what is missing is a combination of them, which the caller names)."""
    missing = rows[(rows["status"] != "ok") | rows["value"].isna()]
    if missing.empty:
        return "" if len(rows) else "nothing recorded"
    reasons = pd.Series([f"{word(s, e)}: {cause(e, 200)}" if s != "ok" else "no value recorded"
                         for s, e in zip(missing["status"], missing["error"])])
    counts = reasons.value_counts(sort=False).sort_values(ascending=False, kind="stable")
    more = len(counts) - limit
    return "; ".join(counts.index[:limit]) + (f"; and {more} other reason{'s' * (more > 1)}" if more > 0 else "")


def failed(status: Any) -> bool:
    """The configuration ran and did not reach ready (an error or a timeout)."""
    return status in FAILED


def failure(status: Any, why: str) -> str:
    """'fails: <cause>' or 'hangs: <cause>'."""
    return f"{word(status)}: {why}"


def method_label(method: str, used: Any = None, status: Any = "ok") -> str:
    """The method that ran, named so: "fork→spawn (forced)" where the engine replaced the asked
    method, the asked method otherwise (a labelled override, "fork-override", ran what it says)."""
    if status != "ok" or not isinstance(used, str) or used in ("", "not-applicable"):
        return method
    if used in (method, vocab.base_method(method)) or "→" in method:
        return method
    return f"{method}→{used} ({FORCED})"


def ran_as(label: str) -> str:
    """The method that ran, from a `method_label`: "fork→spawn (forced)" -> "spawn"."""
    return label.split("→", 1)[1].split(" ")[0] if "→" in label else label


def method_order(methods: Any) -> list[str]:
    """load.method_order over method labels: a forced label right after the method it asked for."""
    labels = list(dict.fromkeys(m for m in methods if isinstance(m, str)))
    asked = _base_order(m.split("→")[0] for m in labels)
    return sorted(labels, key=lambda m: (asked.index(m.split("→")[0]), "→" in m, m))


def compatibility(st: pd.DataFrame) -> pd.DataFrame:
    """Status rows (with `engine_label`) -> one cell per engine, method and parent state: the word
    (TP sizes folded into "mixed" when they disagree), its text and the error to show."""
    st = st.assign(word=[word(s, e) for s, e in zip(st["status"], st["error"])])
    cells = []
    for (engine, method, column), g in st.groupby(["engine_label", "method", "parent_state"], sort=False):
        real = g[~g["word"].isin([NA, NOT_RUN])]  # a configuration skipped in one environment may run in another
        if real.empty:
            verdict = text = NOT_RUN if (g["word"] == NOT_RUN).any() else NA
        elif real["word"].nunique() == 1:
            verdict = text = real["word"].iloc[0]
        else:
            verdict, text = MIXED, ", ".join(f"TP{tp} {w}" for tp, w in sorted(zip(real["tp"], real["word"])))
        used = {u for u in g["method_used"].dropna() if u not in (method, vocab.base_method(method),
                                                                  "not-applicable")}
        if used and verdict == WORKS:
            text += f" (ran {'/'.join(sorted(used))}: {FORCED})"
        errors = g[g["word"].isin([FAILS, HANGS])]["error"].dropna()
        skipped = g["error"].dropna()
        error = errors.iloc[0] if len(errors) else (skipped.iloc[0] if verdict in (NA, NOT_RUN) and len(skipped)
                                                    else None)
        cells.append({"engine": engine, "method": method, "parent_state": column, "verdict": verdict, "text": text,
                      "error": error})
    return pd.DataFrame(cells, columns=["engine", "method", "parent_state", "verdict", "text", "error"])


def fork_caveat(machine: str, engine: str, df: pd.DataFrame) -> str:
    """When fork becomes wrong, from this machine's own records of `engine` where they show it."""
    st = df[(df["metric"] == vocab.STATUS) & (df["machine"] == machine) & (df["engine"] == engine)
            & (df["method"] == "fork") & df["parent_state"].isin(CUDA_STATES)]
    bad = st[st["status"].map(failed)]
    forced = st[(st["status"] == "ok") & st["method_used"].map(lambda u: isinstance(u, str) and u != "fork").astype(bool)]
    also = ""
    if len(forced):
        states = ", ".join(dict.fromkeys(forced["parent_state"]))
        also = f"; from parent {states} the engine forced {'/'.join(dict.fromkeys(forced['method_used']))}"
    if len(bad):
        states = ", ".join(dict.fromkeys(bad["parent_state"]))
        short = cause(bad["error"].iloc[0]).split(". ")[0]  # the full line is in the fork row
        return f"fork is wrong once the parent touched CUDA: it fails from parent {states} here ({short}){also}"
    if len(forced):
        return f"fork is wrong once the parent touched CUDA: {also[2:]} instead of forking"
    if len(st) and (st["status"] == "ok").all():
        return "fork worked from every CUDA parent state measured here; other engines or versions may not"
    return ("fork is wrong once the parent queries CUDA or creates a CUDA context (not measured on this "
            "machine)")
