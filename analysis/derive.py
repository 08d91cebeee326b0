"""The view of the tidy table that the summary, charts, plan and report share, so that they all
draw the same numbers (a report derives it once: `view`):

- no interval below n=3: asv computes one from two samples, but it is the range stretched by a
  wide factor (its lower bound often negative), not an estimate to conclude anything from;
- time to ready as a restart pays it: Xinference's `time_to_ready_s` runs from the model's launch
  request, but restarting it means starting its server too; its phases run from the server's
  start request, so `phase.ready` is the whole restart;
- a restart as a user pays it (`RESTART`, a metric of the view only): teardown + exec to ready,
  from the exec of the process restarted (record/3), else time to ready from the start request,
  and the `includes` column saying which clock it is;
- the method that ran: "fork→spawn (forced)" where the engine replaced the asked method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forkspawn import vocabulary as vocab
from forkspawn.stats import samples_for

from .fmt import interval, num
from .load import ASKED
from .verdict import method_label, method_order

MIN_N = 3  # fewer samples than this: no interval
MAX_RUNS = 200  # beyond this a "cold starts needed" estimate says "more"
# An engine whose time to ready starts at this phase (not at the start request) started a server first.
LAUNCH_PHASE = "launch_requested"
SERVER_PHASE = "server_ready"
INCLUDES = "includes"  # the column that says what a time to ready (or a restart) includes
# The restart a user pays (`with_restart`): the stop of the old group and the new one's start from
# the exec of the process restarted; where exec to ready was not recorded, time to ready stands in.
RESTART = "restart_s"
RESTART_CLOCK = "from exec to ready, teardown included"
START_CLOCK = "from the start request to ready; exec to ready not recorded before record/3"
CONFIG = ["machine", "commit", "env", "engine", "method", "parent_state", "cuda_check", "tp"]


def has_interval(n: Any) -> bool:
    return isinstance(n, (int, np.integer)) and n >= MIN_N


def interval_text(lo: Any, hi: Any, n: Any, signed: bool = False) -> str:
    """'[lo, hi]', 'n=2: no interval' below MIN_N samples, '' if an end is unknown."""
    if n is not None and not pd.isna(n) and not has_interval(int(n)):
        return f"n={int(n)}: no interval"
    return interval(lo, hi, signed)


def no_small_n_intervals(df: pd.DataFrame) -> pd.DataFrame:
    """ci_low / ci_high emptied where n < MIN_N (n stays)."""
    small = df["n"].notna() & (df["n"].fillna(0) < MIN_N)
    return df.assign(ci_low=df["ci_low"].where(~small), ci_high=df["ci_high"].where(~small))


def with_restart_time(df: pd.DataFrame) -> pd.DataFrame:
    """time_to_ready_s as a restart pays it, with the `includes` column saying what it covers.

    Where a configuration's phases include LAUNCH_PHASE (the server was started first and time to
    ready counted from the launch request), its time-to-ready row takes the values of its
    `phase.ready` (seconds since the server's start request)."""
    df = df.copy()
    df[INCLUDES] = np.where(df["metric"] == vocab.TIME_TO_READY, "start request to ready", None)
    ok = df[df["status"] == "ok"]
    keys = pd.Series(["|".join(k) for k in ok[CONFIG].astype(str).itertuples(index=False)], index=ok.index,
                     dtype=object)
    at = {}
    for m in (LAUNCH_PHASE, SERVER_PHASE, "ready"):
        rows = ok[ok["metric"] == vocab.phase(m)]
        at[m] = rows.set_index(keys[rows.index])
    for i in ok.index[ok["metric"] == vocab.TIME_TO_READY]:
        k = keys[i]
        if k not in at[LAUNCH_PHASE].index or k not in at["ready"].index:
            continue
        ready = at["ready"].loc[k]
        for c in ("value", "ci_low", "ci_high", "q25", "q75", "n"):
            df.at[i, c] = ready[c]
        server = at[SERVER_PHASE]["value"].get(k)
        df.at[i, INCLUDES] = (f"server start request to ready: server up at {_s(server)}, model launched at "
                              f"{_s(at[LAUNCH_PHASE].at[k, 'value'])}, {_s(ok.at[i, 'value'])} from launch to ready")
    return df


def with_restart(df: pd.DataFrame) -> pd.DataFrame:
    """The view's RESTART rows, one per ok time to ready: teardown_s + exec_to_ready_s where the
    configuration has exec to ready (the interval the sum of the two 99% intervals, n the fewer;
    asv keeps medians, not the cold starts' sums), else time to ready as a restart pays it
    (`with_restart_time`); `includes` names the clock."""
    ok = df[df["status"] == "ok"]
    keys = pd.Series(["|".join(k) for k in ok[CONFIG].astype(str).itertuples(index=False)], index=ok.index,
                     dtype=object)
    at = {}
    for m in (vocab.EXEC_TO_READY, vocab.TEARDOWN):
        rows = ok[(ok["metric"] == m) & ok["value"].notna()]
        at[m] = rows.set_index(keys[rows.index])
    new = df.loc[ok.index[ok["metric"] == vocab.TIME_TO_READY]].copy()
    if new.empty:
        return df
    new["metric"], new["benchmark"] = RESTART, None
    new[["q25", "q75"]] = np.nan
    for i in new.index:
        k = keys[i]
        if k in at[vocab.EXEC_TO_READY].index:
            parts = [_one(at[vocab.EXEC_TO_READY].loc[k])] + (
                [_one(at[vocab.TEARDOWN].loc[k])] if k in at[vocab.TEARDOWN].index else [])
            new.at[i, "value"] = sum(float(p["value"]) for p in parts)
            for c in ("ci_low", "ci_high"):
                new.at[i, c] = sum(float(p[c]) for p in parts) if all(pd.notna(p[c]) for p in parts) else np.nan
            ns = [int(p["n"]) for p in parts if pd.notna(p["n"])]
            new.at[i, "n"] = min(ns) if ns else pd.NA
            new.at[i, INCLUDES] = RESTART_CLOCK if len(parts) == 2 else "from exec to ready; teardown not measured"
        elif not str(new.at[i, INCLUDES]).startswith("server"):
            new.at[i, INCLUDES] = START_CLOCK
    # indexes of their own: a view's other rows keep the tidy table's (report.py's history finds them so)
    new.index = pd.RangeIndex(int(df.index.max()) + 1, int(df.index.max()) + 1 + len(new))
    new.attrs = {}  # concat compares attrs, and a DataFrame in them (chart 5's parity) has no truth value
    out = pd.concat([df, new])
    out.attrs = df.attrs
    return out


def ran_as_labels(df: pd.DataFrame) -> pd.DataFrame:
    """`method` replaced by the method that ran ("fork→spawn (forced)"), `asked` keeps the asked one."""
    labels = [method_label(m, u, "ok") if isinstance(m, str) else m for m, u in zip(df["method"], df["method_used"])]
    return df.assign(**{ASKED: df["method"], "method": labels})


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """The shared view of a tidy table: restart time, no interval below n=3, the method that ran."""
    return ran_as_labels(no_small_n_intervals(with_restart(with_restart_time(df))))


def view(df: pd.DataFrame) -> pd.DataFrame:
    """The shared view of a tidy table (`prepare`), or `df` itself if it is one (it has `asked`).

    The one rule of what the summary, charts, planner and screen take: a tidy table or its view. A
    report derives the view once and passes it; a table from `load` (the CLI, a notebook) is
    derived where it arrives. `load.latest` picks the same rows from either."""
    return df if ASKED in df else prepare(df)


def as_asked(df: pd.DataFrame) -> pd.DataFrame:
    """A view with `method` the method asked for again (what ran stays in `method_used`): for what
    is organised by the methods asked, as the summary's rows and the compatibility matrix are."""
    return df.assign(method=df[ASKED])


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float | None
    hi: float | None
    n: int | None

    def text(self, signed: bool = False) -> str:
        """'value [lo, hi]'; a value that cannot be negative (signed=False) never gets a negative bound."""
        lo = self.lo if signed or self.lo is None else max(self.lo, 0.0)
        return f"{num(self.value, signed)} {interval_text(lo, self.hi, self.n, signed)}".strip()

    @property
    def resolved(self) -> bool:
        """The 99% interval excludes 0 (no interval below n=3)."""
        return (self.lo is not None and self.hi is not None and (self.n is None or has_interval(self.n))
                and (self.lo > 0 or self.hi < 0))


def difference(a: Estimate, b: Estimate) -> Estimate:
    """a - b with the conservative interval [lo_a - hi_b, hi_a - lo_b] (module docstring)."""
    known = None not in (a.lo, a.hi, b.lo, b.hi)
    return Estimate(a.value - b.value, a.lo - b.hi if known else None, a.hi - b.lo if known else None,
                    min(a.n or 0, b.n or 0) or None)


def runs_needed(d: Estimate) -> int | None:
    """Cold starts per method to resolve `d`, if its interval shrinks as 1/sqrt(n); None: more
    than MAX_RUNS, or no estimate (no difference at all, or an unbounded interval)."""
    if d.lo is None or d.hi is None or not d.n or d.value == 0:
        return None
    m = samples_for(d.value - d.lo if d.value > 0 else d.hi - d.value, d.n, abs(d.value))
    return max(m, d.n + 1) if m and m <= MAX_RUNS else None


def executors(rows: pd.DataFrame) -> str:
    """Which executor the rows' methods ran with: 'executor uni' where all share one, else
    'executors: uni (fork, spawn); mp (fork-mp, spawn-mp)'; '' where none is recorded (an engine
    without executors)."""
    known = rows[rows["executor"].notna()] if "executor" in rows else rows.iloc[:0]
    by: dict[str, list[str]] = {}
    pairs = set(zip(known["method"], known["executor"].astype(str)))
    for method in method_order(m for m, _ in pairs):
        for executor in sorted(x for m, x in pairs if m == method):
            by.setdefault(executor, []).append(method)
    if len(by) <= 1:
        return f"executor {next(iter(by))}" if by else ""
    return "executors: " + "; ".join(f"{x} ({', '.join(ms)})" for x, ms in by.items())


def _one(x: Any) -> Any:
    """A row of a lookup that may have matched several (the same configuration read twice): the last."""
    return x.iloc[-1] if isinstance(x, pd.DataFrame) else x


def _s(v: Any) -> str:
    return f"{v:.1f} s" if isinstance(v, (int, float)) and np.isfinite(v) else "?"
