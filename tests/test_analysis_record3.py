"""Issue 36, the analysis of forkspawn.record/3: the executor of every row, phases that hold what
their names say, a restart as a user pays it (teardown + exec to ready), decode parity across
leases, the first start apart, host memory as a range, bytecode; over a synthetic results folder
built the way the harness and the asv suite build theirs (records from `build_record`, asv's
results from their samples with asv's own estimator), and over the committed record/2 reports."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from test_analysis import matplotlib_fonts_loaded  # noqa: F401 (a fixture)

from analysis import __main__ as cli
from analysis import charts, load, models, parity, report, screen, starts, summary
from analysis.capacity import Node, plan
from analysis.derive import RESTART, RESTART_CLOCK, START_CLOCK, view
from analysis.load import BadInput, latest
from forkspawn import sidecar, stats
from forkspawn import vocabulary as vocab
from forkspawn.config import Config
from forkspawn.record import Phase, ProcessMemory, Run, build_record

REPO = Path(__file__).resolve().parents[1]
COMMIT = "3333333333333333333333333333333333333333"
MACHINE = "vm-1xNVIDIA-H100-80GB-HBM3-16cpu"
GPU = "NVIDIA H100 80GB HBM3"
LEASES = ("b00t-lease-a", "b00t-lease-b")
ROUNDS = 16  # counted cold starts a side: 8 in each lease (a lease's exact 99% paired interval), in ABBA order
BATCHES = (1, 16)
# label -> (start method, executor, seconds the engine core's / the worker's imports take)
POINTS = {"fork": ("fork", "uni", 0.05, None), "spawn": ("spawn", "uni", 13.4, None),
          "fork-mp": ("fork", "mp", 0.05, 0.05), "spawn-mp": ("spawn", "mp", 13.4, 13.0)}
PARENT_IMPORTS = 13.0  # exec to the start request: interpreter start, torch, `from vllm import LLM`
GAP = [11.0, "(EngineCore pid=5) INFO 12-07 15:02:22 [gpu_model_runner.py:4] Graph capturing finished in 9 secs, "
             "took 0.50 GiB", "(EngineCore pid=5) INFO 12-07 15:02:33 [core.py:9] init engine (profile, create kv "
                              "cache, warmup model) took 22.10 seconds"]
BYTECODE = ("bytecode: sys.flags.dont_write_bytecode=0; modules with a .pyc from before this process (the rest "
            "compiled from source): vllm 401 of 401, torch 1285 of 1285")


def _run(label: str, round_: int, lease: str, minute: int, warmup: bool = False) -> Run:
    """One cold start of a configuration, as the vLLM adapter records it (record/3)."""
    method, executor, core_imports, worker_imports = POINTS[label]
    jitter = 1 + 0.004 * math.sin(3 * round_ + len(label))  # deterministic spread across cold starts
    t, phases = 0.0, [Phase(0, "start_requested", 0.0)]
    steps = [("engine_core_started", 0.9), ("engine_core_imported", core_imports)]
    if worker_imports is not None:
        steps += [("workers_started", 0.05), ("workers_imported", worker_imports)]
    steps += [("weights_loaded", 3.2), ("torch_compiled", 2.5), ("kv_cache_profiled", 0.9),
              ("cuda_graphs_captured", 2.2 + (11.0 if warmup and method == "fork" else 0.0)),
              ("kv_cache_ready", 0.9), ("ready", 0.9)]
    for name, span in steps:
        t += span * jitter
        phases.append(Phase(0, name, t))
    level = 0.98 if lease == LEASES[1] else 1.0  # the second lease decodes 2% slower, both methods alike
    rates = {b: level * (680.0 if b == 1 else 10_500.0) * (1 + 0.003 * math.cos(5 * round_ + len(label)))
             for b in BATCHES}
    grows = 1.05 if method == "fork" else 1.005  # a forked replica's PSS grows once it works (copy-on-write)
    procs = [ProcessMemory("parent", None, 1, None, rss_mib=1500, uss_mib=1100, pss_mib=1200.0, gpu_mib=0.0),
             ProcessMemory("engine-core", None, 2, method, rss_mib=1600, uss_mib=1100, pss_mib=1250.0 if method == "fork"
                           else 1500.0, gpu_mib=41_826.0 if worker_imports is None else 600.0)]
    if worker_imports is not None:
        procs.append(ProcessMemory("rank", 0, 3, method, rss_mib=1700, uss_mib=900, pss_mib=1000.0, gpu_mib=41_226.0))
    for p in procs:
        for kind in vocab.HOST_KINDS:
            at_ready = getattr(p, kind)
            setattr(p, kind.replace("_mib", "_after_decode_mib"), at_ready * grows)
            setattr(p, kind.replace("_mib", "_after_gc_mib"), at_ready * (grows - 0.01 if method == "fork" else grows))
    ttr = t
    return Run(status="ok", method_used=method, phases=phases, time_to_ready_s=ttr,
               exec_to_ready_s=ttr + PARENT_IMPORTS * jitter, teardown_s=(0.9 if method == "fork" else 3.5) * jitter,
               executor=executor, warmup=warmup, started_at=f"2026-12-08T10:{minute:02d}:00.000+00:00",
               host={"boot_id": lease, "hostname": "vm", "gpu_uuids": ["GPU-1"]},
               log_gaps=[GAP] if warmup else [[0.9, "a line", "another line"]],
               cache_writes={"inductor": {"files": 120, "mib": 40.5}, "triton": {"files": 31, "mib": 12.0}} if warmup
               else {"vllm": {"files": 1, "mib": 0.1}},
               processes=procs, tokens_per_s=rates, engine_version="0.26.0",
               engine_metrics={"kv_cache_mib": 36_956.0, "kv_cache_tokens": 1_182_592.0},
               notes=[f"vLLM executor: {executor} (as vLLM resolved distributed_executor_backend; asked: "
                      f"{'mp' if executor == 'mp' else 'its default'})", BYTECODE])


def records3() -> dict[str, object]:
    """label -> its record: a warm-up each, then ROUNDS counted cold starts a side in ABBA order,
    half in each lease (the plain pair and the mp pair alternate among themselves)."""
    runs: dict[str, list[Run]] = {label: [] for label in POINTS}
    warm: dict[str, list[Run]] = {label: [] for label in POINTS}
    minute = 0
    for label in POINTS:
        warm[label].append(_run(label, -1, LEASES[0], minute, warmup=True))
        minute += 1
    for r in range(ROUNDS):
        for pair in (("fork", "spawn"), ("fork-mp", "spawn-mp")):
            for label in pair if r % 2 == 0 else pair[::-1]:
                runs[label].append(_run(label, r, LEASES[r * 2 // ROUNDS], minute))
                minute += 1
    out = {}
    for label, (method, executor, *_) in POINTS.items():
        config = Config(engine="vllm", method=method, parent_state="torch", tp=1, model="1b", batches=BATCHES,
                        repeat=ROUNDS, warmup_starts=1, extra={"vllm_executor": "mp"} if label.endswith("-mp") else {})
        machine = {"hostname": "vm", "ram_gib": 125.8, "cpus": 16, "gpu": GPU, "gpu_count": 1, "gpu_memory_mib": 81_559}
        out[label] = build_record(config, runs[label], machine, {"python": "3.12.3", "torch": "2.11.0", "vllm": "0.26.0"},
                                  warmups=warm[label])
    return out


BENCHMARKS = {  # the asv suite's vLLM classes (benchmarks/engines.py), their extra parameters and sample keys
    "engines.VllmStartup.track_status": ([], [], vocab.STATUS),
    "engines.VllmStartup.track_time_to_ready": ([], [], vocab.TIME_TO_READY),
    "engines.VllmStartup.track_exec_to_ready": ([], [], vocab.EXEC_TO_READY),
    "engines.VllmStartup.track_teardown": ([], [], vocab.TEARDOWN),
    "engines.VllmPhases.track_phase_end": (["phase"], [["engine_core_started", "engine_core_imported", "workers_started",
                                                        "workers_imported", "weights_loaded", "torch_compiled",
                                                        "kv_cache_profiled", "cuda_graphs_captured", "kv_cache_ready",
                                                        "ready"]], "phase.{phase}"),
    "engines.VllmMemory.track_memory": (["process", "kind"], [["group", "parent", "engine-core", "rank0"],
                                                              list(vocab.ASV_MEMORY_KINDS) + ["gpu"]],
                                        "mem.{process}.{kind}_mib"),
    "engines.VllmThroughput.track_tokens_per_s": (["batch"], [[str(b) for b in BATCHES]], "tokens_per_s.b{batch}"),
}


def write_results3(root: Path, recs: dict[str, object] | None = None) -> Path:
    """An asv results folder of the record/3 points (asv's values and 99% intervals from the
    records' samples, by asv's own estimator: forkspawn.stats.summarize) with its sidecar."""
    recs = recs or records3()
    mdir = root / MACHINE
    (mdir / "records").mkdir(parents=True)
    params = {"machine": MACHINE, "os": "Linux 6.8", "arch": "x86_64", "cpu": "Xeon", "num_cpu": "16",
              "ram": "125.8 GiB", "gpu": GPU, "gpu_count": "1", "gpu_driver": "580.159.04", "python": "3.12"}
    (mdir / "machine.json").write_text(json.dumps({**params, "version": 1}))
    grid = [["'vllm'"], [repr(m) for m in recs], ["'torch'"], ["1"]]
    results, meta = {}, {}
    for name, (extra_names, extra, template) in BENCHMARKS.items():
        values = grid + [[repr(v) for v in e] for e in extra]
        names = ["engine", "method", "parent_state", "tp"] + extra_names
        meta[name] = {"name": name, "param_names": names, "params": values, "unit": "x", "type": "track", "version": "1"}
        cols: dict[str, list] = {c: [] for c in ("result", "ci_99_a", "ci_99_b", "q_25", "q_75", "repeat")}
        import itertools

        for combo in itertools.product(*[[v.strip("'") for v in vs] for vs in values]):
            p = dict(zip(names, combo))
            rec = recs[p["method"]]
            key = template.format(**p)
            if key == vocab.STATUS:
                cols["result"].append(0)
                for c in ("ci_99_a", "ci_99_b", "q_25", "q_75", "repeat"):
                    cols[c].append(None)
                continue
            s = stats.summarize(rec.samples[key]) if key in rec.samples else None
            cols["result"].append(s["median"] if s else math.nan)
            for c, k in (("ci_99_a", "ci_low"), ("ci_99_b", "ci_high"), ("q_25", "q25"), ("q_75", "q75"), ("repeat", "n")):
                cols[c].append(s[k] if s else None)
        results[name] = [cols["result"], values, "1", 0, 1.0] + (
            [] if template == vocab.STATUS else [cols["ci_99_a"], cols["ci_99_b"], cols["q_25"], cols["q_75"],
                                                 [1] * len(cols["result"]), cols["repeat"]])
    env = "existing-py_.venv_bin_python"
    (mdir / f"{COMMIT[:8]}-{env}.json").write_text(json.dumps({
        "commit_hash": COMMIT, "env_name": env, "date": 1_765_000_000_000, "params": params, "python": "3.12",
        "requirements": {}, "env_vars": {}, "result_columns": ["result", "params", "version", "started_at", "duration",
                                                               "stats_ci_99_a", "stats_ci_99_b", "stats_q_25",
                                                               "stats_q_75", "stats_number", "stats_repeat"],
        "results": results, "durations": {}, "version": 2}))
    lines = [sidecar.Entry(rec, vocab.config_key(Config(**{k: v for k, v in rec.config.items()
                                                            if k in ("engine", "method", "parent_state", "tp", "extra")})),
                           COMMIT, "t3", f"vllm|{label}|torch|1", "existing").to_dict()
             for label, rec in recs.items()]
    (mdir / "records" / f"{COMMIT[:8]}-existing.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (root / "benchmarks.json").write_text(json.dumps({**meta, "version": 2}))
    return root


@pytest.fixture(scope="module")
def recs() -> dict[str, object]:
    return records3()


@pytest.fixture(scope="module")
def res3(tmp_path_factory: pytest.TempPathFactory):
    return load(write_results3(tmp_path_factory.mktemp("r3")))


@pytest.fixture(scope="module")
def view3(res3) -> pd.DataFrame:
    v = charts.view(latest(res3.table))
    v.attrs["parity"] = parity.table(res3.records)
    return v


def _value(df: pd.DataFrame, method: str, metric: str) -> pd.Series:
    return df[(df["method"] == method) & (df["metric"] == metric)].iloc[0]


def _node() -> Node:
    return Node(gpus=1, gpu_mem_gib=79.6, ram_gib=125.8, cpus=16)


# -- 1. the executor of every row -------------------------------------------------------------------
def test_the_executor_is_a_column_of_the_table(res3) -> None:
    t = res3.table
    executors = t[t["metric"] == "status"].set_index("method")["executor"]
    assert executors.to_dict() == {"fork": "uni", "spawn": "uni", "fork-mp": "mp", "spawn-mp": "mp"}
    assert set(res3.records["executor"]) == {"uni", "mp"}
    # record/2: every vLLM record ran the adapter's fixed `mp`; our own workload has no executor
    old = load(REPO / "reports" / "h100-vllm-tp1").table
    assert set(old.loc[old["status"] == "ok", "executor"]) == {"mp"}
    cpu = load(REPO / "reports" / "cpu-default").table
    assert cpu[(cpu["engine"] == "torch-tp")]["executor"].isna().all()
    assert set(cpu[(cpu["engine"] == "vllm") & (cpu["status"] == "ok")]["executor"]) >= {"mp"}


def test_the_headline_names_the_executor_and_shows_the_mp_pair(res3) -> None:
    ds = screen.decisions(res3)
    assert [d.mode for d in ds] == ["", "mp"]
    assert [d.executor for d in ds] == ["executor uni", "executor mp"] and not any(d.executor_note for d in ds)
    text = screen.markdown(ds, res3)
    assert "| *default mode (executor uni): fork vs spawn* | | | |" in text
    assert "| *mp executor (a worker process at TP 1): fork-mp vs spawn-mp* | | | |" in text
    assert "- mp executor (a worker process at TP 1), busy all day" in text
    # record/2 says where its executor came from
    old = load(REPO / "reports" / "h100-vllm-tp1")
    assert "default mode (executor mp, the adapter's fixed choice before record/3)" in screen.markdown(
        screen.decisions(old), old)


# -- 2. phases that hold what their names say ---------------------------------------------------------
def test_chart_1_shows_the_imports_as_phases_and_each_bar_is_exec_to_ready(view3: pd.DataFrame) -> None:
    with matplotlib.rc_context(charts.STYLE):
        fig = charts.chart_startup(view3)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    for label in ("engine core: interpreter start + imports", "worker: interpreter start + imports",
                  "weights loaded", "parent: interpreter start, state, imports (before the start request)"):
        assert label in labels
    assert not any("before record/3" in x for x in labels)
    bars: dict = {}
    for ax in fig.axes:
        for c in ax.containers:
            for p in getattr(c, "patches", []):
                key = round(p.get_x() + p.get_width() / 2, 6)
                bars[key] = bars.get(key, 0.0) + p.get_height()
    execs = charts._ok(view3, vocab.EXEC_TO_READY)["value"]
    assert sorted(round(v, 6) for v in bars.values()) == sorted(round(v, 6) for v in execs)
    # the table beside it draws the same spans
    table = charts.phase_table(view3).set_index("method")
    spawn = table.loc["spawn"]
    assert spawn["engine core: interpreter start + imports"] == pytest.approx(
        _value(view3, "spawn", "phase.engine_core_imported")["value"]
        - _value(view3, "spawn", "phase.engine_core_started")["value"])
    assert spawn["total, s"] == pytest.approx(_value(view3, "spawn", vocab.EXEC_TO_READY)["value"])
    assert spawn["counted from"] == "exec" and table.loc["fork-mp", "executor"] == "mp"
    assert table.loc["fork", "executor"] == "uni" and pd.isna(table.loc["fork", "worker: interpreter start + imports"])


def test_a_record_2_phase_says_it_held_the_imports() -> None:
    old = charts.view(latest(load(REPO / "reports" / "h100-vllm-tp1").table))
    with matplotlib.rc_context(charts.STYLE):
        fig = charts.chart_startup(old)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "weights loaded (incl. imports, before record/3)" in labels and "weights loaded" not in labels
    assert "workers started (incl. the engine core's imports, before record/3)" in labels
    assert not any(x.startswith("parent: interpreter start") for x in labels)  # no exec to ready on record


def test_extrapolation_scales_the_weights_never_the_imports(res3) -> None:
    """The span that grows with the weights runs from the last `*_imported` to `weights_loaded`:
    spawn's 13 s of imports are held (uni: the engine core's; mp: the worker's)."""
    small = models.of("1b")
    big = models.Model("8e9", 8e9)
    k = models.scale(small, big, 1)
    p = plan(res3.table, _node(), 1, 24, model=big, extrapolate=True, busy_hours=1)
    measured = plan(res3.table, _node(), 1, 24, busy_hours=1)
    for method, imported in (("spawn", "phase.engine_core_imported"),):
        t = view(latest(res3.table))
        span = _value(t, method, "phase.weights_loaded")["value"] - _value(t, method, imported)["value"]
        got = p.table.set_index("method").at[method, "time_to_ready_s"]
        want = measured.table.set_index("method").at[method, "time_to_ready_s"] + (k - 1) * span
        assert got == pytest.approx(want)
        assert span == pytest.approx(3.2, rel=0.01)  # the weights alone, not the 13.4 s of imports before them
    mp = plan(res3.table, _node(), 1, 24, model=big, extrapolate=True, mode="mp", busy_hours=1)
    t = view(latest(res3.table))
    span = _value(t, "spawn-mp", "phase.weights_loaded")["value"] - _value(t, "spawn-mp", "phase.workers_imported")["value"]
    assert span == pytest.approx(3.2, rel=0.01)
    assert mp.table.set_index("method").at["spawn-mp", "restart_s"] == pytest.approx(
        plan(res3.table, _node(), 1, 24, mode="mp", busy_hours=1).table.set_index("method").at["spawn-mp", "restart_s"]
        + (k - 1) * span)
    # record/2's span from "workers started" holds a spawned worker's imports: refused, not scaled
    with pytest.raises(BadInput, match="--extrapolate: the weight-loading span begins at workers_started"):
        plan(load(REPO / "reports" / "h100-vllm-tp1").table, _node(), 1, 24, model=big, extrapolate=True)


