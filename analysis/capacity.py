"""Capacity planning: what each start method costs a node, from measured configurations.

For one engine, parent state and TP size measured on a machine, and a node to plan for:
replicas per node (bounded by GPUs, CPU cores, host RAM and GPU memory), the headroom left,
the device-seconds a day lost to start-up, and a recommendation with its reason.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forkspawn import vocabulary as vocab

from . import verdict
from .derive import INCLUDES, interval_text, prepare
from .fmt import cause, num
from .load import CONFIG_KEY, BadInput, latest
from .verdict import method_order

PLAN_COLUMNS = [
    "method", "status", "method_used", "replicas", "limited_by", "host_mib_per_replica", "ram_headroom_gib",
    "gpu_mib_measured", "gpu_fixed_mib", "kv_cache_mib", "kv_cache_tokens", "gpu_headroom_gib", "time_to_ready_s",
    "startup_gpu_s_per_day", "tokens_per_s", "decode_gpu_s_per_day", "cost_gpu_s_per_day", "node_gpu_h_per_day",
    "fleet_gpu_h_per_day", "recommended", "reason",
]
BUSY_HOURS = 1.0  # a replica's daily decode load: this many hours at the fastest measured rate (as chart 5)
RESTARTS_PER_DAY = 24  # the report's plans and the summary's break-even assume an hourly restart
GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default share of a GPU it reserves (fixed part + KV cache)
# processes whose GPU memory is not a worker's: aggregates, and the parent (counted on its own)
_NOT_WORKERS = (vocab.GROUP, vocab.RAY, "parent")


@dataclass(frozen=True)
class GpuNeed:
    """One replica's memory on its fullest GPU: a fixed part plus a reservation.

    measured: the largest GPU process's NVML figure (a rank; Xinference's `engine-core`).
    kv: the KV-cache reservation inside it (vLLM's "Available KV cache memory", sized from
        gpu_memory_utilization: it shrinks to what a smaller GPU leaves); None if not recorded.
    parent: the parent's own CUDA context (a device-initialized parent), on the same GPU.
    fixed = measured - kv + parent: weights, activations, CUDA graphs, CUDA contexts.
    """
    measured: float
    kv: float | None = None
    kv_tokens: float | None = None
    parent: float = 0.0

    @property
    def fixed(self) -> float:
        return self.measured - (self.kv or 0.0) + self.parent

    def on(self, gpu_mib: float, utilization: float = GPU_MEMORY_UTILIZATION) -> tuple[float | None, float | None]:
        """(KV cache MiB, KV tokens) on a GPU of `gpu_mib`: the engine's share (utilization) less
        the engine's fixed part; (None, None) without a recorded reservation; <= 0: does not fit."""
        if not self.kv:
            return None, None
        kv = utilization * gpu_mib - (self.fixed - self.parent)
        return kv, kv * self.kv_tokens / self.kv if self.kv_tokens else None

    def fits(self, gpu_mib: float, utilization: float = GPU_MEMORY_UTILIZATION) -> bool:
        kv, _ = self.on(gpu_mib, utilization)
        if kv is None:
            return self.fixed <= gpu_mib
        return kv > 0 and self.fixed + kv <= gpu_mib

    def describe(self, gpu_mib: float, utilization: float = GPU_MEMORY_UTILIZATION) -> str:
        """Which part is which, and what the KV cache gets on this GPU."""
        parts = f"fixed {num(self.fixed)} MiB (weights, activations, CUDA graphs, CUDA context"
        parts += f"; the parent's context {num(self.parent)})" if self.parent else ")"
        kv, tokens = self.on(gpu_mib, utilization)
        if kv is None:
            return f"GPU: {parts}; no KV-cache reservation recorded: the whole measured {num(self.measured)} MiB counts as fixed (an upper bound if the engine reserves a cache)"
        rate = f"{self.kv_tokens / self.kv:.1f} tokens/MiB" if self.kv_tokens else "tokens not recorded"
        if kv <= 0:
            return (f"GPU: {parts} + KV cache: nothing left for it at gpu_memory_utilization={utilization:g} "
                    f"of {num(gpu_mib)} MiB")
        how = "shrunk to" if kv < self.kv else "grown to"
        return (f"GPU: {parts} + KV cache {how} {num(kv)} MiB at gpu_memory_utilization={utilization:g}"
                f"{f' = {num(tokens)} tokens' if tokens else ''} ({rate}; measured {num(self.kv)} MiB)")


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


