"""The asv suite's own glue, as numpy's `benchmarks/common.py` and pandas'
`pandas_vb_common.py` are theirs: the benchmark modules beside it only subclass what is here,
and the harness (`forkspawn`) knows nothing of asv.

The suite's settings are resolved once, when this module is imported, into a frozen `Suite`
(`SUITE`, from the FORKSPAWN_* variables: `Suite.from_environ`), because asv reads a benchmark
class's `params` when it imports the suite: the GPU count (which kinds and metrics exist), the
profile (which batch sizes, which points) and the TP sizes must be known then. Everything below
takes the suite as an argument, or reads `SUITE` at the class level where asv needs it.

How a configuration is measured once per `asv run`, although asv calls every `track_*`
function in a process of its own: `setup_cache` (run once per run) returns a fresh token; the
first benchmark that needs a configuration measures it (`forkspawn.measure`, `repeat` cold
starts) and appends the record, tagged with the token, to a JSON Lines sidecar next to asv's
results (`forkspawn.sidecar`); every later metric of that configuration reads it from there. The
sidecar is also where the analysis finds what asv cannot store: the verified method, the error
text, versions.

Each `track_*` returns `{"samples": [...], "number": 1}`, one sample per cold start, so asv
stores the median and computes its 99% confidence interval from our repeats, as it does for
timing benchmarks. A failed configuration reports status 1 (error) or 2 (timeout) in
`track_status` and fails its other metrics with the error text; impossible ones are skipped.
"""

from __future__ import annotations

import abc
import importlib
import inspect
import itertools
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from forkspawn import engines, machine, sidecar
from forkspawn import vocabulary as vocab
from forkspawn.config import DEVICE_STATES, METHODS, PARENT_STATES, Config
from forkspawn.record import Record, Run
from forkspawn.vocabulary import STATUS_CODES, config_key
from forkspawn.worker import PHASES

# The NVML-based CUDA check changes only the device-queried state, so in asv it is a value of
# the parent-state axis rather than an axis of its own (half of which would be skipped calls).
NVML_QUERIED = vocab.join_parent("device-queried", vocab.NVML_CHECK)


def point_keys(engine: str, method: str = "", parent_state: str = "") -> list[str]:
    """How the profiles name a point, most specific first: "ENGINE METHOD STATE", "ENGINE METHOD",
    "ENGINE STATE", "ENGINE" (asv's labels: `fork-mp`, `device-queried-nvml`)."""
    both = [f"{engine} {method} {parent_state}"] if method and parent_state else []
    return both + [f"{engine} {part}" for part in (method, parent_state) if part] + [engine]


@dataclass(frozen=True)
class Profile:
    """What one `make bench` measures, chosen with FORKSPAWN_PROFILE. Every profile has the same
    asv grid: the points a profile leaves out are skipped (`leaves_out`), so results line up."""

    # point (point_keys: the most specific key applies; "engines": every real engine not named) ->
    # (least, most) cold starts; between the two the stopping rule (stats.settled) decides, at `precision`
    cold_starts: dict[str, tuple[int, int]]
    decode_steps: int
    soak_cycles: int  # start/teardown cycles per method of the soak benchmark (0: not run)
    precision: float = 0.05  # relative half-width of time to ready's 99% interval that settles a point
    single_rank: bool = True  # False: TP=1 only where an engine has no larger size (start methods collide in groups)
    left_out: tuple[str, ...] = ()  # points (point_keys) not measured
    only: tuple[str, ...] = ()  # where given, the only points (point_keys) measured
    largest_tp_only: tuple[str, ...] = ()  # engines measured at the largest TP size only
    warmups: dict[str, int] = field(default_factory=dict)  # point (point_keys) -> uncounted first starts, at least
    cpu_eager: bool = False  # vLLM on CPU without torch.compile (config.extra.vllm_kwargs says so)
    batches: tuple[int, ...] = (1, 16)
    gpu: dict[str, Any] = field(default_factory=dict)  # the fields that differ on a GPU machine (`on`)

    name: str = ""

    def on(self, gpus: int) -> "Profile":
        """This profile on a machine of `gpus` GPUs (0: the CPU)."""
        return replace(self, **self.gpu, gpu={}) if gpus and self.gpu else self

    def starts(self, engine: str, method: str = "", parent_state: str = "") -> tuple[int, int, int]:
        """(least, most) cold starts of a point, and its warm-ups (Config.warmup_starts)."""
        keys = point_keys(engine, method, parent_state)
        least, most = next((self.cold_starts[k] for k in keys if k in self.cold_starts), self.cold_starts["engines"])
        return least, most, next((self.warmups[k] for k in keys if k in self.warmups), 0)

    def leaves_out(self, engine: str, method: str, parent_state: str, tp: int, tps: list[int]) -> str | None:
        why = f"not in the {self.name} profile (FORKSPAWN_PROFILE=full measures it)"
        if not self.single_rank and tp == 1 and max(tps) > 1:
            return f"TP=1 is {why}: it measures groups of ranks"
        if engine in self.largest_tp_only and tp < max(tps):
            return f"TP={tp} of {engine} is {why}: it measures {engine} at its largest TP size"
        keys = point_keys(engine, method, parent_state)
        if any(k in self.left_out for k in keys) or (self.only and not any(k in self.only for k in keys)):
            return f"{engine} {method} from a {parent_state} parent is {why}"
        return None