# -- 3. a restart as a user pays it ----------------------------------------------------------------
def test_the_restart_is_teardown_plus_exec_to_ready(res3, view3: pd.DataFrame) -> None:
    for method in ("fork", "spawn"):
        r, e, d = (_value(view3, method, m) for m in (RESTART, vocab.EXEC_TO_READY, vocab.TEARDOWN))
        assert r["value"] == pytest.approx(e["value"] + d["value"])
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((e["ci_low"] + d["ci_low"], e["ci_high"] + d["ci_high"]))
        assert r["includes"] == RESTART_CLOCK
    p = plan(res3.table, _node(), 1, 24)
    t = p.table.set_index("method")
    assert t.at["spawn", "restart_s"] == pytest.approx(t.at["spawn", "exec_to_ready_s"] + t.at["spawn", "teardown_s"])
    assert t.at["spawn", "startup_gpu_s_per_day"] == pytest.approx(24 * t.at["spawn", "restart_s"])
    assert "restart_s: from exec to ready, teardown included" in p.scenario
    # every relative figure names what it is relative to
    light = plan(res3.table, _node(), 1, 24, busy_hours=0.1, parity_rows=parity.table(res3.records))
    saving = t.at["spawn", "restart_s"] - t.at["fork", "restart_s"]
    assert light.recommended == "fork"
    share = f"{100 * saving / t.at['spawn', 'restart_s']:.0f}%"
    assert (f"restarts {saving:.1f} s faster ({share} of spawn's {t.at['spawn', 'restart_s']:.1f} s from exec to "
            f"ready, teardown included)") in light.verdict
    # a record/2 report: time to ready from the start request, labelled so
    old = plan(load(REPO / "reports" / "h100-vllm-tp1").table, _node(), 1, 24)
    assert f"restart_s: {START_CLOCK}" in old.scenario and "fork starts 27.3 s sooner" in old.verdict


