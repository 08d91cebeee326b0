"""asv's results (plus our JSON Lines sidecar of full records) -> one tidy pandas table.

Every `<machine>/machine.json` found below the directory marks an asv machine folder: its result
files (read by `asvresults`, in asv's terms) hold the numbers, `records/*.jsonl` (read by
`forkspawn.sidecar`) the `forkspawn measure` records with what asv cannot store (status, error
text, verified method, versions). Here each point of asv's grid becomes a row: its parameters
named, asv's labels decoded (`forkspawn.vocabulary`), its record joined. Benchmarks are recognised
by their shape (class-name suffix and method name), not their module, so new engines appear by
themselves.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from forkspawn import sidecar
from forkspawn import vocabulary as vocab
from forkspawn.config import METHODS
from forkspawn.record import SCHEMA, Record

from . import asvresults, models
from .asvresults import BadInput

CONFIG_PARAMS = vocab.CONFIG_PARAMS  # the sidecar's asv_key order
# The grid's own parameters, newest first: since the CUDA check became a parent state
# ("device-queried-nvml") it is no longer a parameter of its own.
GRID_PARAMS = (["engine", "method", "parent_state", "tp"], CONFIG_PARAMS)
# Class-name suffix -> the parameters its benchmarks add after the configuration's.
SHAPES = {"Startup": [], "Phases": ["phase"], "Memory": ["process", "kind"], "Throughput": ["batch"]}
# Benchmark method -> (the record's sample key, formatted with the extra parameters; unit)
METRICS = vocab.BENCHMARKS
# The contract's columns, in order (docs/formats.md, "The tidy table", documents them).
COLUMNS = [
    "machine", "gpu", "commit", "env", "date", "engine", "engine_version", "method", "method_used",
    "parent_state", "cuda_check", "tp", "batch", "phase", "process", "kind", "metric", "value", "unit",
    "ci_low", "ci_high", "q25", "q75", "n", "status", "error", "benchmark", "gpu_count", "num_cpu", "asv_machine",
    "engine_metrics", "model", "model_params", "executor",
]
# One row per measured configuration, with its whole record (per-cold-start samples the table's
# medians come from): what needs more than asv's median and interval reads these (analysis.parity).
RECORD_COLUMNS = ["machine", "commit", "env", "date", "engine", "model", "method", "method_used", "parent_state",
                  "cuda_check", "tp", "status", "record", "executor"]
# Engines that run vLLM's executors. Before record/3 a record did not name the executor: the vLLM
# adapters passed `mp` at every TP size (`ray` for the ray method), so that is what ran.
VLLM_ENGINES = ("vllm", "vllm-serve")
LEGACY_EXECUTOR = "the adapter's fixed choice before record/3"
MACHINE_COLUMNS = [
    "machine", "commit", "env", "date", "engine", "engine_version", "gpu", "gpu_count", "gpu_memory_mib",
    "gpu_driver", "cpu", "num_cpu", "ram_gib", "os", "versions",
]


@dataclass
class Results:
    table: pd.DataFrame  # one row per measured value (COLUMNS)
    machines: pd.DataFrame  # one row per machine, commit, environment and engine (MACHINE_COLUMNS)
    records: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=RECORD_COLUMNS))  # RECORD_COLUMNS
    files: list[Path] = field(default_factory=list)  # every file read, for copying next to a report
    root: Path = Path(".")


def load(directory: str | Path) -> Results:
    """Read every asv result file below `directory`; raise BadInput on anything unusable."""
    root = Path(directory)
    if not root.is_dir():
        raise BadInput(f"{root}: no such directory")
    rows: list[dict[str, Any]] = []
    machines: list[dict[str, Any]] = []
    measured: list[dict[str, Any]] = []
    files: list[Path] = []
    for folder in asvresults.machine_folders(root):
        meta, meta_file = asvresults.benchmarks(folder)
        records, record_files = _read_records(folder)
        files += [folder / asvresults.MACHINE_FILE] + ([meta_file] if meta_file else []) + record_files
        for path in asvresults.result_files(folder):
            files.append(path)
            new_rows, new_machines, new_measured = _from_result(asvresults.read(path, meta, select=_ours), records)
            rows += new_rows
            machines += new_machines
            measured += new_measured
    if not files:
        raise BadInput(f"{root}: no asv results below it (expected <machine>/machine.json and result files)")
    if not rows:
        raise BadInput(f"{root}: asv folders found but no results in them ({len(files)} files read)")
    table, names = _table(rows)
    return Results(table=table, machines=_machines(machines, names), records=_measured(measured, names),
                   files=list(dict.fromkeys(files)), root=root)


def _table(rows: list[dict[str, Any]]) -> tuple[pd.DataFrame, dict[tuple, str]]:
    """The tidy table of every result file's rows, and the names shown for machines that share an
    asv name (`_distinct_machine_names`)."""
    table = pd.DataFrame(rows, columns=COLUMNS)
    # One folder may hold the same results twice (a copy of asv's folder inside it): one row each.
    table = table.drop_duplicates(ignore_index=True)
    names = _distinct_machine_names(table)
    table["machine"] = _renamed(names, table["asv_machine"], table["gpu_count"], table["num_cpu"], table["machine"])
    # Skipped configurations have no record, hence no version or model: take the environment's, and
    # for the model the engine's on that machine where the environment measured nothing (a model
    # missing from some rows would split one configuration in two for `latest`).
    for column, groups in (("engine_version", [["machine", "commit", "env", "engine"]]),
                           ("model", [["machine", "commit", "env", "engine"], ["machine", "engine"], ["machine"]])):
        for by in groups:
            table[column] = table[column].fillna(table.groupby(by, dropna=False)[column].transform("first"))
    sizes = {m: models.of(m) for m in table["model"].dropna().unique()}
    table["model_params"] = [sizes[m].params if m in sizes else None for m in table["model"]]
    table = table.astype({"tp": "Int64", "batch": "Int64", "n": "Int64", "value": "float64", "gpu_count": "Int64",
                          "num_cpu": "Int64", "model_params": "float64"})
    return table, names


def _machines(machines: list[dict[str, Any]], names: dict[tuple, str]) -> pd.DataFrame:
    mtable = pd.DataFrame(machines, columns=MACHINE_COLUMNS)
    mtable["machine"] = _renamed(names, mtable["machine"], mtable["gpu_count"], mtable["num_cpu"])
    return mtable.drop_duplicates(["machine", "commit", "env", "engine"], keep="last").reset_index(drop=True)


def _measured(measured: list[dict[str, Any]], names: dict[tuple, str]) -> pd.DataFrame:
    rtable = pd.DataFrame(measured, columns=RECORD_COLUMNS + ["gpu_count", "num_cpu"]).astype({"tp": "Int64"})
    rtable["machine"] = _renamed(names, rtable["machine"], rtable.pop("gpu_count"), rtable.pop("num_cpu"))
    return rtable.drop_duplicates(["machine", "commit", "env", "engine", "model", "method", "parent_state",
                                   "cuda_check", "tp"], keep="last").reset_index(drop=True)


def _renamed(names: dict[tuple, str], machine: pd.Series, gpus: pd.Series, cpus: pd.Series,
             shown: pd.Series | None = None) -> list[str]:
    """Each row's machine as shown: its entry in `names` by (asv name, GPU count, CPU count), else
    `shown` (default: the asv name)."""
    shown = machine if shown is None else shown
    return [names.get(k, s) for k, s in zip(zip(machine, gpus, cpus), shown)]


def _distinct_machine_names(table: pd.DataFrame) -> dict[tuple, str]:
    """(asv name, GPU count, CPU count) -> the name to show, for asv names that several hosts share.
    Results before the machine name carried the counts (`vm-NVIDIA-H100-80GB-HBM3` for both a 1-
    and a 2-GPU host) get today's name (`vm-1xNVIDIA-H100-80GB-HBM3-16cpu`) when they meet."""
    keys = table[["asv_machine", "gpu_count", "num_cpu", "gpu"]].drop_duplicates(["asv_machine", "gpu_count", "num_cpu"])
    shared = keys["asv_machine"].value_counts()
    out = {}
    for name, gpus, cpus, gpu in keys.itertuples(index=False):
        if shared[name] < 2 or re.search(r"-\d+cpu$", name):
            continue
        model = re.sub(r"[^A-Za-z0-9]+", "-", str(gpu)).strip("-")
        if gpus and name.endswith(f"-{model}"):
            out[(name, gpus, cpus)] = f"{name[:-len(model)]}{gpus}x{model}-{cpus}cpu"
        else:
            out[(name, gpus, cpus)] = f"{name}-{gpus}gpu-{cpus}cpu" if gpus else f"{name}-{cpus}cpu"
    return out


