"""Capacity planning: what each start method costs a node, from measured configurations.

For one engine, parent state and TP size measured on a machine, and a node to plan for:
replicas per node (bounded by GPUs, CPU cores, host RAM and GPU memory), the headroom left,
the device-seconds a day lost to start-up, and a recommendation with its reason.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forkspawn import vocabulary as vocab

from .fmt import cause
from .load import CONFIG_KEY, BadInput, latest, method_order

PLAN_COLUMNS = [
    "method", "status", "method_used", "replicas", "limited_by", "host_mib_per_replica", "ram_headroom_gib",
    "gpu_mib_per_rank", "gpu_headroom_gib", "time_to_ready_s", "startup_gpu_s_per_day", "tokens_per_s",
    "decode_gpu_s_per_day", "cost_gpu_s_per_day", "recommended", "reason",
]
BUSY_HOURS = 1.0  # a replica's daily decode load: this many hours at the fastest measured rate (as chart 5)


@dataclass(frozen=True)
class Node:
    gpus: int  # 0 for a CPU-only node
    gpu_mem_gib: float | None  # per GPU
    ram_gib: float
    cpus: int

    @classmethod
    def of_machine(cls, machine: pd.Series) -> "Node":
        """The node a `Results.machines` row describes (the machine that was measured)."""
        mib = machine.get("gpu_memory_mib")
        return cls(gpus=int(machine.get("gpu_count") or 0), gpu_mem_gib=mib / 1024 if _num(mib) else None,
                   ram_gib=float(machine["ram_gib"]), cpus=int(machine["num_cpu"]))


@dataclass
class Plan:
    scenario: str  # one line: what was planned for, from which measurements
    table: pd.DataFrame  # PLAN_COLUMNS, one row per method

    @property
    def recommended(self) -> str | None:
        best = self.table[self.table["recommended"]]
        return best["method"].iloc[0] if len(best) else None


def break_even_tokens(ttr_a: float, rate_a: float, ttr_b: float, rate_b: float) -> float | None:
    """Output tokens N at which a cold start of a then N tokens takes as long as with b
    (ttr_a + N/rate_a = ttr_b + N/rate_b); None if the lines never cross at N > 0."""
    slower_decode = 1 / rate_a - 1 / rate_b
    if slower_decode == 0:
        return None
    n = (ttr_b - ttr_a) / slower_decode
    return n if n > 0 else None


def break_even_restarts(ttr_a: float, rate_a: float, ttr_b: float, rate_b: float,
                        tokens_per_day: float) -> float | None:
    """Restarts a day R at which R cold starts plus `tokens_per_day` cost a as much as b.
    R*ttr + T/rate crosses where T/R is the tokens break-even: R = T/N."""
    n = break_even_tokens(ttr_a, rate_a, ttr_b, rate_b)
    return tokens_per_day / n if n else None


def rates_differ(ci_a: tuple, ci_b: tuple) -> bool:
    """Two rates differ at 99%: the conservative interval of their difference, from their 99%
    intervals (low, high), excludes 0. A break-even drawn from rates that do not is noise."""
    if not all(_num(x) and not math.isnan(x) for x in (*ci_a, *ci_b)):
        return False  # an interval not known at both ends resolves nothing
    return _below(ci_a, ci_b) or _below(ci_b, ci_a)


def choose(df: pd.DataFrame, column: str, wanted: Any, prefer: Any = None) -> Any:
    """`wanted` if it is among the column's values; the preferred or only value if not given."""
    present = sorted(df[column].dropna().unique().tolist(), key=str)
    if wanted is not None:
        if wanted not in present:
            raise BadInput(f"no measurements with {column} {wanted!r}; measured: {', '.join(map(str, present))}")
        return wanted
    if prefer in present:
        return prefer
    if len(present) == 1:
        return present[0]
    raise BadInput(f"several {column} values measured ({', '.join(map(str, present))}): choose one")