# Sized by the precision analysis (docs/measurement-quality.md): on a noisy 2-core box spawn vs
# fork is resolved at 99% after 3 to 5 cold starts per side, vLLM's spawn vs fork override after
# 3; a point stops as soon as its comparison is resolved or its interval is narrow (the stopping
# rule), else at its cap. `default` fits 15 minutes there with the engines, by leaving out TP=1, vLLM's
# torch.compile (30 s or more of every CPU cold start, engine work that no start method avoids),
# Ray from a torch parent (the raylet execs Ray's workers: the parent's state never reaches them),
# vLLM's Ray executor (refused on CPU) and its override, and the soak, and by starting Xinference
# twice (on CPU it runs the model in one process whatever the method: there is nothing to
# resolve, and a cold start takes a minute with its server). `full` is every point
# (hours with the engines on 2 cores), `brief` is for short GPU leases, `quick` a smoke run.
_DEFAULT_LEFT_OUT = ("torch-tp ray torch", "vllm ray", "vllm ray-override")

# Where fork meets the parent's CUDA state, what the committed GPU reports saw fail the same way
# every time ("Cannot re-initialize CUDA in forked subprocess": reports/h100-tp1 and h100-tp2 3 of
# 3, reports/h200-tp1 2 of 2), and vLLM's crash variants (they fail by design): the harness ends
# such a point after 2 starts (measure._stop_after's failed-fast); benchmarks/eta.py counts them so.
FAILS_FAST = ("torch-tp fork device-queried", "torch-tp fork device-initialized", "vllm fork device-queried",
              *(f"vllm {m}-{k}" for k in ("killworker", "killcore") for m in ("fork", "spawn")))

# The GPU default: the questions that decide a deployment, in at most 20 minutes of measuring on
# one H100 or H200 by the estimate (benchmarks/eta.py; `forkspawn profile` prints it; not yet a
# measured run). vLLM with its defaults (its default executor, compiled, warm compile cache) forked
# and spawned from a torch parent, and from the parents that touched CUDA: a runtime query (fork
# fails), an NVML query (fork works) and a CUDA context (vLLM forces spawn: that point shows spawn
# from it, the way out of the failure from the hardest parent). `vllm serve` asked for fork
# and for spawn; Xinference asked for fork (4.1.0 sets spawn itself: asked for spawn it runs the
# same); our workload from the same parents, spawn after a CUDA context too (nothing forces it for
# us). Left to `full` (and the deploy queue, mk/deploy-queue.sh): vLLM's labelled variants (the mp
# executor, eager, gc.freeze(), cold compile caches, crashes), bare parents (fork and spawn both
# import torch in the workers there), vLLM spawned after a CUDA query, runtime or NVML (a spawned
# child starts fresh whatever the parent queried: it is spawn from a torch parent again, and the
# CUDA-context point already shows spawn working after the parent touched CUDA; its 68 s did not
# fit the 20 minutes with reports/h100-vllm-defaults' per-start times), forkservers and Ray.
# Engines are measured at the largest TP size only, our workload at every TP size of a group (TP
# 2, 4, 8 on 8 GPUs): on 8 GPUs about half an hour by the estimate.
_DEVICE_STATES = ("device-queried", NVML_QUERIED, "device-initialized")
_GPU_DEFAULT_POINTS = (
    "vllm fork torch", "vllm spawn torch", "vllm fork device-queried", f"vllm fork {NVML_QUERIED}",
    "vllm fork device-initialized",
    "vllm-serve fork", "vllm-serve spawn", "xinference fork",
    "torch-tp fork torch", "torch-tp spawn torch", *(f"torch-tp fork {s}" for s in _DEVICE_STATES),
    "torch-tp spawn device-queried", "torch-tp spawn device-initialized")
