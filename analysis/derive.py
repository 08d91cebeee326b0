"""The views of the tidy table that the summary, charts, plan and report share, so that they all
draw the same numbers:

- no interval below n=3: asv computes one from two samples, but it is the range stretched by a
  wide factor (its lower bound often negative), not an estimate to conclude anything from;
- time to ready as a restart pays it: Xinference's `time_to_ready_s` runs from the model's launch
  request, but restarting it means starting its server too; its phases run from the server's
  start request, so `phase.ready` is the whole restart;
- the method that ran: "fork→spawn (forced)" where the engine replaced the asked method.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from forkspawn import vocabulary as vocab

from .fmt import interval
from .verdict import method_label

MIN_N = 3  # fewer samples than this: no interval
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
    return df.assign(asked=df["method"], method=labels)


def prepare(df: pd.DataFrame, relabel: bool = True) -> pd.DataFrame:
    """The shared view: restart time, no interval below n=3, and (if `relabel`) the method that ran."""
    out = no_small_n_intervals(with_restart_time(df))
    return ran_as_labels(out) if relabel else out


def _s(v: Any) -> str:
    return f"{v:.1f} s" if isinstance(v, (int, float)) and np.isfinite(v) else "?"