def test_chart_4_draws_the_restart_each_method_adds_to_forks(view3: pd.DataFrame) -> None:
    fig = charts.chart_tradeoff(view3)
    ax = fig.axes[0]
    pss = vocab.mem(vocab.GROUP, "pss")
    drawn = {tuple(np.round(xy, 6)) for c in ax.collections for xy in c.get_offsets()}
    for method in ("spawn", "fork-mp", "spawn-mp"):
        want = (_value(view3, method, pss)["value"] - _value(view3, "fork", pss)["value"],
                _value(view3, method, RESTART)["value"] - _value(view3, "fork", RESTART)["value"])
        assert tuple(np.round(want, 6)) in drawn, method
    assert "teardown + exec to ready" in ax.get_ylabel()


def test_the_headline_shows_exec_to_ready_and_teardown_beside_time_to_ready(res3) -> None:
    d = screen.decisions(res3)[0]
    rows = {what: (a, b, x) for what, a, b, x in screen.figures(d)}
    assert list(rows)[:4] == ["restart: teardown + exec to ready, s", "exec to ready, s", "teardown, s",
                              "start request to ready, s"]
    t = view(latest(res3.table))
    assert rows["exec to ready, s"][0] == f"{_value(t, 'fork', vocab.EXEC_TO_READY)['value']:.1f}"
    summ = summary.markdown(*summary.summarize(res3.table))
    assert "| restart: teardown + exec to ready, s |" in summ and "| exec to ready, s |" in summ
    assert "| teardown, s |" in summ and "fork · executor uni" in summ