_GPU_DEFAULT = {"only": _GPU_DEFAULT_POINTS, "largest_tp_only": ("vllm", "vllm-serve", "xinference")}
# Its cold starts, by what each count can tell (asv's 99% interval of the median needs 3):
# - 3, fork and spawn from a torch parent: the fewest with an interval; it resolves their start-up
#   (vLLM 16 vs 34 s to ready on an H100, our workload 1.7 vs 6 s, each with a spread of a few
#   percent) and host memory (419 MiB a vLLM replica; USS resolves at 2), not decode parity (±3%
#   takes about 14 a side, the all-day verdict about 19: FORKSPAWN_COLD_STARTS, or the queue's parity stage).
#   vLLM forked after an uncounted warm-up: a box's first starts with a warm compile cache pay a
#   one-off JIT (about 20 s after graph capture, whatever the method: reports/h100-vllm-defaults,
#   docs/reference-results.md). The parity run had no warm-up a method and counted it as two
#   forked starts of 22-23 s; with the warm-up, 10 of 10 forked starts took 14.5-18.9 s.
# - 2, where fork is expected to fail (FAILS_FAST): the failure seen twice the same way, which one
#   start cannot tell from a flake; no interval (there is no time to ready).
# - 1, the other points from a parent that touched CUDA, `vllm serve` and Xinference: whether it
#   works and which method ran (verified from /proc), a time for orientation, no spread, no interval.
_GPU_DEFAULT_STARTS = {"torch-tp": (3, 3), "vllm": (3, 3), "engines": (1, 1),
                       **{f"{e} {s}": (1, 1) for e in ("torch-tp", "vllm") for s in _DEVICE_STATES},
                       **{p: (2, 2) for p in FAILS_FAST}}
_FULL_STARTS = {"torch-tp": (3, 8), "engines": (3, 5)}
PROFILES: dict[str, Profile] = {
    "full": Profile(name="full", cold_starts=_FULL_STARTS, decode_steps=32, soak_cycles=20,
                    gpu={"cold_starts": {**_FULL_STARTS, "vllm": (5, 8)}}),
    "default": Profile(name="default", cold_starts={"torch-tp": (3, 5), "engines": (3, 3), "xinference": (2, 2)}, decode_steps=16,
                       soak_cycles=0, single_rank=False, left_out=_DEFAULT_LEFT_OUT, cpu_eager=True,
                       gpu={**_GPU_DEFAULT, "cold_starts": _GPU_DEFAULT_STARTS, "warmups": {"vllm fork torch": 1}}),
    "brief": Profile(name="brief", cold_starts={"torch-tp": (3, 3), "engines": (2, 2)}, decode_steps=32, soak_cycles=10),
    "quick": Profile(name="quick", cold_starts={"torch-tp": (1, 1), "engines": (1, 1)}, decode_steps=8, soak_cycles=0,
                     single_rank=False, left_out=_DEFAULT_LEFT_OUT + ("vllm fork-override",), cpu_eager=True,
                     gpu=_GPU_DEFAULT),
}


@dataclass(frozen=True)
class Suite:
    """Everything the suite takes from its environment, resolved once (`from_environ`) and passed
    down: the FORKSPAWN_* variables of `make bench` and of a lease (docs/running.md)."""

    profile: Profile
    gpus: int  # 0: the CPU
    tps: tuple[int, ...]
    model: str
    cold_starts: dict[str, tuple[int, int]]  # FORKSPAWN_COLD_STARTS: engine ("" for all) -> (least, most)
    start_limit_s: float  # FORKSPAWN_START_LIMIT_S (0: the harness's default)
    soak_cycles: int
    warmup_starts: int = 0  # FORKSPAWN_WARMUP_STARTS: uncounted first starts of every point measured now
    engines: tuple[str, ...] = ()  # FORKSPAWN_ENGINES: the engines this asv environment measures (all if empty)
    run_id: str | None = None  # FORKSPAWN_RUN_ID: asv's run token (a resumed run)
    recorded_only: bool = False  # FORKSPAWN_RECORDED_ONLY: store what the run measured, measure nothing
    asv_machine: str | None = None  # FORKSPAWN_ASV_MACHINE: the asv machine name `make bench` registered
    progress_file: str | None = None  # FORKSPAWN_PROGRESS: where progress lines go (make bench follows it)
    jobs: tuple[str, ...] = ()  # FORKSPAWN_JOBS: the asv --bench regexes of make bench's jobs, in order (the run's plan)
    # the run's cold starts against its estimate (benchmarks/eta.py), where `measure_first` keeps count
    # (benchmarks/eta.RunProgress, made by the command line: the suite's glue does not import eta)
    run_progress: Any = field(default=None, compare=False, repr=False)

    @property
    def on_gpu(self) -> bool:
        return self.gpus > 0

    @classmethod
    def from_environ(cls, env: Mapping[str, str] = os.environ) -> "Suite":
        """The suite `env` asks for; ValueError naming the variable where one is unusable."""
        name = env.get("FORKSPAWN_PROFILE", "default")
        if name not in PROFILES:
            raise ValueError(f"unknown FORKSPAWN_PROFILE {name!r}; valid: {', '.join(PROFILES)}")
        gpus = _gpu_count(env.get("FORKSPAWN_GPUS", ""))
        profile = PROFILES[name].on(gpus)
        cycles = env.get("FORKSPAWN_SOAK_CYCLES", "")
        return cls(profile=profile, gpus=gpus, tps=_tp_sizes(gpus, env.get("FORKSPAWN_TP", "").strip()),
                   model=env.get("FORKSPAWN_MODEL") or ("1b" if gpus else "tiny"),
                   cold_starts=_cold_starts(env.get("FORKSPAWN_COLD_STARTS", "").strip()),
                   start_limit_s=_start_limit(env.get("FORKSPAWN_START_LIMIT_S", "").strip()),
                   warmup_starts=_warmup_starts(env.get("FORKSPAWN_WARMUP_STARTS", "").strip()),
                   soak_cycles=int(cycles) if cycles.isdigit() else profile.soak_cycles,
                   engines=tuple(e for e in env.get("FORKSPAWN_ENGINES", "").split(",") if e),
                   run_id=env.get("FORKSPAWN_RUN_ID") or None, recorded_only=bool(env.get("FORKSPAWN_RECORDED_ONLY")),
                   asv_machine=env.get("FORKSPAWN_ASV_MACHINE") or None,
                   progress_file=env.get("FORKSPAWN_PROGRESS") or None, jobs=_jobs(env.get("FORKSPAWN_JOBS", "")))

    def say(self, line: str) -> None:
        """A progress line: asv shows a benchmark's output only at its end, so progress goes to a
        file `make bench` follows."""
        if self.progress_file:
            with open(self.progress_file, "a") as f:
                f.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def measured(self, engine: str = "torch-tp", method: str = "", parent_state: str = "") -> dict[str, Any]:
        """The Config fields this suite sets for a point of `engine` (asv's method and parent-state labels)."""
        least, most, warmups = self.profile.starts(engine, method, parent_state)
        least, most = self.cold_starts.get(engine) or self.cold_starts.get("") or (least, most)
        # engines measure decoding as differences of timed requests (engines.decode): windows of
        # enough steps, more on a GPU, where 32 steps of a 1B model take under 0.1 s; 5 windows of 192
        # steps a cold start (the long request, 16 + 25 + 192 tokens, must fit vLLM's max_model_len of 256)
        fields = {"repeat": most, "least": least, "precision": self.profile.precision,
                  "warmup_starts": max(warmups, self.warmup_starts),
                  "decode_steps": self.profile.decode_steps, "batches": self.profile.batches, "model": self.model,
                  "limit_s": self.start_limit_s}
        if engine != "torch-tp":
            fields["decode_steps"], fields["decode_windows"] = ((192, 5) if self.on_gpu
                                                                else (max(32, self.profile.decode_steps), 3))
        return fields


