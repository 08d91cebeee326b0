"""The results contract: one cold start (`Run`) and one measured configuration (`Record`).

A `Run` is what a fresh parent interpreter observed starting one worker group once. A
`Record` aggregates `repeat` runs of one configuration; its summary fields (medians) are
derived from `samples`, the per-run values of every metric, so each statistic is computed
once, here, with asv's own estimator (`stats.summarize`). docs/formats.md documents every field.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from . import vocabulary as vocab
from .config import Config
from .stats import summarize
from .vocabulary import GROUP_KINDS, MEMORY_KINDS

SCHEMA = "forkspawn.record/3"
# /1 lacks `cold_starts`; its engines' tokens/s samples were every decode window, pooled (no
# committed record has them). /2 lacks what /3 added (docs/formats.md): exec to ready, the
# executor, warm-up starts, memory after decode, when and where each cold start ran, and vLLM's
# import phases (in a /2 record of vLLM, `weights_loaded` includes a spawned process's imports,
# and its executor was `mp` at every TP size). All three are read.
READABLE = ("forkspawn.record/1", "forkspawn.record/2", SCHEMA)


@dataclass
class Phase:
    rank: int
    name: str
    t_s: float  # seconds since the group's first start request, on CLOCK_MONOTONIC


@dataclass
class ProcessMemory:
    role: str  # parent | forkserver | rank | engine-core | server | ... (engine-specific roles)
    rank: int | None
    pid: int
    started_by: str | None  # verified start method of this process (methods.verify.started_by)
    rss_mib: float | None = None
    uss_mib: float | None = None
    pss_mib: float | None = None
    peak_rss_mib: float | None = None  # kernel high-water mark (VmHWM) since exec or fork
    gpu_mib: float | None = None
    gpu_note: str | None = None  # why gpu_mib is null, when it is
    torch_reserved_mib: float | None = None
    # host memory read again after decoding, and after the parent's gc.collect() (vocabulary.LATER)
    rss_after_decode_mib: float | None = None
    uss_after_decode_mib: float | None = None
    pss_after_decode_mib: float | None = None
    rss_after_gc_mib: float | None = None
    uss_after_gc_mib: float | None = None
    pss_after_gc_mib: float | None = None

    @property
    def label(self) -> str:
        return self.role if self.rank is None else vocab.rank_label(self.rank)


@dataclass
class Run:
    """One cold start of one worker group, as observed by its parent."""

    status: str = "ok"
    error: str | None = None  # one line, the cause first (an exception's `Type: message`), then where
    traceback: str | None = None  # the full traceback behind `error`, where there was one
    method_used: str | None = None
    parent_state: dict[str, Any] = field(default_factory=dict)
    forkserver: dict[str, Any] | None = None
    phases: list[Phase] = field(default_factory=list)
    time_to_ready_s: float | None = None
    # from the exec of the process a user restarts (our fresh parent: interpreter start, the
    # parent state, `import vllm`; `vllm serve`'s server) to ready (clock.since_exec)
    exec_to_ready_s: float | None = None
    teardown_s: float | None = None
    executor: str | None = None  # the engine's executor as it ran (vLLM: uni, mp, ray)
    warmup: bool = False  # an uncounted first start of its configuration (Config.warmup_starts)
    started_at: str | None = None  # UTC wall clock at the start request of the fresh parent (ISO 8601)
    host: dict[str, Any] | None = None  # where it ran: machine.host_id() (boot id, hostname, GPU UUIDs)
    # the longest silences in the engine's log before ready: [seconds, line before, line after]
    log_gaps: list[list[Any]] = field(default_factory=list)
    # files the start wrote into each compile or JIT cache: {cache: {"files": n, "mib": x}}
    cache_writes: dict[str, dict[str, float]] = field(default_factory=dict)
    processes: list[ProcessMemory] = field(default_factory=list)
    tokens_per_s: dict[int, float] = field(default_factory=dict)
    step_latency_s: dict[int, float] = field(default_factory=dict)  # median decode step
    # an engine's decode windows (engines/decode.py): the tokens/s of each; tokens_per_s is their median
    decode_windows: dict[int, list[float]] = field(default_factory=dict)
    window_step_ms: dict[int, list[list[float]]] = field(default_factory=dict)  # per window: p10, p50, p90 step
    # per process label: what it did while the decode windows ran (activity.during)
    decode_diagnostics: dict[str, dict[str, Any]] = field(default_factory=dict)
    engine_version: str | None = None
    output_digest: str | None = None  # hash of the greedy tokens generated during warm-up
    bandwidth_gb_s: float | None = None  # device memory bandwidth measured in the same run (GPU)
    weight_bytes: int | None = None  # bytes of weights one rank reads per decode step
    roofline_tokens_per_s: dict[int, float] = field(default_factory=dict)  # batch * bandwidth / weight_bytes
    checkpoint_resident: float | None = None  # fraction of the checkpoint in the page cache at the start request
    engine_metrics: dict[str, float] = field(default_factory=dict)  # an engine's own sizes (vLLM: KV cache, CUDA graphs)
    notes: list[str] = field(default_factory=list)

    def fail(self, status: str, error: str, traceback: str | None = None) -> "Run":
        if self.status == "ok":  # keep the first failure: later ones are usually its consequences
            self.status, self.error, self.traceback = status, error, traceback
        return self

    def values(self) -> dict[str, float]:
        """Every metric of this run as `name -> value`; names are the record's sample keys."""
        out: dict[str, float] = {}
        if self.time_to_ready_s is not None:
            out[vocab.TIME_TO_READY] = self.time_to_ready_s
        if self.exec_to_ready_s is not None:
            out[vocab.EXEC_TO_READY] = self.exec_to_ready_s
        if self.teardown_s is not None:
            out[vocab.TEARDOWN] = self.teardown_s
        slowest: dict[str, float] = {}
        for p in self.phases:
            out[vocab.phase(p.name, p.rank)] = p.t_s
            slowest[p.name] = max(slowest.get(p.name, p.t_s), p.t_s)
        out.update({vocab.phase(name): t for name, t in slowest.items()})
        for proc in self.processes:
            for kind in MEMORY_KINDS + (vocab.TORCH_RESERVED,):
                value = getattr(proc, kind)
                if value is not None:
                    out[vocab.mem(proc.label, kind)] = value
        for kind in GROUP_KINDS:
            vals = [getattr(p, kind) for p in self.processes]
            if vals and all(x is not None for x in vals):
                out[vocab.mem(vocab.GROUP, kind)] = sum(vals)
            # Ray's own processes (roles "ray-..."), together: what Ray adds to the group
            ray = [getattr(p, kind) for p in self.processes if p.role.startswith(vocab.RAY_ROLE_PREFIX)]
            if ray and all(x is not None for x in ray):
                out[vocab.mem(vocab.RAY, kind)] = sum(ray)
        for b, x in self.tokens_per_s.items():
            out[vocab.tokens_per_s(b)] = x
        for b, x in self.step_latency_s.items():
            out[vocab.step_latency_s(b)] = x
        for b, x in self.roofline_tokens_per_s.items():
            out[vocab.roofline_fraction(b)] = self.tokens_per_s[b] / x
        if self.bandwidth_gb_s is not None:
            out[vocab.BANDWIDTH] = self.bandwidth_gb_s
        out.update({vocab.engine(name): x for name, x in self.engine_metrics.items()})
        for label, seen in self.decode_diagnostics.items():
            for name, x in (seen or {}).items():
                if name == "gc_collections" and x is not None:
                    x = sum(x)
                if isinstance(x, (int, float)) and not isinstance(x, bool):
                    out[vocab.decode_activity(label, name)] = x
        return out

    def cold_start(self) -> dict[str, Any]:
        """What the record keeps of this cold start on its own (`Record.cold_starts`, `Record.warmups`)."""
        return {"status": self.status, "error": self.error, "method_used": self.method_used,
                "started_at": self.started_at, "host": self.host, "executor": self.executor,
                "time_to_ready_s": self.time_to_ready_s, "exec_to_ready_s": self.exec_to_ready_s,
                "teardown_s": self.teardown_s,
                "phases": {vocab.phase(p.name, p.rank): p.t_s for p in self.phases},
                "log_gaps": self.log_gaps, "cache_writes": self.cache_writes,
                "tokens_per_s": {str(b): x for b, x in self.tokens_per_s.items()},
                "decode_windows": {str(b): x for b, x in self.decode_windows.items()},
                "window_step_ms": {str(b): x for b, x in self.window_step_ms.items()},
                "decode_diagnostics": self.decode_diagnostics}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Run":
        d = dict(d)  # runs written before a field existed get its default (e.g. `traceback`)
        d["phases"] = [Phase(**p) for p in d.get("phases", [])]
        d["processes"] = [ProcessMemory(**p) for p in d.get("processes", [])]
        for key in ("tokens_per_s", "step_latency_s", "roofline_tokens_per_s", "decode_windows", "window_step_ms"):
            d[key] = {int(k): v for k, v in d.get(key, {}).items()}
        return cls(**d)