def plan(df: pd.DataFrame, node: Node, tp: int, restarts_per_day: float, *, machine: str | None = None,
         engine: str | None = None, parent_state: str | None = None, cuda_check: str | None = None,
         batch: int | None = None, busy_hours: float = BUSY_HOURS) -> Plan:
    """Per start method: replicas per node, headroom, start-up loss and a recommendation.

    `busy_hours`: the replica's daily decode load, as hours at the fastest measured rate; a method
    whose rate is below the fastest (at 99%) needs longer for it, which counts in the replica-day's
    cost. `restarts_per_day` counts worker-group (re)starts and scale-ups a day on the node. Each
    start holds `tp` devices (GPUs; cores on a CPU-only node) for its time-to-ready. Host memory
    per replica is the whole group's PSS (parent, forkserver and ranks: the real footprint);
    GPU memory is the largest rank's. The parent state defaults to `torch` (a server process
    that imported torch), the batch to the largest measured.
    """
    # one measurement per method, whichever asv environment read it (asv's pass re-run elsewhere
    # names another environment): the environment is no axis of the plan
    df = latest(df, key=[c for c in CONFIG_KEY if c != "env"])
    machine = choose(df, "machine", machine)
    df = df[df["machine"] == machine]
    # among engines with a measurement: a machine where our workload was never run has only skips of it
    engine = choose(df[df["status"] != "skipped"], "engine", engine, prefer="torch-tp")
    df = df[df["engine"] == engine]
    from .summary import _fork_caveat  # the summary's wording: one vocabulary

    caveat = _fork_caveat({"machine": machine, "engine": engine}, df)
    parent_state = choose(df[df["status"] != "skipped"], "parent_state", parent_state, prefer="torch")
    df = df[df["parent_state"] == parent_state]
    cuda_check = choose(df, "cuda_check", cuda_check, prefer="runtime")
    df = df[df["cuda_check"] == cuda_check]
    tp = choose(df, "tp", tp)
    df = df[df["tp"] == tp]
    ok = df[df["status"] == "ok"]
    if batch is None and ok["batch"].notna().any():
        batch = int(ok["batch"].max())
    values = ok.pivot_table(index="method", columns="metric", values="value", aggfunc="last")
    tokens = ok[ok["metric"] == vocab.tokens_per_s(batch)].set_index("method")
    status = df[df["metric"] == vocab.STATUS].set_index("method")
    gpu_cols = [c for c in values.columns if re.fullmatch(vocab.mem_re(r"rank\d+", vocab.GPU_KIND), c)]

    rows = []
    for method in method_order(status.index):
        v = values.loc[method] if method in values.index else pd.Series(dtype=float)
        host = v.get(vocab.mem(vocab.GROUP, "pss"))
        gpu = v.reindex(gpu_cols).max() if gpu_cols else None
        ttr = v.get(vocab.TIME_TO_READY)
        limits = {
            "GPUs": node.gpus // tp if node.gpus else None,
            "CPU cores": node.cpus // tp,
            "host RAM": math.floor(node.ram_gib * 1024 / host) if _num(host) and host > 0 else None,
            "GPU memory": 0 if node.gpus and node.gpu_mem_gib and _num(gpu) and gpu > node.gpu_mem_gib * 1024
            else None,  # a rank fits a GPU or not
        }
        limits = {k: n for k, n in limits.items() if n is not None}
        replicas = min(limits.values())
        rows.append({
            "method": method, "status": status.at[method, "status"], "method_used": status.at[method, "method_used"],
            "error": status.at[method, "error"], "replicas": replicas,
            "limited_by": " and ".join(k for k, n in limits.items() if n == replicas),
            "host_mib_per_replica": host,
            "ram_headroom_gib": node.ram_gib - replicas * host / 1024 if _num(host) else None,
            "gpu_mib_per_rank": gpu if _num(gpu) else None,
            "gpu_headroom_gib": node.gpu_mem_gib - gpu / 1024 if _num(gpu) and node.gpu_mem_gib else None,
            "time_to_ready_s": ttr,
            "startup_gpu_s_per_day": restarts_per_day * ttr * tp if _num(ttr) else None,
            "tokens_per_s": tokens["value"].get(method),
            "tokens_ci": (tokens["ci_low"].get(method), tokens["ci_high"].get(method)),
        })
    table = pd.DataFrame(rows)
    _decode_cost(table, tp, busy_hours)
    device = "GPU" if node.gpus else "CPU core"
    _recommend(table, "GPU-s" if node.gpus else "core-s", caveat)
    scenario = (f"{engine} on {machine} measurements, parent state {parent_state}, TP={tp}"
                f"{f', batch {batch}' if batch else ''}; node: {node.gpus} GPUs"
                f"{f' x {node.gpu_mem_gib:.0f} GiB' if node.gpu_mem_gib else ''}, {node.ram_gib:g} GiB RAM, "
                f"{node.cpus} CPU cores; {restarts_per_day:g} starts/day; *_gpu_s_per_day columns in {device}-seconds "
                f"a day (device-seconds held: TP x seconds); decode load {busy_hours:g} h/day at the fastest rate")
    return Plan(scenario=scenario, table=table[PLAN_COLUMNS])


