"""Capacity planning: what each start method costs a node and a fleet, and a verdict only where the
measurements hold it.

For one engine, model, mode, parent state and TP size measured on a machine, and a deployment
(restarts a day of each replica, busy hours a day, replicas), on a node: replicas per node (bounded
by GPUs, CPU cores, host RAM and GPU memory), the headroom left, the device-seconds a day lost to
start-up and to a slower decode, and the verdict of `analysis.decide`: a method, or "no verdict"
with what would decide it (the break-even table over restarts and busy hours).

Every argument is checked against what was measured (one line naming the flag, `BadInput`): the
TP size, batch, model and mode among those measured, a GPU node only from a machine with a GPU, a
GPU at least the model's fixed part, no more restarts than start-ups fit in a day.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from forkspawn import vocabulary as vocab

from . import decide, derive, models, verdict
from .derive import INCLUDES, RESTART, Estimate, as_asked, difference, view
from .fmt import cause, num
from .load import ASKED, CONFIG_KEY, BadInput, latest
from .verdict import method_order

PLAN_COLUMNS = [
    "method", "status", "method_used", "replicas", "limited_by", "gpu_fit", "host_mib_per_replica", "ram_headroom_gib",
    "gpu_mib_measured", "gpu_fixed_mib", "kv_cache_mib", "kv_cache_tokens", "gpu_headroom_gib", "time_to_ready_s",
    "exec_to_ready_s", "teardown_s", "restart_s", "startup_gpu_s_per_day", "tokens_per_s", "decode_gpu_s_per_day",
    "cost_gpu_s_per_day", "node_gpu_h_per_day",
    "nodes_needed", "fleet_gpu_h_per_day", "recommended", "reason",
]
# Busy all day is the common case of a serving fleet: the default decode load (hours a day at the
# faster decoder's rate). A start-up saving is worth least there, so a verdict that holds here holds.
BUSY_HOURS = 24.0
RESTARTS_PER_DAY = 24  # the report's plans: an hourly restart (rolling updates, scale-ups, crashes)
GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default share of a GPU it reserves (fixed part + KV cache)
NO_RESERVATION = {"torch-tp"}  # engines that allocate what they use: the measured GPU memory is all fixed
PREFERRED_ENGINES = ("torch-tp", "vllm")  # the default engine where several were measured
# processes whose GPU memory is not a worker's: aggregates, and the parent (counted on its own)
_NOT_WORKERS = (vocab.GROUP, vocab.RAY, "parent")
DAY_S = 86_400


@dataclass(frozen=True)
class GpuNeed:
    """One replica's memory on its fullest GPU: a fixed part plus a reservation.

    measured: the largest GPU process's NVML figure (a rank; Xinference's `engine-core`).
    kv: the KV-cache reservation inside it (vLLM's "Available KV cache memory", sized from
        gpu_memory_utilization: it shrinks to what a smaller GPU leaves); None if not recorded.
    reserves: True where the reservation is recorded, False for an engine that reserves nothing
        (NO_RESERVATION: the measured figure is all it needs), None where it is unknown.
    parent: the parent's own CUDA context (a device-initialized parent), on the same GPU.
    measured_on: the measured machine's GPU MiB (where it did fit, whatever it reserved).
    fixed = measured - kv + parent: weights, activations, CUDA graphs, CUDA contexts.
    """
    measured: float
    kv: float | None = None
    kv_tokens: float | None = None
    parent: float = 0.0
    reserves: bool | None = None
    measured_on: float | None = None

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

    def fits(self, gpu_mib: float, utilization: float = GPU_MEMORY_UTILIZATION) -> bool | None:
        """Whether a replica fits a GPU of `gpu_mib`; None: unknown (no reservation recorded, and
        the GPU is smaller than the one it was measured on)."""
        kv, _ = self.on(gpu_mib, utilization)
        if kv is not None:
            return kv > 0 and self.fixed + kv <= gpu_mib
        if self.reserves is False:
            return self.fixed <= gpu_mib
        return True if self.measured_on and gpu_mib >= self.measured_on else None

    def describe(self, gpu_mib: float, utilization: float = GPU_MEMORY_UTILIZATION) -> str:
        """Which part is which, and what the KV cache gets on this GPU."""
        if self.reserves is None:
            where = f" on a {num(self.measured_on)} MiB GPU" if self.measured_on else ""
            if self.fits(gpu_mib, utilization):
                return f"GPU: measured {num(self.measured)} MiB{where} (its KV-cache reservation not recorded): fits"
            return (f"GPU fit unknown: measured {num(self.measured)} MiB{where}, its KV-cache reservation not recorded; "
                    f"it fits {num(gpu_mib)} MiB if its fixed part (weights, activations, CUDA graphs, context; at most "
                    f"{num(self.measured)} MiB) is below gpu_memory_utilization={utilization:g} x {num(gpu_mib)} = "
                    f"{num(utilization * gpu_mib)} MiB")
        parts = f"fixed {num(self.fixed)} MiB (weights, activations, CUDA graphs, CUDA context"
        parts += f"; the parent's context {num(self.parent)})" if self.parent else ")"
        kv, tokens = self.on(gpu_mib, utilization)
        if kv is None:
            return f"GPU: {parts}; the engine reserves nothing more"
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
    verdict: str = ""  # one line: "fork: ..." or "no verdict: ..."
    outcomes: list[decide.Outcome] = field(default_factory=list)  # the recommended (or best) against each other
    break_even: pd.DataFrame | None = None  # decide.table of the best against its closest rival
    extrapolated: str = ""  # how the figures were scaled to a model not measured ('' if measured)

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


def choose(df: pd.DataFrame, column: str, wanted: Any, prefer: Any = (), flag: str | None = None) -> Any:
    """`wanted` if it is among the column's values; the first preferred present, or the only value."""
    present = sorted(df[column].dropna().unique().tolist(), key=str)
    name = flag or f"--{column.replace('_', '-')}"
    if wanted is not None:
        if wanted not in present:
            raise BadInput(f"{name} {wanted}: not measured; measured: {', '.join(map(str, present)) or 'nothing'}")
        return wanted
    for p in prefer if isinstance(prefer, (tuple, list)) else (prefer,):
        if p in present:
            return p
    if len(present) == 1:
        return present[0]
    raise BadInput(f"several {column} values measured ({', '.join(map(str, present))}): choose one with {name}")