def break_even_decode_gap(saving_s_per_day: float, busy_hours: float, tp: int = 1) -> float | None:
    """The decode-rate gap g (a fraction: the rate is (1 - g) x the other's) at which decoding
    slower costs as many device-seconds a day as a start-up saving of `saving_s_per_day`.

    Decoding the day's load (busy_hours at the faster rate) at (1 - g) x that rate takes
    busy_hours x 3600 x g / (1 - g) longer on `tp` devices; equal to the saving at
    g = x / (1 + x), x = saving / (busy_hours x 3600 x tp). None without a decode load or saving."""
    if busy_hours <= 0 or saving_s_per_day <= 0:
        return None
    x = saving_s_per_day / (busy_hours * 3600 * tp)
    return x / (1 + x)


def gpu_need(values: pd.Series, engine_metrics: Any = None) -> GpuNeed | None:
    """A configuration's GpuNeed from its metric medians (`values`: metric -> value) and its
    record's engine sizes (JSON text from load's `engine_metrics` column)."""
    workers = [v for m, v in values.items() if _num(v)
               and (p := vocab.parse(m)).get("family") == "mem" and p.get("kind") == vocab.GPU_KIND
               and p.get("process") not in _NOT_WORKERS]
    if not workers:
        return None
    sizes = json.loads(engine_metrics) if isinstance(engine_metrics, str) else {}
    parent = values.get(vocab.mem("parent", vocab.GPU_KIND))
    return GpuNeed(measured=max(workers), kv=sizes.get("kv_cache_mib"), kv_tokens=sizes.get("kv_cache_tokens"),
                   parent=float(parent) if _num(parent) and parent > 0 else 0.0)


def plan(df: pd.DataFrame, node: Node, tp: int, restarts_per_day: float, *, machine: str | None = None,
         engine: str | None = None, parent_state: str | None = None, cuda_check: str | None = None,
         batch: int | None = None, busy_hours: float = BUSY_HOURS, nodes: int = 1,
         gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION) -> Plan:
    """Per start method (named by the method that ran): replicas per node, headroom, start-up
    loss, the cost per replica, node and fleet, and a recommendation.

    `busy_hours`: the replica's daily decode load, as hours at the fastest measured rate; a method
    whose rate is below the fastest (at 99%) needs longer for it, which counts in the replica-day's
    cost. `restarts_per_day` counts worker-group (re)starts and scale-ups a day per replica. Each
    start holds `tp` devices (GPUs; cores on a CPU-only node) for its time to ready (as a restart
    pays it: Xinference's includes its server's start). Host memory per replica is the whole
    group's PSS (parent, forkserver and ranks: the real footprint); GPU memory is a GpuNeed (a
    fixed part plus the KV cache, which the engine sizes from `gpu_memory_utilization`). The
    parent state defaults to `torch` (a server process that imported torch), the batch to the
    largest measured; `nodes` scales the node's cost to a fleet.
    """
    # one measurement per method, whichever asv environment read it (asv's pass re-run elsewhere
    # names another environment): the environment is no axis of the plan
    df = prepare(latest(df, key=[c for c in CONFIG_KEY if c != "env"]))
    machine = choose(df, "machine", machine)
    df = df[df["machine"] == machine]
    # among engines with a measurement: a machine where our workload was never run has only skips of it
    engine = choose(df[df["status"] != "skipped"], "engine", engine, prefer="torch-tp")
    df = df[df["engine"] == engine]
    caveat = verdict.fork_caveat(machine, engine, df.assign(method=df["asked"]))
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
    ttrs = ok[ok["metric"] == vocab.TIME_TO_READY].set_index("method")
    status = df[df["metric"] == vocab.STATUS].set_index("method")
    if status.empty:  # every method's start-up status is missing: nothing to plan with
        raise BadInput(f"{engine} on {machine}, parent state {parent_state}, TP={tp}: no start-up status recorded "
                       f"({verdict.why_not(df[df['metric'] == vocab.STATUS])})")
    sizes = status["engine_metrics"] if "engine_metrics" in status else pd.Series(dtype=object)
    gpu_mib = node.gpu_mem_gib * 1024 if node.gpus and node.gpu_mem_gib else None

    rows = []
    for method in method_order(status.index):
        v = values.loc[method] if method in values.index else pd.Series(dtype=float)
        host = v.get(vocab.mem(vocab.GROUP, "pss"))
        need = gpu_need(v, sizes.get(method))
        kv, kv_tokens = need.on(gpu_mib, gpu_memory_utilization) if need and gpu_mib else (None, None)
        ttr = v.get(vocab.TIME_TO_READY)
        works = status.at[method, "status"] == "ok"
        limits = {
            "GPUs": node.gpus // tp if node.gpus else None,
            "CPU cores": node.cpus // tp,
            "host RAM": math.floor(node.ram_gib * 1024 / host) if _num(host) and host > 0 else None,
            # one rank a GPU: its fixed part (and a KV cache) fits or not
            "GPU memory": 0 if need and gpu_mib and not need.fits(gpu_mib, gpu_memory_utilization) else None,
        }
        limits = {k: n for k, n in limits.items() if n is not None}
        replicas = min(limits.values()) if works else None
        used_gpu = (need.fixed + max(kv or 0, 0)) if need else None
        rows.append({
            "method": method, "status": status.at[method, "status"], "method_used": status.at[method, "method_used"],
            "error": status.at[method, "error"], "replicas": replicas,
            "limited_by": " and ".join(k for k, n in limits.items() if n == replicas) if works else "",
            "host_mib_per_replica": host,
            "ram_headroom_gib": node.ram_gib - replicas * host / 1024 if works and _num(host) else None,
            "gpu_mib_measured": need.measured if need else None,
            "gpu_fixed_mib": need.fixed if need else None,
            "kv_cache_mib": kv, "kv_cache_tokens": kv_tokens,
            "gpu_headroom_gib": (gpu_mib - used_gpu) / 1024 if need and gpu_mib else None,
            "gpu": need.describe(gpu_mib, gpu_memory_utilization) if need and gpu_mib else "",
            "time_to_ready_s": ttr,
            "ttr_ci": (ttrs["ci_low"].get(method), ttrs["ci_high"].get(method)),
            "ttr_includes": ttrs[INCLUDES].get(method) if INCLUDES in ttrs else None,
            "startup_gpu_s_per_day": restarts_per_day * ttr * tp if _num(ttr) else None,
            "tokens_per_s": tokens["value"].get(method),
            "tokens_ci": (tokens["ci_low"].get(method), tokens["ci_high"].get(method)),
        })
    table = pd.DataFrame(rows)
    _decode_cost(table, tp, busy_hours)
    table["node_gpu_h_per_day"] = [c * r / 3600 if _num(c) and _num(r) else None
                                   for c, r in zip(table["cost_gpu_s_per_day"], table["replicas"])]
    table["fleet_gpu_h_per_day"] = [c * nodes if _num(c) else None for c in table["node_gpu_h_per_day"]]
    device = "GPU" if node.gpus else "CPU core"
    _recommend(table, "GPU-s" if node.gpus else "core-s", caveat, restarts_per_day, busy_hours, tp)
    scenario = (f"{engine} on {machine} measurements, parent state {parent_state}, TP={tp}"
                f"{f', batch {batch}' if batch else ''}; node: {node.gpus} GPUs"
                f"{f' x {node.gpu_mem_gib:.0f} GiB' if node.gpu_mem_gib else ''}, {node.ram_gib:g} GiB RAM, "
                f"{node.cpus} CPU cores; fleet: {nodes} node{'s' * (nodes != 1)}; {restarts_per_day:g} starts/day "
                f"a replica; *_gpu_s_per_day columns in {device}-seconds a day per replica (devices held: TP x "
                f"seconds), *_gpu_h_per_day in {device}-hours a day per node and fleet; decode load {busy_hours:g} "
                f"h/day at the fastest rate; GPU memory = a fixed part (measured GPU memory less the KV cache, "
                f"plus the parent's CUDA context) + the KV cache at gpu_memory_utilization={gpu_memory_utilization:g}")
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


