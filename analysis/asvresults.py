"""asv's results folder as asv 0.6 writes it (result format version 2), read in asv's own terms.

    <results>/benchmarks.json                every benchmark's parameter names and unit
    <results>/<machine>/machine.json          marks a machine folder (its parameters are in each result file too)
    <results>/<machine>/<commit>-<env>.json   one run: per benchmark its parameters' values, and per combination
                                              of them the result and its statistics

The one module that reads asv's files, as asv's own `asv/results.py` owns its format: `load` builds
the tidy table from what it returns. Files are read as JSON only, never unpickled; anything
unusable is `BadInput`, one line naming the file.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import pandas as pd

FORMAT_VERSION = 2  # asv 0.6's result file format
MACHINE_FILE = "machine.json"
BENCHMARKS_FILE = "benchmarks.json"
STATS = ("ci_99_a", "ci_99_b", "q_25", "q_75", "repeat")  # asv's `stats_*` columns read here


class BadInput(ValueError):
    """Unreadable or unusable input; the message is one line naming the file."""


@dataclass(frozen=True)
class Point:
    """One combination of a benchmark's parameter values, and what asv stored for it."""

    params: tuple[Any, ...]  # the values, in the benchmark's parameter order
    value: Any  # the result: a number; None where the benchmark failed, NaN where asv skipped it
    stats: dict[str, Any]  # STATS -> asv's figure, None where it stored none


@dataclass(frozen=True)
class Benchmark:
    name: str  # module.Class.method
    params: list[list[Any]]  # each parameter's values
    param_names: list[str] | None  # from benchmarks.json; None where it does not describe these params
    unit: str | None
    points: list[Point]  # the product of `params`, in asv's order


@dataclass(frozen=True)
class ResultFile:
    path: Path
    machine: str  # asv's machine name (the folder's where the file has none)
    params: dict[str, Any]  # the machine's parameters: gpu, gpu_count, num_cpu, ram, os, ...
    commit: str
    env: str
    date: pd.Timestamp
    benchmarks: list[Benchmark]


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: corrupt or truncated JSON ({e.msg} at line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: unreadable ({e})") from None


def machine_folders(root: Path) -> list[Path]:
    """Every asv machine folder below `root`: each folder with a machine.json."""
    return sorted(p.parent for p in root.rglob(MACHINE_FILE))


def benchmarks(machine_folder: Path) -> tuple[dict[str, Any], Path | None]:
    """benchmarks.json of the results folder a machine folder is in (name -> its description), and
    its path; ({}, None) without one."""
    path = machine_folder.parent / BENCHMARKS_FILE
    if not path.exists():
        return {}, None
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise BadInput(f"{path}: not asv's benchmarks.json (not an object)")
    return meta, path


def result_files(machine_folder: Path) -> list[Path]:
    return [p for p in sorted(machine_folder.glob("*.json")) if p.name != MACHINE_FILE]


def read(path: Path, meta: dict[str, Any], select: Callable[[str], bool] = lambda name: True) -> ResultFile:
    """One result file, with the benchmarks whose name `select` accepts (`meta`: benchmarks.json)."""
    data = read_json(path)
    if not isinstance(data, dict) or "results" not in data:
        raise BadInput(f"{path}: not an asv result file (no 'results' key)")
    if data.get("version") != FORMAT_VERSION:
        raise BadInput(f"{path}: asv result format version {data.get('version')!r}; "
                       f"this reads version {FORMAT_VERSION} (asv 0.6)")
    try:
        params, columns = data["params"], data["result_columns"]
        machine = str(params.get("machine") or path.parent.name)
        commit, env, date = data["commit_hash"], data["env_name"], pd.to_datetime(data["date"], unit="ms")
        found = [_benchmark(name, dict(zip(columns, entry)), meta.get(name, {}))
                 for name, entry in data["results"].items() if select(name)]
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise BadInput(f"{path}: unexpected asv result layout ({type(e).__name__}: {e})") from None
    return ResultFile(path, machine, params, commit, env, date, found)


def _benchmark(name: str, entry: dict[str, Any], meta: dict[str, Any]) -> Benchmark:
    params = [[_literal(v) for v in values] for values in entry["params"]]
    combos = list(product(*params))
    stats = {s: entry.get(f"stats_{s}") or [None] * len(combos) for s in STATS}
    points = [Point(combo, value, {s: stats[s][i] for s in STATS})
              for i, (combo, value) in enumerate(zip(combos, entry["result"]))]
    # names of another suite's version (a newer benchmarks.json beside older results) would misname them
    names = meta.get("param_names") or None
    return Benchmark(name, params, names if names and len(names) == len(params) else None, meta.get("unit"), points)


def _literal(v: Any) -> Any:
    """asv stores parameter values as their repr ("'fork'"): read them back as literals only."""
    try:
        return ast.literal_eval(v) if isinstance(v, str) else v
    except (ValueError, SyntaxError):
        return v