def gpu_need(values: pd.Series, engine_metrics: Any = None, engine: str | None = None,
             measured_on: float | None = None) -> GpuNeed | None:
    """A configuration's GpuNeed from its metric medians (`values`: metric -> value) and its
    record's engine sizes (JSON text from load's `engine_metrics` column)."""
    workers = [v for m, v in values.items() if _num(v)
               and (p := vocab.parse(m)).get("family") == "mem" and p.get("kind") == vocab.GPU_KIND
               and p.get("process") not in _NOT_WORKERS]
    if not workers:
        return None
    sizes = json.loads(engine_metrics) if isinstance(engine_metrics, str) else {}
    parent = values.get(vocab.mem("parent", vocab.GPU_KIND))
    kv = sizes.get("kv_cache_mib")
    return GpuNeed(measured=max(workers), kv=kv, kv_tokens=sizes.get("kv_cache_tokens"),
                   parent=float(parent) if _num(parent) and parent > 0 else 0.0,
                   reserves=True if kv else (False if engine in NO_RESERVATION else None), measured_on=measured_on)


def mode_of(label: str, labels: Any) -> str:
    """The mode of a method label: the suffix a fork and a spawn label share (`fork-eager` and
    `spawn-eager`: "eager"), '' for the default mode (plain methods, and labels without both twins:
    overrides such as `fork-override`, mitigations such as `fork-gcfreeze`). Methods are compared
    within one mode only."""
    variant = vocab.split_method(label)[1]
    twins = {vocab.join_method("fork", variant), vocab.join_method("spawn", variant)}
    return variant if variant and twins <= set(labels) else ""


# How a labelled mode reads: `mp` at TP 1 is vLLM's multiprocess executor, a worker process beside
# the engine core (the process layout of TP > 1), where vLLM's default (`uni`) runs the model in it
MODE_TEXT = {"mp": "mp executor (a worker process at TP 1)"}


def mode_text(mode: str) -> str:
    """'default mode', 'eager mode', 'mp executor (a worker process at TP 1)'."""
    return MODE_TEXT.get(mode, f"{mode or 'default'} mode")