def _recommend(t: pd.DataFrame, unit: str = "device-s", caveat: str = "", restarts_per_day: float = 0,
               busy_hours: float = BUSY_HOURS, tp: int = 1) -> None:
    """Most replicas, then the least cost of a replica-day (start-ups plus a resolved slower
    decode), then most RAM headroom, among methods that work; every other method gets the reason
    it lost. No recommendation rests on a start-up difference inside its 99% interval
    ("unresolved"); where the decode rates are unresolved, the reason gives the break-even gap.
    A labelled override is said to be one; the recommendation carries when fork becomes wrong."""
    t["recommended"] = False
    t["reason"] = ""
    if "cost_gpu_s_per_day" not in t:
        t["cost_gpu_s_per_day"] = t["startup_gpu_s_per_day"]
    for c in ("ttr_ci", "tokens_ci"):
        if c not in t:
            t[c] = [(None, None)] * len(t)
    fits = t[(t["status"] == "ok") & (t["replicas"].fillna(0) > 0)]
    best = runner = None
    if len(fits):
        ranked = fits.assign(loss=fits["cost_gpu_s_per_day"].astype(float).fillna(math.inf),
                             room=fits["ram_headroom_gib"].astype(float).fillna(-math.inf))
        ranked = ranked.sort_values(["replicas", "loss", "room"], ascending=[False, True, False], kind="stable")
        best = ranked.iloc[0]
        runner = ranked.iloc[1] if len(ranked) > 1 and ranked.iloc[1]["replicas"] == best["replicas"] else None
    # the same replicas: the start-up decides, so it must be resolved (or a resolved decode cost differ)
    unresolved = (runner is not None and not rates_differ(best["ttr_ci"], runner["ttr_ci"])
                  and not (best["decode_gpu_s_per_day"] or runner["decode_gpu_s_per_day"]))
    if best is not None and not unresolved:
        t.loc[best.name, "recommended"] = True
    for i, r in t.iterrows():
        if r["status"] != "ok":
            reason = f"{verdict.word(r['status'], r['error'])}: {cause(r['error'])}"
        elif r["replicas"] == 0:
            reason = f"does not fit: {r['limited_by']}"
        elif i == best.name:
            reason = f"fits {_replicas(r['replicas'])} (limited by {r['limited_by']})"
            if unresolved:
                reason = (f"unresolved: {r['method']} vs {runner['method']} start-up differs by "
                          f"{num(r['time_to_ready_s'] - runner['time_to_ready_s'], signed=True)} s, inside its 99% "
                          f"interval: no recommendation; {reason}")
            elif runner is not None:
                reason += (f"; loses {r['startup_gpu_s_per_day']:.0f} {unit}/day to start-up, a replica-day costs "
                           f"{runner['cost_gpu_s_per_day'] - r['cost_gpu_s_per_day']:.0f} less than {runner['method']} "
                           f"({unit}/day)")
                reason += _decode_break_even(r, runner, unit, restarts_per_day, busy_hours, tp)
            elif len(fits) > 1:
                other = fits.drop(index=i).sort_values("replicas", ascending=False).iloc[0]
                reason += f", {_replicas(other['replicas'])} with {other['method']}"
            if r["method"].endswith("-override"):
                reason += (f"; {r['method']} is a non-default override (the engine would run "
                           f"{r['method'].removesuffix('-override')} otherwise): opt in deliberately")
            if verdict.ran_as(r["method"]).startswith("fork"):
                reason += f"; {caveat}" if caveat else ""
        elif r["replicas"] < best["replicas"]:
            reason = (f"fits {_replicas(r['replicas'])}, {int(best['replicas'])} with {best['method']} "
                      f"(limited by {r['limited_by']})")
        else:
            reason = (f"a replica-day costs {r['cost_gpu_s_per_day'] - best['cost_gpu_s_per_day']:.0f} {unit} more "
                      f"than with {best['method']} (start-up {r['startup_gpu_s_per_day']:.0f} {unit}"
                      f"{', slower decode ' + format(r['decode_gpu_s_per_day'], '.0f') + ' ' + unit if r['decode_gpu_s_per_day'] else ''})")
            if unresolved:
                reason = "unresolved (see " + best["method"] + "): " + reason
        slower = [o["method"] for _, o in fits.iterrows() if _below(r["tokens_ci"], o["tokens_ci"])]
        if r["status"] == "ok" and slower:
            reason += f"; decodes slower than {', '.join(slower)} (99% CIs disjoint)"
        if r["status"] == "ok" and isinstance(r.get("ttr_includes"), str) and r["ttr_includes"].startswith("server"):
            reason += f"; time to ready: {r['ttr_includes']}"
        if r["status"] == "ok" and isinstance(r.get("gpu"), str) and r["gpu"]:
            reason += f"; {r['gpu']}"
        t.at[i, "reason"] = reason