# -- 4. decode parity across leases ------------------------------------------------------------------
def test_decode_parity_pairs_within_leases(res3) -> None:
    t = parity.table(res3.records).set_index(["method", "batch"])
    row = t.loc[("fork", 16)]
    assert (row["design"], row["leases"], row["pairs"], row["dropped"]) == ("paired", 2, ROUNDS, 0)
    assert row["scope"] == "2 leases, random effects (DerSimonian-Laird, t with 1 df)"
    assert t.loc[("fork-mp", 16), "reference"] == "spawn-mp"
    # the second lease decodes 2% slower for both methods: paired within leases, the shift stays near 0
    assert abs(row["diff_pct"]) < 0.1
    # with 2 leases t has 1 degree of freedom: a third lease narrows the interval sooner than more cold
    # starts in these two, and both parity and the planner say so
    assert parity.verdict_text(row).startswith("unresolved: cold starts from another lease would decide it, sooner "
                                               "than more in these 2 (about")
    text = screen.markdown(screen.decisions(res3), res3)
    assert "Would decide it: cold starts from another lease, sooner than more in these 2 (about" in text


# -- 5. the first start as its own figure -------------------------------------------------------------
def test_the_warm_ups_stand_beside_the_counted_median(res3, recs) -> None:
    w = starts.warmups(res3.records).set_index("method")
    fork = w.loc["fork"]
    assert fork["time_to_ready_s"] == pytest.approx(recs["fork"].warmups[0]["time_to_ready_s"])
    assert fork["counted_time_to_ready_s"] == pytest.approx(recs["fork"].time_to_ready_s)
    assert fork["time_to_ready_s"] - fork["counted_time_to_ready_s"] > 10  # the slow first forked start
    assert fork["n"] == ROUNDS
    # never a sample: the counted cold starts are the record's samples, the warm-up is not among them
    assert len(recs["fork"].samples[vocab.TIME_TO_READY]) == ROUNDS
    assert fork["time_to_ready_s"] not in recs["fork"].samples[vocab.TIME_TO_READY]
    text = starts.gap_text(fork["log_gaps"][0])
    assert text == ("11 s between \u201cGraph capturing finished in 9 secs, took 0.50 GiB\u201d and \u201cinit engine "
                    "(profile, create kv cache, warmup model) took 22.10 seconds\u201d")
    assert starts.writes_text(fork["cache_writes"]) == "inductor 120 files (40.5 MiB), triton 31 files (12 MiB)"
    assert starts.writes_text(fork["counted_cache_writes"]) == "vllm 1 file (0.1 MiB)"