def plan(df: pd.DataFrame, node: Node, tp: int, restarts_per_day: float, *, machine: str | None = None,
         engine: str | None = None, model: models.Model | None = None, extrapolate: bool = False,
         mode: str | None = None, parent_state: str | None = None, cuda_check: str | None = None,
         batch: int | None = None, busy_hours: float = BUSY_HOURS, replicas: int | None = None,
         gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION, threshold: float = decide.THRESHOLD,
         parity_rows: pd.DataFrame | None = None, measured_gpu_mib: float | None = None) -> Plan:
    """Per start method (named by the method that ran): replicas per node, headroom, start-up and
    decode loss, the cost per replica, node and fleet, and a verdict (`analysis.decide`).

    `restarts_per_day`: worker-group (re)starts a day of each replica; each holds `tp` devices
    (GPUs; cores on a CPU-only node) for its time to ready (as a restart pays it: Xinference's
    includes its server's start). `busy_hours`: each replica's decode load, hours a day at the
    faster rate of a pair. `replicas`: the fleet (default: one node's worth). Host memory per
    replica is the whole group's PSS; GPU memory a GpuNeed. `parity_rows`: `parity.table` of the
    records, for decode differences across cold starts; `measured_gpu_mib`: the measured machine's
    GPU (where an engine of unknown reservation is known to fit). `model`: a model not measured is refused
    unless `extrapolate` (models.py's rule). The parent state defaults to `torch` (a server that
    imported torch), the batch to the largest measured, the mode to the default one. `df`: a tidy
    table or its view (derive.view).
    """
    # one measurement per method, whichever asv environment read it (asv's pass re-run elsewhere
    # names another environment): the environment is no axis of the plan
    df = latest(view(df), key=[c for c in CONFIG_KEY if c != "env"])
    machine = choose(df, "machine", machine)
    df = df[df["machine"] == machine]
    measured_gpus = int(df["gpu_count"].fillna(0).max() or 0) if "gpu_count" in df else 0
    if node.gpus and not measured_gpus:
        raise BadInput(f"--gpus {node.gpus}: {machine} has no GPU; a GPU node's start-up, memory and decode cannot be "
                       f"planned from CPU measurements")
    if measured_gpus and not node.gpus:
        raise BadInput(f"--gpus 0: {machine} measured on GPUs; a node without one runs none of it")
    # among engines with a measurement: a machine where our workload was never run has only skips of it
    engine = choose(df[df["status"] != "skipped"], "engine", engine, prefer=PREFERRED_ENGINES)
    df = df[df["engine"] == engine]
    measured_model, scale = _model(df, model, extrapolate, tp)
    if measured_model is not None:
        df = df[df["model"] == measured_model.name]
    caveat = verdict.fork_caveat(machine, engine, as_asked(df))
    parent_state = choose(df[df["status"] != "skipped"], "parent_state", parent_state, prefer="torch")
    df = df[df["parent_state"] == parent_state]
    cuda_check = choose(df, "cuda_check", cuda_check, prefer="runtime")
    df = df[df["cuda_check"] == cuda_check]
    tp = choose(df[df["status"] != "skipped"], "tp", tp)
    df = df[df["tp"] == tp]
    asked_labels = set(df[ASKED].dropna())
    modes = df[ASKED].map(lambda m: (mode_of(m, asked_labels) if isinstance(m, str) else "") or "default")
    mode = choose(df.assign(mode=modes)[df["status"] != "skipped"], "mode", mode or None, prefer="default")
    df = df[modes == mode]
    mode = "" if mode == "default" else mode
    ok = df[df["status"] == "ok"]
    batches = sorted(int(b) for b in ok[ok["metric"].str.fullmatch(vocab.TOKENS_RE)]["batch"].dropna().unique())
    if batch is not None and batch not in batches:
        raise BadInput(f"--batch {batch}: not measured; measured: {', '.join(map(str, batches)) or 'no decode rate'}")
    if batch is None and batches:
        batch = batches[-1]
    status = df[df["metric"] == vocab.STATUS].set_index("method")
    if status.empty:  # every method's start-up status is missing: nothing to plan with
        raise BadInput(f"{engine} on {machine}, parent state {parent_state}, TP={tp}: no start-up status recorded "
                       f"({verdict.why_not(df[df['metric'] == vocab.STATUS])})")
    asked = dict(zip(status.index, status[ASKED]))
    sides_ = sides(ok, batch, scale)
    restarts = [s.restart.value for s in sides_.values() if s.restart]
    if restarts and restarts_per_day * max(restarts) > DAY_S:
        raise BadInput(f"--restarts-per-day {restarts_per_day:g}: more restarts than fit in a day "
                       f"({num(max(restarts))} s each: at most {DAY_S / max(restarts):,.0f})")
    gpu_mib = node.gpu_mem_gib * 1024 if node.gpus and node.gpu_mem_gib else None
    values = ok.pivot_table(index="method", columns="metric", values="value", aggfunc="last")
    sizes = status["engine_metrics"] if "engine_metrics" in status else pd.Series(dtype=object)
    needs = {m: _scaled_need(gpu_need(values.loc[m] if m in values.index else pd.Series(dtype=float),
                                      sizes.get(m), engine, measured_gpu_mib), scale, measured_model, tp)
             for m in status.index}
    fixed = [n.fixed for m, n in needs.items() if n and n.reserves is not None and status.at[m, "status"] == "ok"]
    if gpu_mib and fixed and gpu_mib < min(fixed):
        raise BadInput(f"--gpu-mem-gib {node.gpu_mem_gib:g}: below the model's fixed part on a GPU ({num(min(fixed))} "
                       f"MiB: weights, activations, CUDA graphs, context) at TP={tp}")

    rows = []
    for method in method_order(status.index):
        works = status.at[method, "status"] == "ok"
        side = sides_.get(method)
        host = side.host.value if side and side.host else None
        need = needs.get(method)
        fit = need.fits(gpu_mib, gpu_memory_utilization) if need and gpu_mib else True
        kv, kv_tokens = need.on(gpu_mib, gpu_memory_utilization) if need and gpu_mib else (None, None)
        limits = {
            "GPUs": node.gpus // tp if node.gpus else None,
            "CPU cores": node.cpus // tp,
            "host RAM": math.floor(node.ram_gib * 1024 / host) if _num(host) and host > 0 else None,
            "GPU memory": 0 if fit is False else None,  # one rank a GPU: its fixed part (and a KV cache) fits or not
        }
        limits = {k: n for k, n in limits.items() if n is not None}
        per_node = min(limits.values()) if works else None
        restart = side.restart.value if side and side.restart else None
        medians = values.loc[method] if method in values.index else pd.Series(dtype=float)
        grown = (scale - 1) * _weights_span(medians) if scale else 0.0  # models.py's rule, as in `sides`
        scaled = lambda m: medians.get(m) + grown if _num(medians.get(m)) else None  # noqa: E731
        rows.append({
            "method": method, "status": status.at[method, "status"], "method_used": status.at[method, "method_used"],
            "error": status.at[method, "error"], "replicas": per_node,
            "limited_by": " and ".join(k for k, n in limits.items() if n == per_node) if works else "",
            "gpu_fit": "" if not need or not gpu_mib else {True: "fits", False: "does not fit", None: "unknown"}[fit],
            "host_mib_per_replica": host,
            "ram_headroom_gib": node.ram_gib - per_node * host / 1024 if works and _num(host) else None,
            "gpu_mib_measured": need.measured if need else None,
            "gpu_fixed_mib": need.fixed if need and need.reserves is not None else None,
            "kv_cache_mib": kv, "kv_cache_tokens": kv_tokens,
            "gpu_headroom_gib": (gpu_mib - need.fixed - max(kv or 0, 0)) / 1024
            if need and gpu_mib and need.reserves is not None else None,
            "gpu": need.describe(gpu_mib, gpu_memory_utilization) if need and gpu_mib else "",
            "time_to_ready_s": scaled(vocab.TIME_TO_READY), "exec_to_ready_s": scaled(vocab.EXEC_TO_READY),
            "teardown_s": medians.get(vocab.TEARDOWN), "restart_s": restart,
            "ttr_includes": _includes(ok, method),
            "startup_gpu_s_per_day": restarts_per_day * restart * tp if _num(restart) else None,
            "tokens_per_s": side.rate.value if side and side.rate else None,
        })
    table = pd.DataFrame(rows)
    _decode_cost(table, tp, busy_hours)
    fleet = replicas
    table["node_gpu_h_per_day"] = [c * r / 3600 if _num(c) and _num(r) else None
                                   for c, r in zip(table["cost_gpu_s_per_day"], table["replicas"])]
    table["nodes_needed"] = [math.ceil((fleet or r) / r) if _num(r) and r > 0 else None for r in table["replicas"]]
    table["fleet_gpu_h_per_day"] = [c * (fleet or r) / 3600 if _num(c) and _num(r) and r > 0 else None
                                    for c, r in zip(table["cost_gpu_s_per_day"], table["replicas"])]
    dep = decide.Deployment(restarts_per_day, busy_hours, tp, threshold)
    result = Plan("", table, extrapolated=_extrapolated_text(measured_model, model, scale) if scale else "")
    _verdict(result, sides_, dep, parity_rows, batch, asked, caveat, "GPU-s" if node.gpus else "core-s")
    device = "GPU" if node.gpus else "CPU core"
    what = f"{engine}{f', {mode_text(mode)}' if mode else ''}" + (f", {measured_model.label}" if measured_model else "")
    executors = derive.executors(df[df["metric"] == vocab.STATUS])
    clocks = " / ".join(dict.fromkeys(s.clock for s in sides_.values() if s.restart and s.clock))
    result.scenario = (
        f"{what}{f', {executors}' if executors else ''} on {machine}, parent state {parent_state}, TP={tp}"
        f"{f', batch {batch}' if batch else ''}"
        f"{'; EXTRAPOLATED: ' + result.extrapolated if scale else ''}; node: {node.gpus} GPUs"
        f"{f' x {num(node.gpu_mem_gib)} GiB' if node.gpu_mem_gib and node.gpus else ''}, {node.ram_gib:g} GiB RAM, "
        f"{node.cpus} CPU cores; {restarts_per_day:g} starts/day and {busy_hours:g} busy h/day per replica; fleet: "
        f"{f'{fleet} replicas' if fleet else 'one node'}; restart_s: {clocks or 'time to ready'}; "
        f"startup_gpu_s_per_day = starts/day x TP x restart_s; host_mib_per_replica: the group's PSS, the largest "
        f"of its readings at ready, after decode and after gc; *_gpu_s_per_day in {device}-seconds a day per replica "
        f"(TP x seconds), *_gpu_h_per_day in {device}-hours a day per node and fleet; GPU memory = a fixed part "
        f"(measured less the KV cache, plus the parent's CUDA context) + the KV cache at gpu_memory_utilization="
        f"{gpu_memory_utilization:g}; a verdict needs its deciding difference resolved at 99% and at least "
        f"{100 * threshold:g}% of the other's")
    result.table = table[PLAN_COLUMNS]
    return result