def _gpu_count(given: str) -> int:
    """GPUs the suite measures on (0: the CPU). FORKSPAWN_GPUS, where set to a number, is the
    answer and NVML is never queried: `make bench` sets it, to spare each of asv's hundreds of
    benchmark processes the NVML start-up. Otherwise NVML counts them (no CUDA context is made
    in asv's process)."""
    if given.isdigit():
        return int(given)
    return len(machine.gpus()) if machine.default_device() == "cuda" else 0


def _tp_sizes(gpus: int, wanted: str) -> tuple[int, ...]:
    """1, 2, 4, 8 up to the GPUs present; 1 and 2 on a CPU machine. FORKSPAWN_TP (e.g. "2" or
    "2,4") keeps some of them, to spend a short lease on the sizes not measured yet."""
    n = gpus if gpus else min(2, len(os.sched_getaffinity(0)))
    sizes = [tp for tp in (1, 2, 4, 8) if tp <= max(n, 1)]
    if not wanted:
        return tuple(sizes)
    try:
        chosen = [int(tp) for tp in wanted.split(",")]
    except ValueError:
        raise ValueError(f"FORKSPAWN_TP={wanted!r} is not a comma-separated list of sizes") from None
    if not set(chosen) <= set(sizes):
        raise ValueError(f"FORKSPAWN_TP={wanted!r}: this machine can measure TP {', '.join(map(str, sizes))}")
    return tuple(tp for tp in sizes if tp in chosen)


def _cold_starts(text: str) -> dict[str, tuple[int, int]]:
    """FORKSPAWN_COLD_STARTS: the cold starts of the points measured now, whatever the profile
    says (e.g. more for the points a review turns on; a record's key does not include them, so a
    resumed run reads the points measured before back as they are). `LEAST[,MOST]` applies to
    every engine (key ""); `ENGINE=LEAST[,MOST]` entries, space-separated, to the engines they
    name (e.g. `torch-tp=4,4`: fixed repeat counts for our workload, the profile's for the rest)."""
    found = {}
    for entry in text.split():
        name, _, counts = entry.rpartition("=")
        try:
            least, _, most = counts.partition(",")
            least, most = int(least), int(most or least)
        except ValueError:
            raise ValueError(f"FORKSPAWN_COLD_STARTS={text!r}: {entry!r} is not [ENGINE=]LEAST[,MOST]") from None
        if not 1 <= least <= most:
            raise ValueError(f"FORKSPAWN_COLD_STARTS={text!r}: {entry!r} needs 1 <= LEAST <= MOST")
        found[name] = least, most
    return found