# -- 6. memory as a range ----------------------------------------------------------------------------
def test_host_memory_a_replica_is_a_range_and_the_chart_draws_the_tables_readings(res3, view3) -> None:
    d = screen.decisions(res3)[0]
    rows = {what: (a, b, x) for what, a, b, x in screen.figures(d)}
    what = "host MiB a replica (PSS at ready, after decode, after gc; difference of the largest)"
    t = view(latest(res3.table))
    ready, decode, gc = (_value(t, "fork", vocab.mem("group", k))["value"] for k in ("pss", "pss_after_decode",
                                                                                       "pss_after_gc"))
    assert rows[what][0] == f"{ready:,.0f}-{max(decode, gc):,.0f}"
    p = plan(res3.table, _node(), 1, 24).table.set_index("method")
    assert p.at["fork", "host_mib_per_replica"] == pytest.approx(max(ready, decode, gc))  # the planner counts the largest
    with matplotlib.rc_context(charts.STYLE):
        fig = charts.chart_memory(view3)
    marks = sorted(round(float(y), 6) for ax in fig.axes for ln in ax.get_lines()
                   if str(ln.get_gid()).startswith("pss_after_") for y in ln.get_ydata())
    later = charts._ok(view3, charts.LATER_PSS)["value"]
    assert marks == sorted(round(float(v), 6) for v in later) and len(marks) == 8
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "group PSS after decode" in labels and "group PSS after gc" in labels