def _model(df: pd.DataFrame, model: models.Model | None, extrapolate: bool,
           tp: int) -> tuple[models.Model | None, float | None]:
    """(the measured model to plan from, the factor on weight bytes, None where it was measured)."""
    names = [n for n in df.loc[df["status"] != "skipped", "model"].dropna().unique()]
    measured = [models.of(n) for n in sorted(names)]
    if model is None:
        if len(measured) > 1:
            raise BadInput(f"several models measured ({', '.join(m.label for m in measured)}): choose one with --model")
        return (measured[0] if measured else None), None
    same = [m for m in measured if m.name == model.name or (m.params and m.params == model.params)]
    if same:
        return same[0], None
    near = models.nearest(model, measured)
    if near is None:
        raise BadInput(f"--model {model.name}: no measured model of known size to start from "
                       f"(measured: {', '.join(m.label for m in measured) or 'none'})")
    if not extrapolate:
        raise BadInput(f"--model {model.name}: not measured here; the nearest measured is {near.label}: plan that, or "
                       f"pass --extrapolate to scale from it (what grows with weight bytes / TP scales, the rest held)")
    factor = models.scale(near, model, tp)
    if factor is None:
        raise BadInput(f"--model {model.name}: the weight bytes of {near.label} are unknown: nothing to scale")
    return near, factor


