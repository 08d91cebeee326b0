"""The view of the tidy table that the summary, charts, plan and report share, so that they all
draw the same numbers (a report derives it once: `view`):

- no interval below n=3: asv computes one from two samples, but it is the range stretched by a
  wide factor (its lower bound often negative), not an estimate to conclude anything from;
- time to ready as a restart pays it: Xinference's `time_to_ready_s` runs from the model's launch
  request, but restarting it means starting its server too; its phases run from the server's
  start request, so `phase.ready` is the whole restart;
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
from .verdict import method_label

MIN_N = 3  # fewer samples than this: no interval
MAX_RUNS = 200  # beyond this a "cold starts needed" estimate says "more"
# An engine whose time to ready starts at this phase (not at the start request) started a server first.
LAUNCH_PHASE = "launch_requested"
SERVER_PHASE = "server_ready"
INCLUDES = "includes"  # the column that says what a time to ready includes
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


def ran_as_labels(df: pd.DataFrame) -> pd.DataFrame:
    """`method` replaced by the method that ran ("fork→spawn (forced)"), `asked` keeps the asked one."""
    labels = [method_label(m, u, "ok") if isinstance(m, str) else m for m, u in zip(df["method"], df["method_used"])]
    return df.assign(**{ASKED: df["method"], "method": labels})


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """The shared view of a tidy table: restart time, no interval below n=3, the method that ran."""
    return ran_as_labels(no_small_n_intervals(with_restart_time(df)))


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


def _s(v: Any) -> str:
    return f"{v:.1f} s" if isinstance(v, (int, float)) and np.isfinite(v) else "?"