def table(directory: str | Path) -> pd.DataFrame:
    return load(directory).table


# A configuration of one machine and environment: `latest` picks one commit per such key.
CONFIG_KEY = ["machine", "env", "engine", "model", "method", "parent_state", "cuda_check", "tp"]
# A derived view's column of the method asked for (derive.view: its `method` names the method that ran)
ASKED = "asked"
# asv named an `existing` environment after its interpreter's absolute path; `make bench` names it
# after the path in the project (forkspawn/tools/asvenv.py): the venv's folder is what both share
_ENV_PATH = re.compile(r"(existing-py)_(?:.*_)?([^_]+_bin_python[\d.]*)")


def env_key(env: str) -> str:
    """An asv environment's name without the machine's path of its interpreter, so that results of
    one environment from any checkout, old or new, are one environment:
    existing-py_work_main_.venv_bin_python -> existing-py_.venv_bin_python (unchanged)."""
    m = _ENV_PATH.fullmatch(str(env))
    return f"{m.group(1)}_{m.group(2)}" if m else env


def latest(df: pd.DataFrame, key: list[str] = CONFIG_KEY) -> pd.DataFrame:
    """Per configuration (`key`), the rows of the newest commit that measured it, or of the
    newest commit if none did (what charts and summaries show).

    A GPU lease measures a grid in parts, so a newer commit that skipped a point (not measured in
    that run) does not hide the older measurement of it; each row keeps its `commit` and `env`.
    Environments are told apart by `env_key`: the same venv in another checkout is the same one.
    A configuration's method is the one asked for, also in a derived view (`ASKED`), where one
    asked method may have run as another in some commit.
    """
    columns = [ASKED if c == "method" and ASKED in df else c for c in key]
    keys = df[columns].set_axis(key, axis=1).map(lambda v: "" if pd.isna(v) else str(v))  # missing values are keys too
    if "env" in key:
        keys["env"] = keys["env"].map(env_key)
    measured = df["date"].where(df["status"] != "skipped")
    best = measured.groupby([keys[c] for c in key]).transform("max")
    best = best.fillna(df["date"].groupby([keys[c] for c in key]).transform("max"))
    return df[df["date"] == best]