def _extrapolated_text(measured: models.Model | None, target: models.Model | None, factor: float) -> str:
    return (f"{target.label if target else '?'} from {measured.label if measured else '?'} measured, weight bytes "
            f"x {factor:.3g}: weight loading, the GPU weights and the decode step scaled, everything else held "
            f"(analysis/models.py)")


def _estimate(row: pd.Series | None, factor: float = 1.0, shift: float = 0.0) -> Estimate | None:
    if row is None or not _num(row["value"]):
        return None
    f = lambda v: float(v) * factor + shift if _num(v) else None  # noqa: E731
    n = int(row["n"]) if pd.notna(row["n"]) else None
    return Estimate(f(row["value"]), f(row["ci_low"]), f(row["ci_high"]), n)


def sides(ok: pd.DataFrame, batch: int | None, scale: float | None = None) -> dict[str, decide.Side]:
    """Each working method's restart (derive.RESTART: teardown + exec to ready, else time to ready
    from the start request, `clock` naming which), decode rate at `batch` and host memory per
    replica (`host_memory`), as Estimates (scaled by models.py's rule where `scale` is given)."""
    out = {}
    for method, rows in ok.groupby("method", sort=False):
        by = rows.drop_duplicates("metric", keep="last").set_index("metric")
        get = lambda m: by.loc[m] if m in by.index else None  # noqa: E731
        span = _weights_span(by["value"]) if scale else 0.0
        restart = get(RESTART) if RESTART in by.index else get(vocab.TIME_TO_READY)
        out[method] = decide.Side(
            method, _estimate(restart, shift=(scale - 1) * span if scale else 0.0),
            _estimate(get(vocab.tokens_per_s(batch)), factor=1 / scale if scale else 1.0) if batch else None,
            host_memory(by)[0], _clock(restart))
    return out