def _jobs(text: str) -> tuple[str, ...]:
    """FORKSPAWN_JOBS: make bench's asv --bench regexes, space-separated, in the order it runs them."""
    for regex in text.split():
        try:
            re.compile(regex)
        except re.error as exc:
            raise ValueError(f"FORKSPAWN_JOBS: {regex!r} is not a regular expression ({exc})") from None
    return tuple(text.split())


def _start_limit(text: str) -> float:
    """FORKSPAWN_START_LIMIT_S: the hard limit of one cold start, seconds (Config.limit_s; a lease
    that must not lose minutes to a hang sets it); unset, the harness's default."""
    try:
        limit = float(text or 0)
    except ValueError:
        raise ValueError(f"FORKSPAWN_START_LIMIT_S={text!r} is not a number of seconds") from None
    if limit < 0:
        raise ValueError(f"FORKSPAWN_START_LIMIT_S={text!r} must be positive")
    return limit


def _warmup_starts(text: str) -> int:
    """FORKSPAWN_WARMUP_STARTS: uncounted cold starts made first at every point measured now
    (Config.warmup_starts: what a node pays once, reported apart, not as spread); unset, none."""
    if text and not text.isdigit():
        raise ValueError(f"FORKSPAWN_WARMUP_STARTS={text!r} is not a whole number of cold starts")
    return int(text or 0)


SUITE = Suite.from_environ()


def parent_states(with_device_states: bool = SUITE.on_gpu) -> list[str]:
    """The parent-state axis: the device states only where they can exist (or all, to show the grid)."""
    states = [s for s in PARENT_STATES if with_device_states or s not in DEVICE_STATES]
    if with_device_states:
        states.insert(states.index("device-queried") + 1, NVML_QUERIED)
    return states


def config_of(engine: str, method: str, parent_state: str, tp: str, suite: Suite,
              variants: dict[str, tuple[str, dict]] | None = None, options: dict | None = None) -> Config:
    """The measured configuration behind one point of the grid, in `suite`.

    `variants` maps a method label to (method, Config.extra): labelled engine options such as
    vLLM's fork override appear as extra values of the method axis. `options` (Config.extra)
    apply to every point.
    """
    state, check = vocab.split_parent(parent_state)
    start_method, extra = (variants or {}).get(method, (method, {}))
    return Config(engine=engine, method=start_method, parent_state=state, cuda_check=check, tp=int(tp),
                  extra={**(options or {}), **extra}, **suite.measured(engine, method, parent_state))


class Grid(abc.ABC):
    """One engine's configurations: method x parent state x TP size. Abstract until a subclass
    names its engine, so that asv, which collects every class of the suite with `track_*`
    methods, skips this module's own classes."""

    @property
    @abc.abstractmethod
    def engine(self) -> str:
        """The engine this grid measures: a subclass sets it as a class attribute."""

    methods: tuple[str, ...] = ()  # the adapter's METHODS, unless a grid narrows them (benchmarks/engines.py)
    variants: dict[str, tuple[str, dict]] = {}  # method label -> (method, Config.extra); see config_of
    options: dict[str, Any] = {}  # Config.extra of every point
    suite: Suite = SUITE  # the grid asv imports is this suite's
    tps: list[int] = list(SUITE.tps)
    # Only Startup lists every parent state (the others are skipped there, showing the
    # compatibility grid); the detailed classes list what can run, to keep asv's runs short.
    states: list[str] = parent_states()
    param_names = ["engine", "method", "parent_state", "tp"]
    processes = 1  # the samples are our cold starts: extra asv rounds would duplicate them
    timeout = 3600  # seconds for one benchmark call, which may measure a whole configuration

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if isinstance(cls.engine, str):
            offered = engines.adapter(cls.engine).METHODS
            cls.methods = cls.methods or offered
            if stray := [m for m in [*cls.methods, *(m for m, _ in cls.variants.values())] if m not in offered]:
                raise TypeError(f"{cls.__name__}: {cls.engine} does not start with {', '.join(stray)}")
            # asv's graphs preselect the first value of each parameter: the largest TP size first,
            # which every profile measures (the default leaves TP=1 out where there are more)
            tps = [str(tp) for tp in sorted(cls.tps, reverse=True)]
            cls.params = [[cls.engine], list(cls.methods) + list(cls.variants), list(cls.states), tps] + getattr(cls, "extra_params", [])
            cls.param_names = Grid.param_names + getattr(cls, "extra_param_names", [])

    def setup_cache(self) -> str:
        """The run's token. Set FORKSPAWN_RUN_ID to resume an interrupted run: configurations
        already recorded under that id are read back instead of measured again."""
        return self.suite.run_id or uuid.uuid4().hex

    setup_cache.timeout = 60

    def point(self, engine: str, method: str, parent_state: str, tp: str) -> Config:
        """The configuration measured at this point of the grid; NotImplementedError where this
        environment or profile does not measure it."""
        if self.suite.engines and engine not in self.suite.engines:  # an asv environment measures its own engines
            raise NotImplementedError(f"{engine} is measured in another environment "
                                      f"(FORKSPAWN_ENGINES={','.join(self.suite.engines)})")
        if reason := self.suite.profile.leaves_out(engine, method, parent_state, int(tp), self.tps):
            raise NotImplementedError(reason)
        return config_of(engine, method, parent_state, tp, self.suite, self.variants, self.options)

    def setup(self, token: str, engine: str, method: str, parent_state: str, tp: str, *extra: str) -> None:
        config = self.point(engine, method, parent_state, tp)
        self.record = cached_record(token, config, _conf_dir(self), vocab.asv_params(engine, method, parent_state, tp),
                                    self.suite)
        if self.record.status == "skipped":
            raise NotImplementedError(self.record.error)
        metric = self.metric(*extra)
        if self.record.status == "ok" and metric and metric not in self.record.samples:
            # e.g. rank 1 of a TP=1 group, or the forkserver of a spawn run
            raise NotImplementedError(f"{metric} does not exist in this configuration")

    def metric(self, *extra: str) -> str | None:
        """The record's sample key this benchmark reports, given its extra parameters."""
        return None

    def sample(self, metric: str) -> dict[str, Any]:
        """One metric of this configuration in the form asv turns into a median and a CI."""
        if self.record.status != "ok":
            raise RuntimeError(f"{self.record.status}: {self.record.error}")
        return {"samples": self.record.samples[metric], "number": 1}