class SchemaError(ValueError):
    """A record of another schema than this harness writes; the message is one line."""


@dataclass(frozen=True)
class Record:
    """What `forkspawn measure --json` prints for one configuration (docs/formats.md, "The record").

    The fields are the JSON's keys, in its order; `to_dict` is the JSON object and `from_dict`
    reads it back unchanged. Frozen: a record is a measurement, read and passed on, never edited
    (the asv sidecar keeps its join tags beside it: sidecar.Entry)."""

    status: str
    error: str | None = None
    traceback: str | None = None
    engine: str | None = None
    engine_version: str | None = None
    method: str | None = None
    method_used: str | None = None
    parent_state: str | None = None  # verified; what was asked is in `config`
    parent_state_detail: dict[str, Any] | None = None
    cuda_check: str | None = None
    forkserver: dict[str, Any] | None = None
    tp: int | None = None
    model: str | None = None
    model_params: int | None = None  # the model's parameters, from its config (checkpoint.ModelSpec.param_count)
    batches: list[int] | None = None
    repeat: int | None = None
    runs: int | None = None
    runs_ok: int | None = None
    stop_reason: str | None = None
    time_to_ready_s: float | None = None  # medians, as are the memory and throughput figures
    exec_to_ready_s: float | None = None
    teardown_s: float | None = None
    executor: str | None = None  # the engine's executor as it ran ("mixed" if cold starts differ)
    phases: list[dict[str, Any]] | None = None
    processes: list[dict[str, Any]] | None = None
    group: dict[str, float | None] | None = None
    engine_metrics: dict[str, float] | None = None
    gpu_used_mib: dict[str, float | None] | None = None
    output_digest: str | None = None
    page_cache: dict[str, Any] | None = None
    tokens_per_s: dict[str, float | None] | None = None
    step_latency_s: dict[str, float | None] | None = None
    roofline: dict[str, Any] | None = None
    stats: dict[str, dict[str, Any]] | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)  # per cold start: what asv stores
    cold_starts: list[dict[str, Any]] | None = None  # each cold start on its own (Run.cold_start), in order
    warmups: list[dict[str, Any]] | None = None  # the uncounted first starts (Run.cold_start), in order
    notes: list[str] | None = None
    config: dict[str, Any] | None = None
    machine: dict[str, Any] | None = None
    versions: dict[str, Any] | None = None
    schema: str = SCHEMA
    # Fields a record written before they existed lacks: to_dict leaves them out again, so that
    # reading and writing a record changes nothing in it.
    absent: frozenset[str] = field(default=frozenset(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: `schema` first, then the fields in order."""
        return {"schema": self.schema, **{name: getattr(self, name) for name in _FIELDS if name not in self.absent}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Record":
        """The record of a JSON object; SchemaError if it names no schema or another than
        `SCHEMA`, or has a key that is none of the record's."""
        check_schema(d)
        if unknown := [k for k in d if k not in _FIELDS and k != "schema"]:
            raise SchemaError(f"record keys {', '.join(unknown)} are not in {SCHEMA!r}")
        return cls(**d, absent=frozenset(k for k in _FIELDS if k not in d))


_FIELDS = tuple(f.name for f in fields(Record) if f.name not in ("schema", "absent"))


def check_schema(d: Any) -> dict[str, Any]:
    """`d` itself if it is a record of the schema this harness writes; else SchemaError."""
    if not isinstance(d, dict):
        raise TypeError("a record is a JSON object")
    if "schema" not in d:
        raise SchemaError(f"a record without a schema; this reads {SCHEMA!r}")
    if d["schema"] not in READABLE:
        raise SchemaError(f"record schema {d['schema']!r}; this reads {' and '.join(map(repr, READABLE))}")
    return d


def build_record(config: Config, runs: list[Run], machine: dict, versions: dict,
                 stop_reason: str = "repeat", gpu_used_mib: dict | None = None,
                 model_params: int | None = None, warmups: list[Run] = ()) -> "Record":
    """Aggregate the runs of one configuration into its `forkspawn measure --json` record;
    `warmups`, its uncounted first starts, are kept apart (no sample, no median comes from them)."""
    failed = next((r for r in runs if r.status != "ok"), None)
    last = runs[-1] if runs else Run(status="error", error="no run was made")
    ok_runs = [r for r in runs if r.status == "ok"]
    samples: dict[str, list[float]] = {}
    for r in ok_runs:
        for k, v in r.values().items():
            samples.setdefault(k, []).append(v)
    _pool_decode_windows(samples, ok_runs)
    median = {k: statistics.median(v) for k, v in samples.items()}
    used = {r.method_used for r in runs if r.method_used}
    executors = {r.executor for r in runs if r.executor}
    template = ok_runs[-1] if ok_runs else last
    return Record(
        status=failed.status if failed else "ok",
        error=failed.error if failed else None,
        traceback=failed.traceback if failed else None,
        engine=config.engine,
        engine_version=last.engine_version,
        method=config.method,
        method_used=used.pop() if len(used) == 1 else ("mixed" if used else None),
        parent_state=last.parent_state.get("verified", config.parent_state),
        parent_state_detail=last.parent_state,
        cuda_check=config.cuda_check,
        forkserver=last.forkserver,
        tp=config.tp,
        model=config.model,
        model_params=model_params,
        batches=list(config.batches),
        repeat=config.repeat,
        runs=len(runs),
        runs_ok=len(ok_runs),
        stop_reason=stop_reason,
        time_to_ready_s=median.get(vocab.TIME_TO_READY),
        exec_to_ready_s=median.get(vocab.EXEC_TO_READY),
        teardown_s=median.get(vocab.TEARDOWN),
        executor=executors.pop() if len(executors) == 1 else ("mixed" if executors else None),
        phases=[
            {"rank": p.rank, "name": p.name, "t_s": median[vocab.phase(p.name, p.rank)]}
            for p in template.phases
            if vocab.phase(p.name, p.rank) in median
        ],
        processes=[
            {
                "role": p.role,
                "rank": p.rank,
                "pid": p.pid,
                "started_by": p.started_by,
                **{k: median.get(vocab.mem(p.label, k)) for k in MEMORY_KINDS},
                "gpu_note": p.gpu_note,
                "torch_reserved_mib": median.get(vocab.mem(p.label, vocab.TORCH_RESERVED)),
            }
            for p in template.processes
        ],
        group={k: median.get(vocab.mem(vocab.GROUP, k)) for k in GROUP_KINDS},
        engine_metrics={vocab.engine_name(k): x for k, x in median.items() if vocab.engine_name(k) is not None},
        gpu_used_mib=gpu_used_mib or {"before": None, "after": None},
        output_digest=template.output_digest,
        page_cache=_page_cache(runs),
        tokens_per_s={str(b): median.get(vocab.tokens_per_s(b)) for b in config.batches},
        step_latency_s={str(b): median.get(vocab.step_latency_s(b)) for b in config.batches},
        roofline={
            "bandwidth_gb_s": median.get(vocab.BANDWIDTH),
            "weight_bytes": template.weight_bytes,
            "fraction": {str(b): median.get(vocab.roofline_fraction(b)) for b in config.batches},
        },
        stats={k: summarize(v) for k, v in samples.items()},
        samples=samples,
        cold_starts=[r.cold_start() for r in runs],
        warmups=[r.cold_start() for r in warmups],
        notes=sorted({n for r in runs for n in r.notes}),
        config=json.loads(config.to_json()),
        machine=machine,
        versions=versions,
    )


def _pool_decode_windows(samples: dict[str, list[float]], ok_runs: list[Run]) -> None:
    """Where the runs timed decode windows, every window of every cold start, pooled, beside the
    cold starts' own rates (`tokens_per_s`, the median of each start's windows): the spread of the
    pool is mostly within a cold start, so it is no interval of the rate across cold starts."""
    for b in sorted({b for r in ok_runs for b in r.decode_windows}):
        samples[vocab.window_tokens_per_s(b)] = [x for r in ok_runs for x in r.decode_windows.get(b, [])]


def _page_cache(runs: list[Run]) -> dict[str, Any]:
    """The checkpoint's page-cache residency before the coldest start; warm means all of it cached."""
    seen = [r.checkpoint_resident for r in runs if r.checkpoint_resident is not None]
    least = min(seen) if seen else None
    return {"checkpoint_resident_min": least, "warm": None if least is None else least >= 0.99}