# Host memory of a replica (the group's PSS) at ready, once decoding ended, and after the parent's
# gc.collect(): a forked replica's shared pages are copied as either side writes them, so what it
# holds once it works can be more than at ready. The planner counts the largest.
HOST_READINGS = (("at ready", vocab.mem(vocab.GROUP, "pss")),
                 *((when.replace("_", " "), vocab.mem(vocab.GROUP, f"pss_{when}")) for when in vocab.LATER))


def host_memory(by: pd.DataFrame) -> tuple[Estimate | None, dict[str, float]]:
    """(the largest of a configuration's group-PSS readings as an Estimate, every reading by when:
    {"at ready": MiB, "after decode": MiB, "after gc": MiB}); `by`: its rows indexed by metric."""
    readings = {when: by.loc[m] for when, m in HOST_READINGS if m in by.index and _num(by.loc[m]["value"])}
    if not readings:
        return None, {}
    largest = max(readings.values(), key=lambda r: float(r["value"]))
    return _estimate(largest), {when: float(r["value"]) for when, r in readings.items()}


def _clock(row: pd.Series | None) -> str:
    """What a restart figure counts, short enough for a verdict line."""
    includes = row.get(INCLUDES) if row is not None else None
    if not isinstance(includes, str):
        return ""
    return "from the server's start request to ready" if includes.startswith("server") else includes


def _weights_span(values: pd.Series) -> float:
    """Seconds of the span that grows with the weights (models.py): from the last phase that ended
    before `weights_loaded` (vLLM: a process's `*_imported`, its interpreter start and imports
    done; ours: distributed init) to it. BadInput where that span would hold a process's start and
    imports (it begins at the process's creation: vLLM before record/3, whose spawned processes'
    imports fell inside "weights loaded")."""
    ends = {vocab.parse(m).get("phase"): v for m, v in values.items()
            if vocab.parse(m).get("family") == "phase" and _num(v)}
    end = ends.get(models.WEIGHTS_PHASE)
    if end is None:
        return 0.0
    start, after = max(((v, p) for p, v in ends.items() if v < end and p != models.WEIGHTS_PHASE), default=(0.0, None))
    if after in models.IMPORTED:
        raise BadInput(f"--extrapolate: the weight-loading span begins at {after} here, so it holds that process's "
                       f"interpreter start and imports ({models.IMPORTED[after]} not recorded: a record before "
                       f"record/3): scaling it would scale the imports; measure with record/3")
    return end - start


def _scaled_need(need: GpuNeed | None, scale: float | None, model: models.Model | None, tp: int) -> GpuNeed | None:
    """The GPU need with the weights' MiB scaled (the fixed part grows by the weights' difference)."""
    if need is None or not scale or model is None or not model.weight_bytes(tp):
        return need
    grow = (scale - 1) * model.weight_bytes(tp) / 2**20
    # KV tokens per MiB depend on the other model's layers and KV heads, which a size does not give
    return GpuNeed(need.measured + grow, need.kv, None, need.parent, need.reserves, need.measured_on)


def _includes(ok: pd.DataFrame, method: str) -> Any:
    r = ok[(ok["method"] == method) & (ok["metric"] == vocab.TIME_TO_READY)]
    return r[INCLUDES].iloc[0] if len(r) and INCLUDES in r else None


def _decode_cost(t: pd.DataFrame, tp: int, busy_hours: float) -> None:
    """Device-seconds a day a replica needs beyond the fastest method's for the day's decode load
    (`busy_hours` at the fastest rate), at the medians: the verdict weighs their intervals."""
    rates = pd.to_numeric(t["tokens_per_s"], errors="coerce")
    fastest = rates[t["status"] == "ok"].max()
    t["decode_gpu_s_per_day"] = [busy_hours * 3600 * tp * (fastest / r - 1) if _num(r) and r > 0 and _num(fastest)
                                 else None for r in rates]
    t["cost_gpu_s_per_day"] = [a + (b or 0) if _num(a) else None
                               for a, b in zip(t["startup_gpu_s_per_day"], t["decode_gpu_s_per_day"])]