def cached_record(token: str, config: Config, conf_dir: Path, asv_params: str, suite: Suite,
                  until: int | None = None) -> Record | None:
    """The record of `config` in the current asv run, measured now if no benchmark did yet.

    `asv_params` (asv's own parameter values, joined with "|") is stored with it, so that the
    analysis joins asv's values to their record without knowing how labels map to configurations.
    With `until` (an alternating queue, `measure_first(alternate=True)`), only the cold starts up to
    that count are measured, into the journal, and None is returned unless the configuration
    has ended (its cap reached, or a failure that stops it): then its record is written."""
    from forkspawn.measure import cold_starts, label, measure, not_applicable, resolve

    path = records_path(conf_dir, suite)
    key = config_key(config)
    if entry := sidecar.find(path, token, key):
        if entry.record.model != config.model:
            # a point's key has no model: a run holds one model (e.g. FORKSPAWN_RUN_ID=<id>-8b for another)
            raise ValueError(f"run {token} holds {entry.record.model!r} at {asv_params}, not {config.model!r}: "
                             "measure another model under another FORKSPAWN_RUN_ID")
        return entry.record
    if suite.recorded_only:
        raise NotImplementedError(f"not measured in run {token} (FORKSPAWN_RECORDED_ONLY is set: asv stores what "
                                  "was measured)")
    ref = sidecar.find(path, token, config_key(config.replace(method="spawn" if config.method == "fork" else "fork")))
    reference = ref.record.samples.get(vocab.TIME_TO_READY) if ref and ref.record.status == "ok" else None
    journal = sidecar.journal(path)  # cold starts of this point taken before an interruption
    counted = suite.run_progress
    done = [Run.from_dict(r) for r in sidecar.runs(journal, token, key)]

    def journalled(run: Run) -> str | None:
        sidecar.append_run(journal, token, key, run.to_dict())
        return counted.ran(key) if counted else None  # the run's count and time left, for its progress line

    if until is not None:  # an alternating queue's turn: fixed counts
        config = config.replace(least=0)
        if until < config.repeat and not not_applicable(resolved := resolve(config)):
            if not cold_starts(resolved, done, suite.say, on_run=journalled, until=until):
                return None  # more rounds to come
    rec = measure(config, progress=suite.say, reference=reference, done=done, on_run=journalled)
    sidecar.append(path, sidecar.Entry(rec, asv_token=token, asv_key=key, asv_params=asv_params,
                                       asv_commit=_commit(conf_dir), asv_env=_env_name()))
    if counted:
        counted.ended(key)  # it takes no more cold starts, whatever its cap
    suite.say(f"{label(config)}: {rec.status}")
    return rec


# The order `measure_first` takes a grid in: the largest TP size first, plain methods before
# labelled variants, the parent states a deployment has most often first, every method of one
# state before the next state (asv walks method by method).
STATE_PRIORITY = ("torch", "device-initialized", "device-queried", "bare", NVML_QUERIED)