def _decode_cost(t: pd.DataFrame, tp: int, busy_hours: float = BUSY_HOURS) -> None:
    """Device-seconds a day a replica loses to a slower decode than the fastest method's: the day's
    load (BUSY_HOURS at the fastest rate) takes longer. Counted only where the two rates differ at
    99% (conservative interval of the difference excludes 0): a difference inside it costs 0."""
    ok = t[(t["status"] == "ok") & t["tokens_per_s"].map(_num)]
    t["decode_gpu_s_per_day"] = None
    if len(ok):
        best = ok.loc[ok["tokens_per_s"].astype(float).idxmax()]
        load = busy_hours * 3600 * best["tokens_per_s"]
        for i, r in ok.iterrows():
            slower = _below(r["tokens_ci"], best["tokens_ci"])
            t.at[i, "decode_gpu_s_per_day"] = (load / r["tokens_per_s"] - busy_hours * 3600) * tp if slower else 0.0
    t["cost_gpu_s_per_day"] = [a + (b or 0) if _num(a) else None
                               for a, b in zip(t["startup_gpu_s_per_day"], t["decode_gpu_s_per_day"])]


def _recommend(t: pd.DataFrame, unit: str = "device-s", caveat: str = "") -> None:
    """Most replicas, then the least cost of a replica-day (start-ups plus a resolved slower
    decode), then most RAM headroom, among methods that work; every other method gets the reason
    it lost. A decode rate significantly below another method's (disjoint 99% CIs) is flagged; a
    labelled override is said to be one; the recommendation carries when fork becomes wrong."""
    t["recommended"] = False
    t["reason"] = ""
    if "cost_gpu_s_per_day" not in t:
        t["cost_gpu_s_per_day"] = t["startup_gpu_s_per_day"]
    fits = t[(t["status"] == "ok") & (t["replicas"] > 0)]
    best = None
    if len(fits):
        ranked = fits.assign(loss=fits["cost_gpu_s_per_day"].astype(float).fillna(math.inf),
                             room=fits["ram_headroom_gib"].fillna(-math.inf))
        best = ranked.sort_values(["replicas", "loss", "room"], ascending=[False, True, False], kind="stable").iloc[0]
        t.loc[best.name, "recommended"] = True
    for i, r in t.iterrows():
        if r["status"] != "ok":
            what = {"skipped": "not applicable here", "timeout": "hangs"}.get(r["status"], "fails")
            reason = f"{what}: {cause(r['error']) if isinstance(r['error'], str) else 'no error text'}"
        elif r["replicas"] == 0:
            reason = f"does not fit: {r['limited_by']}"
        elif i == best.name:
            others = fits.drop(index=i)
            reason = f"fits {_replicas(r['replicas'])} (limited by {r['limited_by']})"
            if len(others):
                runner = others.assign(c=others["cost_gpu_s_per_day"].astype(float)).sort_values(
                    ["replicas", "c"], ascending=[False, True]).iloc[0]
                reason += (f"; loses {r['startup_gpu_s_per_day']:.0f} {unit}/day to start-up, a replica-day costs "
                           f"{runner['cost_gpu_s_per_day'] - r['cost_gpu_s_per_day']:.0f} less than {runner['method']} "
                           f"({unit}/day)" if runner["replicas"] == r["replicas"]
                           else f", {_replicas(runner['replicas'])} with {runner['method']}")
            if r["method"].endswith("-override"):
                reason += (f"; {r['method']} is a non-default override (the engine would run "
                           f"{r['method'].removesuffix('-override')} otherwise): opt in deliberately")
            if (r["method_used"] or r["method"]) in ("fork", "fork-override") or r["method"].startswith("fork"):
                reason += f"; {caveat}" if caveat else ""
        elif r["replicas"] < best["replicas"]:
            reason = (f"fits {_replicas(r['replicas'])}, {best['replicas']} with {best['method']} "
                      f"(limited by {r['limited_by']})")
        else:
            reason = (f"a replica-day costs {r['cost_gpu_s_per_day'] - best['cost_gpu_s_per_day']:.0f} {unit} more "
                      f"than with {best['method']} (start-up {r['startup_gpu_s_per_day']:.0f} {unit}"
                      f"{', slower decode ' + format(r['decode_gpu_s_per_day'], '.0f') + ' ' + unit if r['decode_gpu_s_per_day'] else ''})")
        if r["status"] == "ok" and r["method_used"] not in (None, r["method"]) and isinstance(r["method_used"], str):
            reason += f"; ran as {r['method_used']}"
        slower = [o["method"] for _, o in fits.iterrows() if _below(r["tokens_ci"], o["tokens_ci"])]
        if r["status"] == "ok" and slower:
            reason += f"; decodes slower than {', '.join(slower)} (99% CIs disjoint)"
        t.at[i, "reason"] = reason


def _replicas(n: int) -> str:
    return f"{n} replica{'' if n == 1 else 's'}"


def _below(a: tuple, b: tuple) -> bool:
    return all(_num(x) for x in (a[1], b[0])) and a[1] < b[0]


def _first_line(text: Any) -> str:
    return str(text).strip().splitlines()[0][:200] if isinstance(text, str) and text.strip() else "no error text"


def _num(x: Any) -> bool:
    """A finite number, numpy's included (a machine row's GPU memory is a numpy integer)."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)) and math.isfinite(x)
