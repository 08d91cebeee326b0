"""One owner per file format in the analysis (issue 31): asv's files are read by
`analysis/asvresults.py` alone, in asv's terms; asv's labels are encoded and decoded by
`forkspawn/vocabulary.py` alone; and a report derives its view of the tidy table once, which every
reader takes as readily as the plain table."""

from __future__ import annotations

import ast
import contextlib
import json
import re
import sys
import tempfile
from itertools import product
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
from test_analysis import matplotlib_fonts_loaded, write_results  # noqa: F401 (matplotlib_fonts_loaded is a fixture)

from analysis import asvresults, charts, derive, load, report, screen
from analysis.capacity import Node, plan
from analysis.load import BadInput, latest
from analysis.summary import markdown, summarize
from forkspawn import config
from forkspawn import vocabulary as vocab

REPO = Path(__file__).resolve().parents[1]
REPORTS = sorted(p for p in (REPO / "reports").iterdir() if (p / "results").is_dir())


# -- the label codec --------------------------------------------------------------------------------
def test_a_method_label_is_a_start_method_and_a_variant() -> None:
    cases = {"fork": ("fork", ""), "forkserver-preload": ("forkserver-preload", ""), "fork-eager": ("fork", "eager"),
             "spawn-coldcache": ("spawn", "coldcache"), "ray-override": ("ray", "override"),
             "forkserver-preload-eager": ("forkserver-preload", "eager"), "pool-warm": ("pool", "warm")}
    for label, parts in cases.items():
        assert vocab.split_method(label) == parts, label
        assert vocab.join_method(*parts) == label
        assert vocab.base_method(label) == parts[0]
    assert vocab.is_override("fork-override") and vocab.is_override("ray-override")
    assert not vocab.is_override("fork") and not vocab.is_override("fork-eager")


def test_every_committed_method_label_decodes_as_the_harness_does() -> None:
    """Every method label ever measured decodes to one of the harness's start methods."""
    labels = set(load(REPO / "reports").table["method"])
    assert {"fork-eager", "fork-override", "ray-override", "forkserver-preload"} <= labels
    assert {vocab.base_method(m) for m in labels} <= set(config.METHODS)


def test_a_parent_state_label_carries_the_cuda_check() -> None:
    for state, check in product(config.PARENT_STATES, config.CUDA_CHECKS):
        assert vocab.split_parent(vocab.join_parent(state, check)) == (state, check)
    assert vocab.join_parent("device-queried", "nvml") == "device-queried-nvml"
    assert vocab.split_parent("device-queried-nvml") == ("device-queried", "nvml")
    assert vocab.split_parent("torch") == ("torch", "runtime")


def test_the_analysis_decodes_labels_only_through_the_vocabulary() -> None:
    """No label surgery left in analysis/: the suffix rules are the vocabulary's."""
    surgery = re.compile(r"""["']-nvml|["']-override|len\(base_method|removeprefix\(["']fork|startswith\(["']fork-"""
                         r"""|import base_method""")
    found = [f"{p.name}:{i}" for p in sorted((REPO / "analysis").glob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1) if surgery.search(line)]
    assert found == []


# -- asv's files ------------------------------------------------------------------------------------
def test_a_result_file_reads_in_asvs_terms() -> None:
    folder = asvresults.machine_folders(REPO / "reports" / "h100-vllm-tp1")[0]
    meta, meta_path = asvresults.benchmarks(folder)
    assert meta_path == folder.parent / asvresults.BENCHMARKS_FILE
    path = asvresults.result_files(folder)[0]
    raw = json.loads(path.read_text())
    got = asvresults.read(path, meta)
    assert (got.machine, got.commit, got.env) == (raw["params"]["machine"], raw["commit_hash"], raw["env_name"])
    assert got.date == pd.Timestamp(raw["date"], unit="ms")
    assert [b.name for b in got.benchmarks] == list(raw["results"])
    for bench in got.benchmarks:
        entry = dict(zip(raw["result_columns"], raw["results"][bench.name]))
        assert bench.param_names == meta[bench.name]["param_names"] and bench.unit == meta[bench.name]["unit"]
        assert len(bench.points) == len(entry["result"]) == len(list(product(*bench.params)))
        first = bench.points[0]
        assert first.params == tuple(ast.literal_eval(v[0]) for v in entry["params"])  # asv stores reprs
        assert json.dumps(first.value) == json.dumps(entry["result"][0])  # NaN (skipped) and None (failed) too
        assert first.stats["repeat"] == (entry.get("stats_repeat") or [None])[0]
    assert asvresults.read(path, meta, select=lambda name: name.endswith("track_status")).benchmarks