# -- 7. bytecode, and the report ---------------------------------------------------------------------
def test_the_report_has_it_all(res3, tmp_path: Path) -> None:
    root = write_results3(tmp_path / "r")
    page = report.write_report(root, tmp_path / "out").read_text()
    assert "How the engines ran: executor and bytecode" in page and BYTECODE in page
    assert "First starts: each warm-up beside the counted cold starts" in page
    assert "Exec to ready (from the exec of the process a user restarts" in page
    assert "engine core: interpreter start + imports" in page and "PSS after decode" in page
    assert "2 leases, random effects (DerSimonian-Laird, t with 1 df)" in page
    assert re.search(r"<td>executors: uni \(fork, spawn\); mp \(fork-mp, spawn-mp\)</td>", page)
    old = report.write_report(REPO / "reports" / "h100-vllm-tp1", tmp_path / "old").read_text()
    assert "records from before record/3 name neither the executor nor whether vLLM was imported from bytecode" in old


def test_the_cli_reads_record_3(res3, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_results3(tmp_path / "r")
    assert cli.main(["headline", str(root)]) == 0
    assert "executor uni" in capsys.readouterr().out
    assert cli.main(["plan", str(root), "--tp", "1", "--mode", "mp"]) == 0
    out = capsys.readouterr().out
    assert "mp executor (a worker process at TP 1)" in out and "restart_s" in out
    assert np.isfinite(plan(res3.table, _node(), 1, 24, mode="mp").table["restart_s"].astype(float)).all()