def measure_first(pattern: str, token: str, states: list[str] | None = None, methods: list[str] | None = None,
                  alternate: bool = False, finish: bool = False, progress: Any = None) -> int:
    """Measure the grid points of the `Startup` classes in `benchmarks/` whose `module.Class` name
    matches `pattern` (asv's --bench regex) in `STATE_PRIORITY` order, under asv's run token, so
    that a run cut short has the most useful answers; `asv run` with the same FORKSPAWN_RUN_ID then
    reads them back. `states` and `methods` (asv's labels) keep only those points. With
    `alternate`, the points take turns, one cold start each a round, to their caps (fixed counts:
    no stopping rule), in an order that turns round every round (ABBA), after a round of their
    warm-ups (FORKSPAWN_WARMUP_STARTS), so that a drift of the machine over the run falls on every
    point alike, no point always follows a warm-up, and a run cut short leaves every point with
    nearly as many cold starts. With `finish`, nothing is
    measured: the points' records are written from the cold starts their journal holds, at the
    count the least measured of them reached (a lease ends mid-stage; the record's `repeat` says
    that count). `progress` (benchmarks/eta.RunProgress) counts the run's cold starts against its
    estimate for the progress lines. The number of points measured or found."""
    chosen = grid_points(pattern, states, methods)
    if finish:
        reached = min((_journalled(token, c, _conf_dir(cls()), cls.suite) for cls, _, c in chosen), default=0)
        chosen = [(cls, params, c.replace(repeat=reached, least=0, warmup_starts=0)) for cls, params, c in chosen] if reached else []
        for cls, params, config in chosen:
            cached_record(token, config, _conf_dir(cls()), vocab.asv_params(*params), cls.suite)
        return len(chosen)
    counted = (lambda cls: replace(cls.suite, run_progress=progress)) if progress else (lambda cls: cls.suite)
    rounds = max((c.repeat for _, _, c in chosen), default=0) if alternate else 0
    # Round 0 makes the warm-ups (Config.warmup_starts); then the order turns round every round
    # (A B, B A, A B, ...): no point is always first after a warm-up, or always after another.
    for until in range(0 if rounds else 1, rounds + 1):
        turn = chosen if until % 2 or not until else chosen[::-1]
        if until and chosen:
            chosen[0][0].suite.say(f"round {until}/{rounds}: {', '.join(vocab.asv_params(*p[1:3]) for _, p, _ in turn)}")
        for cls, params, config in turn:
            cached_record(token, config, _conf_dir(cls()), vocab.asv_params(*params), counted(cls), until=until)
    done = 0
    for cls, params, _ in chosen:
        bench = cls()
        bench.suite = counted(cls)
        try:
            bench.setup(token, *params)
        except NotImplementedError:
            continue
        done += 1
    return done


def grid_points(pattern: str, states: list[str] | None = None,
                methods: list[str] | None = None) -> list[tuple[type[Startup], tuple[str, ...], Config]]:
    """The grid points of the `Startup` classes in `benchmarks/` whose `module.Class` name matches
    `pattern` that this environment and profile measure, each as (class, asv's parameter values,
    configuration), in the order `measure_first` takes them (`STATE_PRIORITY`); `states` and
    `methods` (asv's labels) keep only those points."""
    bench_dir = Path(__file__).resolve().parent
    points = []
    for module in sorted(f.stem for f in bench_dir.glob("*.py") if f.stem != "__init__"):
        mod = importlib.import_module(f"{__package__}.{module}")
        for name, cls in vars(mod).items():
            if (isinstance(cls, type) and issubclass(cls, Startup) and not inspect.isabstract(cls)
                    and cls.__module__ == mod.__name__ and re.search(pattern, f"{module}.{name}")):
                grid_methods, grid_states = cls.params[1], cls.params[2]
                for engine, method, state, tp in itertools.product(*cls.params):
                    if (states and state not in states) or (methods and method not in methods):
                        continue
                    rank = (-int(tp), method not in METHODS,
                            STATE_PRIORITY.index(state) if state in STATE_PRIORITY else len(STATE_PRIORITY),
                            grid_methods.index(method), grid_states.index(state))
                    points.append((rank, cls, (engine, method, state, tp)))
    chosen = []
    for _, cls, params in sorted(points, key=lambda p: p[0]):
        try:
            chosen.append((cls, params, cls().point(*params)))
        except NotImplementedError:
            continue
    return chosen


def _journalled(token: str, config: Config, conf_dir: Path, suite: Suite) -> int:
    """The cold starts of `config` that run `token` journalled (a record, if there is one, counts its own)."""
    path = records_path(conf_dir, suite)
    if entry := sidecar.find(path, token, config_key(config)):
        return entry.record.runs or 0
    return sum(not run.get("warmup") for run in sidecar.runs(sidecar.journal(path), token, config_key(config)))


def cold_starts_spent(results: Path, token: str) -> list[str]:
    """What run `token` measured, from the sidecars under asv's `results` folder: per
    configuration how its cold starts ended (`stop_reason`) and how many it took, then totals."""
    lines, spent, ends = [], 0, {}
    for path in sidecar.all_files(results):
        for entry in sidecar.read(path):
            rec = entry.record
            if entry.asv_token != token or rec.status == "skipped":
                continue
            # records written before `runs` and `stop_reason` existed lack them
            runs = rec.runs_ok if rec.runs is None else rec.runs
            why = rec.stop_reason or "repeat"
            spent += runs
            ends[why] = ends.get(why, 0) + 1
            lines.append(f"{(entry.asv_params or entry.asv_key).replace(vocab.ASV_SEPARATOR, ' ')}: {rec.status}, "
                         f"{why} after {runs} cold start(s)")
    total = ", ".join(f"{n} {why}" for why, n in sorted(ends.items()))
    open_ = [line.split(":")[0] for line in lines if ", cap after" in line]
    return lines + [f"open at the cap (neither resolved against the reference nor within the precision): "
                    f"{', '.join(open_) or 'none'}",
                    f"run {token}: {len(lines)} configuration(s), {spent} cold starts ({total or 'none'})"]