def test_parameter_names_of_another_suite_version_are_not_used(tmp_path: Path) -> None:
    """A benchmarks.json that names fewer parameters than a result file has (the suite's grid
    changed since) does not misname them: the names come from the grid, as without one."""
    root = write_results(tmp_path / "r")
    want = load(root).table
    meta = json.loads((root / "benchmarks.json").read_text())
    for entry in meta.values():
        if isinstance(entry, dict):
            entry["param_names"] = [n for n in entry["param_names"] if n != "cuda_check"]
    (root / "benchmarks.json").write_text(json.dumps(meta))
    assert load(root).table.equals(want)


def test_a_grid_no_suite_has_is_one_line(tmp_path: Path) -> None:
    root = write_results(tmp_path / "r")
    (root / "benchmarks.json").unlink()
    victim = next((root / "box").glob("*-existing-py_venv_bin_python.json"))
    data = json.loads(victim.read_text())
    name = next(n for n in data["results"] if n.endswith("track_time_to_ready"))
    data["results"][name][1].append(["'extra'"])
    victim.write_text(json.dumps(data))
    with pytest.raises(BadInput) as e:
        load(root)
    assert str(victim) in str(e.value) and "6 parameters" in str(e.value) and "\n" not in str(e.value)


# -- the view, derived once -------------------------------------------------------------------------
@pytest.mark.parametrize("folder", REPORTS, ids=lambda p: p.name)
def test_latest_picks_the_same_rows_from_a_table_or_its_view(folder: Path) -> None:
    table = load(folder).table
    assert latest(derive.view(table)).equals(derive.view(latest(table)))
    assert derive.view(derive.view(table)).equals(derive.view(table))


def test_every_reader_takes_the_table_or_its_view() -> None:
    """reports/h200-tp1 has a method the engine forced (fork→spawn), two commits and an NVML state."""
    res = load(REPO / "reports" / "h200-tp1")
    table, view = res.table, derive.view(res.table)
    assert markdown(*summarize(table)) == markdown(*summarize(view))
    assert charts.compatibility(table).equals(charts.compatibility(view))
    assert charts.view(table).equals(charts.view(view))
    node = Node(gpus=1, gpu_mem_gib=140, ram_gib=125, cpus=16)
    for engine in ("vllm", "vllm-serve", "xinference"):
        assert plan(table, node, 1, 24, engine=engine).table.equals(plan(view, node, 1, 24, engine=engine).table)
    assert screen.markdown(screen.decisions(res)) == screen.markdown(screen.decisions(res, table=view))


def test_a_report_derives_its_view_once() -> None:
    res = load(REPO / "reports" / "h200-tp1")  # three engines, a plan per setting and batch: 8 derivations before
    counted = mock.Mock(wraps=derive.prepare)
    aliases = [(m, name) for m in list(sys.modules.values()) if getattr(m, "__name__", "").startswith("analysis")
               for name, v in vars(m).items() if v is derive.prepare]  # an alias imported elsewhere counts too
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        for m, name in aliases:
            stack.enter_context(mock.patch.object(m, name, counted))
        report.render(res, Path(tmp))
    assert counted.call_count == 1