def _verdict(p: Plan, sides: dict[str, decide.Side], dep: decide.Deployment, parity_rows: pd.DataFrame | None,
             batch: int | None, asked: dict[str, str], caveat: str, unit: str) -> None:
    """The recommendation (decide.compare of the best against every other method that works and
    fits), every method's reason, the verdict line and the break-even table."""
    t = p.table
    t["recommended"] = False
    t["reason"] = ""
    works = t[t["status"] == "ok"]
    fits = works[works["replicas"].fillna(0) > 0]
    unmeasured = [m for m, s in zip(t["method"], t["status"]) if s == "skipped"]
    failed = [m for m, s in zip(t["method"], t["status"]) if verdict.failed(s)]
    best, outcomes = _tournament(fits, sides, dep, parity_rows, batch, asked)
    p.outcomes = outcomes
    holds = best is not None and all(o.winner == best["method"] for o in outcomes) and bool(outcomes or failed)
    if holds:
        t.loc[best.name, "recommended"] = True
    rival = next((o for o in outcomes if o.winner is None), None) or (outcomes[0] if outcomes else None)
    if rival is not None and rival.startup is not None and rival.startup.value > 0:
        p.break_even = decide.table(rival.b, rival.o, rival.decode, dep)
    p.verdict = _verdict_line(best, holds, outcomes, failed, unmeasured, unit, p.extrapolated)
    by_other = {(o.o.method if o.b.method == (best["method"] if best is not None else None) else o.b.method): o
                for o in outcomes}
    for i, r in t.iterrows():
        m = r["method"]
        if r["status"] == "skipped":
            reason = f"{verdict.NOT_RUN}: {cause(r['error'])}"
        elif r["status"] != "ok":
            reason = f"{verdict.word(r['status'], r['error'])}: {cause(r['error'])}"
        elif r["replicas"] == 0:
            reason = f"does not fit: {r['limited_by']}"
        elif best is not None and m == best["method"]:
            reason = (f"{'recommended' if holds else 'the best estimate, no verdict'}: fits "
                      f"{_replicas(r['replicas'])} (limited by {r['limited_by']})")
            if caveat and verdict.ran_as(m).startswith("fork"):
                reason += f"; {caveat}"
        else:
            o = by_other.get(m)
            reason = _against(o, unit) if o else ""
        if r["status"] == "ok" and vocab.is_override(m):
            reason += (f"; {m} is a non-default override (the engine would run "
                       f"{vocab.base_method(m)} otherwise): opt in deliberately")
        if r["status"] == "ok" and isinstance(r.get("ttr_includes"), str) and r["ttr_includes"].startswith("server"):
            reason += f"; time to ready: {r['ttr_includes']}"
        if r["status"] == "ok" and r.get("gpu"):
            reason += f"; {r['gpu']}"
        t.at[i, "reason"] = reason


def _tournament(fits: pd.DataFrame, sides: dict[str, decide.Side], dep: decide.Deployment,
                parity_rows: pd.DataFrame | None, batch: int | None,
                asked: dict[str, str]) -> tuple[pd.Series | None, list[decide.Outcome]]:
    """(the method to state, its comparisons with every other that works and fits). The method that
    beats every other at every point of the intervals if there is one (then it is the verdict);
    otherwise the fastest starter of those with the most replicas, whose open comparisons say what
    would decide it (the question a start method answers: does the faster start pay?)."""
    if fits.empty:
        return None, []
    top = fits[fits["replicas"] == fits["replicas"].max()]
    side = lambda m: sides.get(m, decide.Side(m, None, None))  # noqa: E731

    def against(c: pd.Series) -> list[decide.Outcome]:
        out = []
        for _, r in fits.iterrows():
            if r["method"] == c["method"]:
                continue
            b, o = side(c["method"]), side(r["method"])
            if r["replicas"] < c["replicas"]:
                out.append(_by_replicas(c, r, b, o, dep))
                continue
            if b.restart and o.restart and o.restart.value < b.restart.value:  # told in the faster starter's terms
                b, o = o, b
            out.append(decide.compare(b, o, dep, decide.decode_of(b, o, parity_rows, batch, asked)))
        return out

    played = {i: against(c) for i, c in top.iterrows()}
    for i, outcomes in played.items():
        if all(o.winner == top.at[i, "method"] for o in outcomes):
            return top.loc[i], outcomes
    fastest = top.assign(ttr=top["restart_s"].astype(float).fillna(math.inf)).sort_values("ttr", kind="stable")
    return top.loc[fastest.index[0]], played[fastest.index[0]]