def records_path(conf_dir: Path, suite: Suite) -> Path:
    """<asv results_dir>/<machine>/records/<commit>-<env>.jsonl (asv ignores files not ending in .json)."""
    conf = json.loads((conf_dir / "asv.conf.json").read_text())
    results = conf_dir / conf.get("results_dir", "results")
    name_of_machine = suite.asv_machine or machine.asv_machine_name()
    return sidecar.path(results, name_of_machine, _commit(conf_dir), _env_name())


def _conf_dir(bench: Grid) -> Path:
    """asv sets ASV_CONF_DIR for the environments it builds, not for `-E existing`: then the
    benchmark module's location tells (benchmarks/ sits next to asv.conf.json)."""
    if "ASV_CONF_DIR" in os.environ:
        return Path(os.environ["ASV_CONF_DIR"])
    return Path(sys.modules[type(bench).__module__].__file__).resolve().parents[1]


def _commit(conf_dir: Path) -> str:
    if os.environ.get("ASV_COMMIT"):
        return os.environ["ASV_COMMIT"]
    out = subprocess.run(["git", "-C", str(conf_dir), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def _env_name() -> str:
    return os.environ.get("ASV_ENV_NAME", "existing")




class Startup(Grid):
    states = parent_states(with_device_states=True)

    def track_status(self, *args: str) -> int:
        return STATUS_CODES[self.record.status]

    track_status.unit = vocab.BENCHMARKS["track_status"][1]

    def track_time_to_ready(self, *args: str) -> dict:
        return self.sample(vocab.TIME_TO_READY)

    track_time_to_ready.unit = vocab.BENCHMARKS["track_time_to_ready"][1]

    def track_teardown(self, *args: str) -> dict:
        return self.sample(vocab.TEARDOWN)

    track_teardown.unit = vocab.BENCHMARKS["track_teardown"][1]

    def track_exec_to_ready(self, *args: str) -> dict:
        """A restart as a user pays it: from the exec of the process restarted to ready."""
        return self.sample(vocab.EXEC_TO_READY)

    track_exec_to_ready.unit = vocab.BENCHMARKS["track_exec_to_ready"][1]


class Phases(Grid):
    """When each start-up phase ended for the slowest rank, in seconds since the start request."""

    # cluster_joined is Ray's only (skipped elsewhere): last, as asv's graphs preselect the first phase
    extra_params = [list(PHASES[1:]) + ["cluster_joined"]]
    extra_param_names = ["phase"]

    def metric(self, phase: str) -> str:
        return vocab.phase(phase)

    def track_phase_end(self, *args: str) -> dict:
        return self.sample(self.metric(args[-1]))

    track_phase_end.unit = vocab.BENCHMARKS["track_phase_end"][1]


class Memory(Grid):
    """Host and GPU memory of each process of the group, and of the whole group, at ready (MiB)."""

    extra_params = [list(vocab.ASV_PROCESSES) + [vocab.rank_label(r) for r in range(max(SUITE.tps))],
                    list(vocab.ASV_MEMORY_KINDS) + ([vocab.GPU_KIND] if SUITE.on_gpu else [])]  # peak RSS: in the record
    extra_param_names = ["process", "kind"]

    def metric(self, process: str, kind: str) -> str:
        return vocab.mem(process, kind)

    def track_memory(self, *args: str) -> dict:
        return self.sample(self.metric(*args[-2:]))

    track_memory.unit = vocab.BENCHMARKS["track_memory"][1]


class Throughput(Grid):
    """Steady-state greedy decoding after warm-up, at fixed batch sizes."""

    extra_params = [[str(b) for b in SUITE.profile.batches]]
    extra_param_names = ["batch"]

    def metric(self, batch: str) -> str:
        return vocab.tokens_per_s(batch)

    def track_tokens_per_s(self, *args: str) -> dict:
        return self.sample(self.metric(args[-1]))

    track_tokens_per_s.unit = vocab.BENCHMARKS["track_tokens_per_s"][1]

    def track_step_latency(self, *args: str) -> dict:
        return self.sample(vocab.step_latency_s(args[-1]))

    track_step_latency.unit = vocab.BENCHMARKS["track_step_latency"][1]

    if SUITE.on_gpu:
        def track_roofline_fraction(self, *args: str) -> dict:
            """Measured tokens/s over the memory-bound ceiling (weight bytes / measured bandwidth)."""
            return self.sample(vocab.roofline_fraction(args[-1]))

        track_roofline_fraction.unit = vocab.BENCHMARKS["track_roofline_fraction"][1]