def method_order(methods: Any) -> list[str]:
    """Known start methods in their usual order, then any others (e.g. a Ray launch path)."""
    present = list(dict.fromkeys(m for m in methods if isinstance(m, str)))
    return [m for m in METHODS if m in present] + sorted(m for m in present if m not in METHODS)


def _read_records(machine_dir: Path) -> tuple[dict[tuple, dict[str, Record]], list[Path]]:
    """(commit, key) -> {asv env -> record}; a later line for the same key wins. A record is found
    by each of its entry's `keys()` (asv_key engine|method|parent_state|cuda_check|tp[|extra], and
    asv_params if the harness wrote them)."""
    out: dict[tuple, dict[str, Record]] = {}
    paths = sidecar.files(machine_dir)
    for path in paths:
        try:
            for entry in sidecar.read(path):
                for key in entry.keys():
                    out.setdefault((entry.asv_commit, key), {})[entry.asv_env or ""] = entry.record
        except sidecar.BadLine as e:
            raise BadInput(str(e)) from None
    return out, paths


def _record_for(records: dict, commit: str, env: str, key: str) -> Record | None:
    """The record of one configuration. The sidecar names an `existing` environment by its
    type only ("existing"), asv by type and interpreter ("existing-py_..."): a prefix matches."""
    by_env = records.get((commit, key), {})
    if env in by_env:
        return by_env[env]
    return next((r for e, r in reversed(by_env.items()) if env.startswith(e + "-") or not e), None)


