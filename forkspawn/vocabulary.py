"""The names of what is measured, and their units, defined once.

A record's `samples` keys, asv's benchmark parameters and the tidy table's `metric` column all
use these names; the harness builds them here and the analysis parses them here. Standard
library only (no torch, no psutil): `analysis` imports this module without the harness's
dependencies.

    time_to_ready_s                 seconds from the first start request to the last rank ready
    exec_to_ready_s                 seconds from the exec of the process a user restarts (our fresh
                                    parent; `vllm serve`'s server) to ready: its interpreter start
                                    and imports (`import vllm`) included
    teardown_s                      seconds to stop the group
    phase.<name>[.rank<r>]          seconds since the start request at which a phase ended
                                    (without a rank: the slowest rank)
    mem.<process>.<kind>_mib        MiB of one process (`parent`, `rank<r>`, a role) or of an
                                    aggregate (`group`: every process, `ray`: Ray's own)
    tokens_per_s.b<batch>           steady-state greedy decoding at a batch size (an engine's:
                                    the median of a cold start's decode windows)
    window_tokens_per_s.b<batch>    an engine's decode windows, each one a sample
    step_latency_s.b<batch>         median decode step
    roofline_fraction.b<batch>      tokens/s over the memory-bound ceiling
    engine.<name>                   an engine's own sizes (vLLM: KV cache, CUDA graphs)
    decode.<process>.<name>         what a process did while an engine decoded (activity.py):
                                    threads, switches, faults, CPU and GC seconds, ...
    bandwidth_gb_s                  device memory bandwidth measured in the same run

The labels of asv's grid are encoded and decoded here too (the harness writes them, the analysis
reads them back): a method label is a start method or a labelled variant of one (`fork-eager`:
fork, variant `eager`), and asv's parent-state value carries torch's CUDA check
(`device-queried-nvml`: device-queried, checked through NVML).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .config import CUDA_CHECKS, METHODS

TIME_TO_READY = "time_to_ready_s"
EXEC_TO_READY = "exec_to_ready_s"
TEARDOWN = "teardown_s"
BANDWIDTH = "bandwidth_gb_s"
STATUS = "status"  # the tidy table's metric of asv's track_status

# The memory kinds of one process, as ProcessMemory fields (and sample-key suffixes): at ready, and
# host memory read again once decoding ended (`after_decode`) and once the parent then ran
# gc.collect() (`after_gc`): a forked child's PSS moves as the parent's copy-on-write pages do.
HOST_KINDS = ("rss_mib", "uss_mib", "pss_mib")
LATER = ("after_decode", "after_gc")
LATER_KINDS = tuple(f"{k.removesuffix('_mib')}_{when}_mib" for when in LATER for k in HOST_KINDS)
MEMORY_KINDS = HOST_KINDS + ("peak_rss_mib", "gpu_mib") + LATER_KINDS
TORCH_RESERVED = "torch_reserved_mib"
GROUP_KINDS = HOST_KINDS + ("gpu_mib",) + LATER_KINDS  # the kinds summed over processes
GROUP, RAY = "group", "ray"  # aggregates: every process of the group; Ray's own processes
RAY_ROLE_PREFIX = "ray-"  # roles of Ray's processes ("ray-raylet", ...)
# asv's Memory benchmark: its process and kind parameters (peak RSS is in the record only)
ASV_PROCESSES = (GROUP, "parent", "forkserver", RAY)
ASV_MEMORY_KINDS = ("uss", "pss", "rss") + tuple(f"pss_{when}" for when in LATER)
GPU_KIND = "gpu"

STATUS_CODES = {"ok": 0, "error": 1, "timeout": 2}  # asv's track_status values

SECONDS, MIB, TOKENS_PER_S, ROOFLINE = "seconds", "MiB", "tokens/s", "fraction of roofline"
STATUS_UNIT = ", ".join(f"{code} {name}" for name, code in STATUS_CODES.items())

# asv benchmark method -> (the record's sample key, a template of the benchmark's extra
# parameters; its unit). The analysis reads asv's results by these.
BENCHMARKS = {
    "track_status": (STATUS, STATUS_UNIT),
    "track_time_to_ready": (TIME_TO_READY, SECONDS),
    "track_exec_to_ready": (EXEC_TO_READY, SECONDS),
    "track_teardown": (TEARDOWN, SECONDS),
    "track_phase_end": ("phase.{phase}", SECONDS),
    "track_memory": ("mem.{process}.{kind}_mib", MIB),
    "track_tokens_per_s": ("tokens_per_s.b{batch}", TOKENS_PER_S),
    "track_step_latency": ("step_latency_s.b{batch}", SECONDS),
    "track_roofline_fraction": ("roofline_fraction.b{batch}", ROOFLINE),
}

# The configuration fields that identify a measured point, in the sidecar's `asv_key` order
CONFIG_PARAMS = ["engine", "method", "parent_state", "cuda_check", "tp"]
ASV_SEPARATOR = "|"

# Regular expressions of the families, for matching whole metric names
MEM_RE = r"mem\.[^.]+\.[a-z_]+_mib"
TOKENS_RE = r"tokens_per_s\.b\d+"
PHASE_RE = r"phase\.[^.]+"


def rank_label(rank: int) -> str:
    return f"rank{rank}"


def phase(name: str, rank: int | None = None) -> str:
    """phase.<name> (the slowest rank) or phase.<name>.rank<r>."""
    return f"phase.{name}" if rank is None else f"phase.{name}.{rank_label(rank)}"


def mem(process: str, kind: str) -> str:
    """mem.<process>.<kind>_mib; `kind` with or without its unit ("uss" or "uss_mib")."""
    return f"mem.{process}.{kind.removesuffix('_mib')}_mib"


def mem_re(process: str = r"[^.]+", kinds: str = r"[a-z_]+") -> str:
    """A regular expression of memory metrics (arguments are regular expressions too)."""
    return rf"mem\.{process}\.{kinds}_mib"


def tokens_per_s(batch: int | str) -> str:
    return f"tokens_per_s.b{batch}"


def window_tokens_per_s(batch: int | str) -> str:
    """Every decode window's tokens/s, pooled over the cold starts (engines/decode.py)."""
    return f"window_tokens_per_s.b{batch}"