def _by_replicas(best: pd.Series, other: pd.Series, b: decide.Side, o: decide.Side,
                 dep: decide.Deployment) -> decide.Outcome:
    """More replicas a node decide where the memory behind them does: its difference resolved at
    99%, at least the threshold, and the counts apart at the intervals' unfavourable ends."""
    out = decide.Outcome(b, o, None, (None, None, None), None, None, "")
    limit = other["limited_by"]
    if "host RAM" not in limit:  # a count of GPUs or cores, not a measurement
        out.winner, out.why = b.method, f"{_replicas(best['replicas'])} a node against {int(other['replicas'])} ({limit})"
        return out
    if b.host and o.host:
        d = difference(o.host, b.host)
        if d.resolved and d.value >= dep.threshold * o.host.value:
            out.winner = b.method
            out.why = f"{_replicas(best['replicas'])} a node against {int(other['replicas'])}: {num(d.value)} MiB less a replica"
            return out
        out.why = f"replicas differ by {limit} within the interval of the memory a replica ({d.text(signed=True)} MiB)"
    else:
        out.why = f"replicas differ by {limit}"
    out.decide = "more cold starts to resolve the memory a replica"
    return out


def _against(o: decide.Outcome, unit: str) -> str:
    est, lo, hi = o.cost
    costs = (f"a replica-day costs {num(est, signed=True)} {unit} against {o.b.method} "
             f"[{num(lo, signed=True)}, {num(hi, signed=True)}]" if _num(est) and _num(lo) and _num(hi) else
             f"a replica-day costs {num(est, signed=True)} {unit} against {o.b.method}" if _num(est) else "")
    if o.winner is not None:
        loser = o.o.method if o.winner == o.b.method else o.b.method
        text = f"{loser} loses to {o.winner}: {o.why}"
    else:
        text = f"no verdict, {o.b.method} vs {o.o.method}: {o.why}" + (f"; would decide it: {o.decide}" if o.decide else "")
    return f"{text}; {costs}" if costs else text


def _verdict_line(best: pd.Series | None, holds: bool, outcomes: list[decide.Outcome], failed: list[str],
                  unmeasured: list[str], unit: str, extrapolated: str) -> str:
    tail = f" (not measured: {', '.join(unmeasured)})" if unmeasured else ""
    tail += f" ({', '.join(failed)}: fail{'s' * (len(failed) == 1)})" if failed and not holds else ""
    tail += " [extrapolated]" if extrapolated else ""
    if best is None:
        return f"no verdict: no measured method works and fits{tail}"
    m = best["method"]
    if holds:
        why = "; ".join(f"against {o.o.method if o.b.method == m else o.b.method}: {o.why}" + (
            f", saves {num(abs(o.cost[0]))} {unit}/day a replica [{num(min(abs(o.cost[1]), abs(o.cost[2])))}, "
            f"{num(max(abs(o.cost[1]), abs(o.cost[2])))}]" if all(_num(x) for x in o.cost) and any(o.cost) else "")
            for o in outcomes)
        fails = f"{', '.join(failed)} fail{'s' * (len(failed) == 1)}" if failed else ""
        return f"{m}: " + "; ".join(x for x in (why, fails) if x) + tail
    if not outcomes:
        return f"no verdict: only {m} measured{', the rest fail' if failed else ''}, nothing to compare it with{tail}"
    open_ = [o for o in outcomes if o.winner != m]
    first = open_[0]
    more = [f"{x.b.method} vs {x.o.method}" for x in open_[1:]]
    return (f"no verdict: {first.b.method} vs {first.o.method}: {first.why}"
            + (f"; would decide it: {first.decide}" if first.decide else "")
            + (f"; also open: {', '.join(more)} (see why)" if more else "") + tail)


def _replicas(n: float) -> str:
    return f"{int(n)} replica{'' if n == 1 else 's'}"


def _below(a: tuple, b: tuple) -> bool:
    return all(_num(x) for x in (a[1], b[0])) and a[1] < b[0]


def _num(x: Any) -> bool:
    """A finite number, numpy's included (a machine row's GPU memory is a numpy integer)."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)) and math.isfinite(x)