def _from_result(result: asvresults.ResultFile, records: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """One result file's tidy rows, its machine's rows (one per engine) and the configurations it
    measured (RECORD_COLUMNS), each point joined to its record."""
    rows, by_engine, configs = [], {}, {}
    for bench in result.benchmarks:
        suffix, meth = _shape(bench.name)
        names = bench.param_names or _grid_names(result, bench, suffix)
        template, unit = METRICS.get(meth, (meth.removeprefix("track_"), None))
        for point in bench.points:
            p, label, key = _parameters(names, point.params, len(names) - len(SHAPES[suffix]))
            rec = (_record_for(records, result.commit, result.env, label)
                   or _record_for(records, result.commit, result.env, key))
            rows.append(_row(result, bench.name, p, _metric(meth, template, p), bench.unit or unit, point, rec))
            if rec and (rec.engine_version or p.get("engine") not in by_engine):
                by_engine[p.get("engine")] = rec  # prefer a record that knows the engine's version
            if rec and rec.status != "skipped":
                configs[label] = _configuration(result, p, rec)
    machines = [_machine_row(result, engine, rec) for engine, rec in by_engine.items()]
    return rows, machines, list(configs.values())


def _grid_names(result: asvresults.ResultFile, bench: asvresults.Benchmark, suffix: str) -> list[str]:
    """A benchmark's parameter names where benchmarks.json does not give them: our grid's, by count."""
    extra = SHAPES[suffix]
    grid = next((g for g in GRID_PARAMS if len(g) + len(extra) == len(bench.params)), None)
    if grid is None:
        raise BadInput(f"{result.path}: {bench.name} has {len(bench.params)} parameters, as no grid of this suite "
                       f"has, and benchmarks.json does not name them")
    return grid + extra


def _parameters(names: list[str], values: tuple, configuration: int) -> tuple[dict[str, Any], str, str]:
    """A point's parameters by name, asv's parent-state value decoded into parent_state and
    cuda_check (results from before the check was a state have it as a parameter of its own); and
    the two keys its record may be found by: asv's values of the configuration's parameters (the
    first `configuration` names: the sidecar's asv_params) and the sidecar's asv_key."""
    p = dict(zip(names, values))
    label = vocab.asv_params(*(p[k] for k in names[:configuration]))
    state, check = vocab.split_parent(str(p.get("parent_state")))
    p["cuda_check"] = p.get("cuda_check") or check
    p["parent_state"] = state
    return p, label, vocab.asv_params(*(p.get(k) for k in CONFIG_PARAMS))


def _metric(meth: str, template: str, p: dict[str, Any]) -> str:
    """The sample key of a point: the vocabulary's for its benchmark method; a benchmark the
    vocabulary does not name is its method with its extra parameters."""
    metric = template.format_map(_Blank(p)) if "{" in template else template
    if meth not in METRICS:
        metric = ".".join([metric] + [str(v) for k, v in p.items() if k not in CONFIG_PARAMS])
    return metric


def _row(result: asvresults.ResultFile, benchmark: str, p: dict[str, Any], metric: str, unit: str | None,
         point: asvresults.Point, rec: Record | None) -> dict[str, Any]:
    """One row of the tidy table (COLUMNS)."""
    value, stats = point.value, point.stats
    status, error = _status(value, rec, metric)
    measured = status == "ok" and value is not None
    return {
        "machine": result.machine, "gpu": result.params.get("gpu", "none"), "commit": result.commit,
        "env": result.env, "date": result.date, "engine": p.get("engine"),
        "engine_version": rec.engine_version if rec else None,
        "method": p.get("method"), "method_used": rec.method_used if rec else None,
        "parent_state": p.get("parent_state"), "cuda_check": p.get("cuda_check"),
        "tp": _int(p.get("tp")), "batch": _int(p.get("batch")), "phase": p.get("phase"),
        "process": p.get("process"), "kind": p.get("kind"), "metric": metric,
        "value": value if isinstance(value, (int, float)) and not _nan(value) else None,
        "unit": unit,
        "ci_low": _finite(stats["ci_99_a"]) if measured else None,
        "ci_high": _finite(stats["ci_99_b"]) if measured else None,
        "q25": stats["q_25"] if measured else None,
        "q75": stats["q_75"] if measured else None,
        "n": stats["repeat"] if measured else None,
        "status": status, "error": error, "benchmark": benchmark,
        "gpu_count": _int(result.params.get("gpu_count")) or 0, "num_cpu": _int(result.params.get("num_cpu")),
        "asv_machine": result.machine,
        # the record's engine sizes (vLLM: KV cache MiB and tokens, CUDA graphs), as JSON text
        "engine_metrics": json.dumps(rec.engine_metrics, sort_keys=True) if rec and rec.engine_metrics else None,
        "model": rec.model if rec else None, "model_params": None,  # sized once, in _table
        "executor": executor_of(rec, p.get("engine"), p.get("method")),
    }


def _configuration(result: asvresults.ResultFile, p: dict[str, Any], rec: Record) -> dict[str, Any]:
    """A measured configuration with its record (RECORD_COLUMNS, and the counts that tell machines apart)."""
    return {"machine": result.machine, "commit": result.commit, "env": result.env, "date": result.date,
            "engine": p.get("engine"), "model": rec.model, "method": p.get("method"),
            "method_used": rec.method_used, "parent_state": p.get("parent_state"),
            "cuda_check": p.get("cuda_check"), "tp": _int(p.get("tp")), "status": rec.status, "record": rec,
            "executor": executor_of(rec, p.get("engine"), p.get("method")),
            "gpu_count": _int(result.params.get("gpu_count")) or 0, "num_cpu": _int(result.params.get("num_cpu"))}


def executor_of(rec: Record | None, engine: Any, method: Any) -> str | None:
    """The engine's executor as it ran (vLLM: `uni`, `mp`, `ray`, or "mixed" across cold starts):
    the record's; for a vLLM record from before record/3, which did not name it, the one the
    adapter always passed (LEGACY_EXECUTOR); None for an engine without one or no record."""
    if rec is None or rec.status == "skipped":
        return None
    if rec.executor:
        return rec.executor
    if is_legacy(rec) and engine in VLLM_ENGINES:
        return "ray" if isinstance(method, str) and vocab.base_method(method) == "ray" else "mp"
    return None


def is_legacy(rec: Record) -> bool:
    """A record from before record/3: no exec to ready, executor, warm-ups, import phases, leases."""
    return rec.schema != SCHEMA


def _status(value: Any, rec: Record | None, metric: str) -> tuple[str, str | None]:
    """A row's status: its configuration's, refined by what asv stored for this metric.
    asv stores NaN for a skipped benchmark and null for a failed one."""
    if rec is not None and rec.status != "ok":
        return rec.status, rec.error
    # a metric an ok record lacks: its notes may say why (a batch whose tokens/s was not measured)
    note = vocab.why_absent(metric, rec.notes) if rec is not None and metric not in rec.samples else None
    if value is None:
        if rec is not None and metric != vocab.STATUS and metric not in rec.samples:
            return "skipped", note or f"{metric} does not exist in this configuration"
        return "error", "asv recorded this benchmark as failed; its output is in asv's log"
    if _nan(value):
        # no record: asv skipped it before measuring (a profile's choice, a point that cannot exist
        # here, or one a run cut short never reached, FORKSPAWN_RECORDED_ONLY)
        return "skipped", note or (rec.error if rec else None) or "not measured in this run (left out, not applicable here, or not reached)"
    return "ok", None


def _machine_row(result: asvresults.ResultFile, engine: str, rec: Record) -> dict[str, Any]:
    params, m, versions = result.params, rec.machine or {}, rec.versions or {}
    return {
        "machine": result.machine, "commit": result.commit, "env": result.env, "date": result.date, "engine": engine,
        "engine_version": rec.engine_version, "gpu": params.get("gpu", "none"),
        "gpu_count": _int(params.get("gpu_count")) or 0, "gpu_memory_mib": m.get("gpu_memory_mib"),
        "gpu_driver": params.get("gpu_driver"), "cpu": params.get("cpu"), "num_cpu": _int(params.get("num_cpu")),
        "ram_gib": m.get("ram_gib") or _gib(params.get("ram")), "os": params.get("os"),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items() if v),
    }


def _shape(name: str) -> tuple[str, str] | None:
    """(class-name suffix, benchmark method) of one of our benchmarks; None for any other."""
    parts = name.split(".")
    if len(parts) < 2:
        return None
    cls, meth = parts[-2], parts[-1]
    suffix = next((s for s in SHAPES if cls.endswith(s)), None)
    return (suffix, meth) if suffix and meth.startswith("track_") else None


def _ours(name: str) -> bool:
    return _shape(name) is not None


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _gib(ram: Any) -> float | None:
    try:
        return float(str(ram).split()[0])
    except (ValueError, IndexError):
        return None


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _finite(v: Any) -> float | None:
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None