def decode_activity(process: str, name: str) -> str:
    """decode.<process>.<name>: one process's activity while an engine decoded (activity.py)."""
    return f"decode.{process}.{name}"


def decode_not_measured(batch: int | str) -> str:
    """How a record's note starts where a batch has no tokens/s (engines/decode.py): the analysis
    finds the reason for the batch's missing metrics by it (`why_absent`)."""
    return f"tokens/s at batch {batch} not measured"


def why_absent(metric: str, notes: Any) -> str | None:
    """The record's note that says why `metric` has no samples, where it has one: a batch's decode
    metrics (tokens/s, step latency, roofline fraction) by `decode_not_measured`."""
    batch = parse(metric).get("batch")
    if batch is None:
        return None
    return next((n for n in notes or () if n.startswith(decode_not_measured(batch))), None)


def step_latency_s(batch: int | str) -> str:
    return f"step_latency_s.b{batch}"


def roofline_fraction(batch: int | str) -> str:
    return f"roofline_fraction.b{batch}"


def engine(name: str) -> str:
    return f"engine.{name}"


def engine_name(metric: str) -> str | None:
    """<name> of engine.<name>; None for other metrics."""
    return metric.removeprefix("engine.") if metric.startswith("engine.") else None


_PARSERS = (
    (re.compile(r"phase\.(?P<phase>[^.]+)(?:\.rank(?P<rank>\d+))?"), "phase"),
    (re.compile(r"mem\.(?P<process>[^.]+)\.(?P<kind>[a-z_]+)_mib"), "mem"),
    (re.compile(r"(?P<family>tokens_per_s|window_tokens_per_s|step_latency_s|roofline_fraction)\.b(?P<batch>\d+)"), None),
    (re.compile(r"engine\.(?P<name>.+)"), "engine"),
    (re.compile(r"decode\.(?P<process>[^.]+)\.(?P<name>.+)"), "decode"),
)


def parse(metric: str) -> dict[str, Any]:
    """A metric's family and parts: {"family": "mem", "process": "rank0", "kind": "uss"}, ...;
    ints for rank and batch. Names outside the vocabulary are their own family."""
    for pattern, family in _PARSERS:
        if m := pattern.fullmatch(metric):
            parts: dict[str, Any] = {k: v for k, v in m.groupdict().items() if v is not None}
            for k in ("rank", "batch"):
                if k in parts:
                    parts[k] = int(parts[k])
            return {"family": family or parts.pop("family"), **parts}
    return {"family": metric}


def config_key(config: Any) -> str:
    """The sidecar's `asv_key` of a configuration (a forkspawn.config.Config):
    engine|method|parent_state|cuda_check|tp[|extra as sorted JSON]."""
    key = ASV_SEPARATOR.join(str(getattr(config, k)) for k in CONFIG_PARAMS)
    return key + (f"{ASV_SEPARATOR}{json.dumps(config.extra, sort_keys=True)}" if config.extra else "")


def asv_params(*values: Any) -> str:
    """asv's own parameter values of one point, joined as the sidecar stores them (`asv_params`)."""
    return ASV_SEPARATOR.join(str(v) for v in values)


# -- the labels of asv's grid ------------------------------------------------------------------------
RUNTIME_CHECK, NVML_CHECK = CUDA_CHECKS  # the default CUDA check first
OVERRIDE = "override"  # the variant that puts back a method the engine would replace (`fork-override`)
_VARIANT = "-"  # method label = <start method>[-<variant>]
# The NVML check changes only the device-queried state, so asv's grid has it as a parent state of its
# own ("device-queried-nvml") rather than as an axis half of whose points would be skipped.
_NVML_STATE = f"-{NVML_CHECK}"


def split_method(label: str) -> tuple[str, str]:
    """(start method, variant) of a method label: fork-eager -> (fork, eager), forkserver-preload ->
    (forkserver-preload, ''), ray-override -> (ray, override). A method the suite does not know is
    the label's first word."""
    method = max((m for m in METHODS if label == m or label.startswith(m + _VARIANT)), key=len, default=None)
    if method is None:
        method = label.split(_VARIANT)[0]
    return method, label[len(method) + len(_VARIANT):]


def join_method(method: str, variant: str = "") -> str:
    """The label of a start method's variant (fork, eager -> fork-eager); the method itself without one."""
    return f"{method}{_VARIANT}{variant}" if variant else method


def base_method(label: str) -> str:
    """The start method behind a method label (fork-eager, fork-override -> fork)."""
    return split_method(label)[0]


def is_override(label: str) -> bool:
    """A labelled override (`fork-override`, `ray-override`): the engine would run another method."""
    return split_method(label)[1] == OVERRIDE


def join_parent(state: str, cuda_check: str = RUNTIME_CHECK) -> str:
    """asv's parent-state value of a parent state and a CUDA check (device-queried, nvml ->
    device-queried-nvml)."""
    return f"{state}{_NVML_STATE}" if cuda_check == NVML_CHECK else state


def split_parent(label: str) -> tuple[str, str]:
    """(parent state, CUDA check) of asv's parent-state value: device-queried-nvml ->
    (device-queried, nvml), torch -> (torch, runtime)."""
    state = label.removesuffix(_NVML_STATE)
    return state, NVML_CHECK if state != label else RUNTIME_CHECK