def _decode_break_even(best: pd.Series, other: pd.Series, unit: str, restarts_per_day: float, busy_hours: float,
                       tp: int) -> str:
    """Where the decision rests on a decode difference the suite did not resolve: say so, and the
    decode-rate gap that would cancel the start-up saving."""
    if rates_differ(best["tokens_ci"], other["tokens_ci"]) or not _num(best["tokens_per_s"]):
        return ""
    saving = other["startup_gpu_s_per_day"] - best["startup_gpu_s_per_day"]
    ci = lambda r: interval_text(*r["tokens_ci"], None)  # noqa: E731
    text = (f"; decode tokens/s unresolved at 99% ({best['method']} {num(best['tokens_per_s'])} {ci(best)}, "
            f"{other['method']} {num(other['tokens_per_s'])} {ci(other)})")
    gap = break_even_decode_gap(saving, busy_hours, tp)
    if gap is None:
        return text + ("; no decode load assumed (--busy-hours 0): a decode gap costs nothing" if busy_hours <= 0
                       else "")
    return (text + f"; break-even: {best['method']} saves {saving:,.0f} {unit}/day a replica "
            f"({restarts_per_day:g} starts/day x {num(other['time_to_ready_s'] - best['time_to_ready_s'])} s x TP {tp}), "
            f"which decoding {gap:.1%} slower than {other['method']} would cancel at {busy_hours:g} busy h/day")


def _replicas(n: float) -> str:
    return f"{int(n)} replica{'' if n == 1 else 's'}"


def _below(a: tuple, b: tuple) -> bool:
    return all(_num(x) for x in (a[1], b[0])) and a[1] < b[0]


def _num(x: Any) -> bool:
    """A finite number, numpy's included (a machine row's GPU memory is a numpy integer)."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)) and math.isfinite(x)
