"""The analysis package: the tidy-table contract, charts, the capacity calculator, the report
and the notebook, over small synthetic asv result folders written here (asv 0.6 format) and
over the committed sample report."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import __main__ as cli
from analysis import charts, load, report
from analysis.capacity import Node, break_even_restarts, break_even_tokens, plan, rates_differ
from analysis.decide import break_even_gap
from analysis.load import COLUMNS, BadInput, method_order

REPO = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CONFIG = ["engine", "method", "parent_state", "cuda_check", "tp"]
METHODS = ["fork", "spawn", "forkserver-preload", "ray"]  # "ray": a launch path the analysis does not know
STATES = ["bare", "torch", "device-queried", "device-initialized"]
TPS = ["1", "2"]
BATCHES = ["1", "8"]
PHASES = ["process_entry", "imports_done", "device_ready", "dist_initialized", "weights_loaded", "first_token", "ready"]
PROCS = ["group", "parent", "forkserver", "rank0", "rank1"]
KINDS = ["uss", "pss", "rss", "gpu"]
FORK_ERROR = "RuntimeError: Cannot re-initialize CUDA in forked subprocess <b>bold</b>"


# -- synthetic asv results ------------------------------------------------------------------------
def _outcome(engine: str, method: str, state: str, tp: int) -> tuple[str, str | None]:
    if state == "device-queried":
        return "skipped", "parent state 'device-queried' needs a CUDA device; this run is on CPU"
    if state == "device-initialized" and method == "fork":
        return "error", FORK_ERROR
    if state == "device-initialized" and method == "spawn" and tp == 2:
        return "timeout", "rank 1 not ready within 300 s"
    if engine == "vllm" and method == "fork":
        return "error", "vLLM refuses fork here"
    return "ok", None


def _samples(method: str, state: str, tp: int) -> dict[str, list[float]]:
    """Three cold starts of made-up but consistent numbers."""
    ttr = {"fork": 0.5, "spawn": 3.0, "forkserver-preload": 1.5, "ray": 4.0}[method] + 0.5 * tp
    if method == "fork" and state == "torch":
        ttr = 0.1 * tp
    s: dict[str, float] = {"time_to_ready_s": ttr, "teardown_s": 0.05}
    for i, p in enumerate(PHASES):
        s[f"phase.{p}"] = ttr * [0.05, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0][i]
    procs = {"parent": 50.0, **{f"rank{r}": 200.0 if method != "fork" else 120.0 for r in range(tp)}}
    if method == "forkserver-preload":
        procs["forkserver"] = 150.0
    for p, mib in procs.items():
        s |= {f"mem.{p}.uss_mib": mib, f"mem.{p}.pss_mib": mib * 1.2, f"mem.{p}.rss_mib": mib * 1.5,
              f"mem.{p}.peak_rss_mib": mib * 1.6}
        if p.startswith("rank"):
            s[f"mem.{p}.gpu_mib"] = 1000.0
    for kind in ("uss", "pss", "rss"):
        s[f"mem.group.{kind}_mib"] = sum(v for k, v in s.items() if k.endswith(f".{kind}_mib") and ".group." not in k)
    for b in BATCHES:
        rate = 100.0 * int(b) * {"fork": 1.0, "spawn": 1.2, "forkserver-preload": 1.1, "ray": 0.9}[method]
        s[f"tokens_per_s.b{b}"], s[f"step_latency_s.b{b}"] = rate, int(b) / rate
    return {k: [v * 0.98, v, v * 1.02] for k, v in s.items()}


NEW_GRID = ["engine", "method", "parent_state", "tp"]  # the CUDA check folded into the parent state
NEW_STATES = STATES + ["device-queried-nvml"]
VARIANT = ("fork-override", "fork", {"override": True})  # a labelled method variant: label, method, extra


def _benchmarks(module: str, engine: str, full: bool, new: bool = False) -> dict[str, tuple[list, list[str], str, str]]:
    """asv benchmark name -> (params, param_names, unit, sample-key template)."""
    if new:
        base = [[repr(engine)], [repr(m) for m in METHODS + [VARIANT[0]]], [repr(s) for s in NEW_STATES],
                [repr(t) for t in TPS]]
    else:
        base = [[repr(engine)], [repr(m) for m in METHODS], [repr(s) for s in STATES], ["'runtime'"],
                [repr(t) for t in TPS]]
    names = NEW_GRID if new else CONFIG
    cls = {"torch-tp": "TorchTP", "vllm": "VLLM"}[engine]
    out = {
        f"{module}.{cls}Startup.track_status": (base, names, "0 ok, 1 error, 2 timeout", "status"),
        f"{module}.{cls}Startup.track_time_to_ready": (base, names, "seconds", "time_to_ready_s"),
    }
    if full:
        out |= {
            f"{module}.{cls}Startup.track_teardown": (base, names, "seconds", "teardown_s"),
            f"{module}.{cls}Phases.track_phase_end": (base + [[repr(p) for p in PHASES]], names + ["phase"], "seconds",
                                                      "phase.{phase}"),
            f"{module}.{cls}Memory.track_memory": (base + [[repr(p) for p in PROCS], [repr(k) for k in KINDS]],
                                                   names + ["process", "kind"], "MiB", "mem.{process}.{kind}_mib"),
            f"{module}.{cls}Throughput.track_tokens_per_s": (base + [[repr(b) for b in BATCHES]], names + ["batch"],
                                                             "tokens/s", "tokens_per_s.b{batch}"),
            f"{module}.{cls}Throughput.track_step_latency": (base + [[repr(b) for b in BATCHES]], names + ["batch"],
                                                             "seconds", "step_latency_s.b{batch}"),
        }
    return out


def write_results(root: Path, machine: str = "box", machine_dir: str = "box", error: str = FORK_ERROR,
                  env_suffix: str = "py_venv_bin_python", new: bool = False) -> Path:
    """An asv results folder: torch-tp (every benchmark shape) in one environment and vllm
    (Startup only, from another module) in a second; records in the harness's sidecar.
    `new`: the grid without a cuda_check parameter, with a labelled method variant."""
    mdir = root / machine_dir
    (mdir / "records").mkdir(parents=True)
    params = {"machine": machine, "os": "Linux 6.1", "arch": "x86_64", "cpu": "Test CPU", "num_cpu": "16",
              "ram": "64.0 GiB", "gpu": "none", "gpu_count": "0", "gpu_driver": "none", "python": "3.11"}
    (mdir / "machine.json").write_text(json.dumps({**params, "version": 1}))
    bench_meta, records = {}, []
    for engine, module, env, full in (("torch-tp", "torch_tp", f"existing-{env_suffix}", True),
                                      ("vllm", "engines", "existing-py_venv-vllm_bin_python", False)):
        results = {}
        for name, (values, names, unit, template) in _benchmarks(module, engine, full, new).items():
            bench_meta[name] = {"name": name, "param_names": names, "params": values, "unit": unit, "type": "track",
                                "version": "1"}
            res, ci_a, ci_b, q25, q75, reps = [], [], [], [], [], []
            for combo in product(*values):
                p = dict(zip(names, (v.strip("'") for v in combo)))
                method = VARIANT[1] if p["method"] == VARIANT[0] else p["method"]
                state = p["parent_state"].removesuffix("-nvml")
                status, _ = _outcome(engine, method, state, int(p["tp"]))
                key = template.format(**p)
                samples = _samples(method, state, int(p["tp"])) if status == "ok" else {}
                if key == "status":
                    v = {"ok": 0, "error": 1, "timeout": 2}.get(status, math.nan)
                elif status == "ok":
                    v = samples[key][1] if key in samples else math.nan
                else:
                    v = None if status in ("error", "timeout") else math.nan
                res.append(v)
                ok = isinstance(v, (int, float)) and not math.isnan(v) and key != "status"
                ci_a.append(v * 0.9 if ok else None)
                ci_b.append(v * 1.1 if ok else None)
                q25.append(v * 0.99 if ok else None)
                q75.append(v * 1.01 if ok else None)
                reps.append(3 if ok else None)
            results[name] = [res, values, "1", 0, 1.0] + ([ci_a, ci_b, q25, q75, [1] * len(res), reps]
                                                        if template != "status" else [])
        result_file = {
            "commit_hash": COMMIT, "env_name": env, "date": 1_700_000_000_000, "params": params,
            "python": "3.11", "requirements": {}, "env_vars": {"HOSTILE": "<i>x</i>"},
            "result_columns": ["result", "params", "version", "started_at", "duration", "stats_ci_99_a",
                               "stats_ci_99_b", "stats_q_25", "stats_q_75", "stats_number", "stats_repeat",
                               "samples", "profile"],
            "results": results, "durations": {}, "version": 2,
        }
        (mdir / f"{COMMIT[:8]}-{env}.json").write_text(json.dumps(result_file))
        for label, state, tp in product(METHODS + [VARIANT[0]] * new, NEW_STATES if new else STATES, TPS):
            m, extra = (VARIANT[1], VARIANT[2]) if label == VARIANT[0] else (label, None)
            s, check = state.removesuffix("-nvml"), "nvml" if state.endswith("-nvml") else "runtime"
            status, err = _outcome(engine, m, s, int(tp))
            records.append({
                "schema": "forkspawn.record/1", "status": status, "error": error if err == FORK_ERROR else err,
                "engine": engine, "engine_version": None if status == "skipped" else f"{engine}-1.0",
                "method": m, "method_used": m if status == "ok" else None, "parent_state": s, "cuda_check": check,
                "tp": int(tp), "samples": _samples(m, s, int(tp)) if status == "ok" else {},
                "machine": {"hostname": machine, "ram_gib": 64.0, "cpus": 16, "gpu": None, "gpu_memory_mib": None},
                "versions": {"python": "3.11.7", "torch": "2.13.0+cpu"}, "asv_token": "t1",
                "asv_key": f"{engine}|{m}|{s}|{check}|{tp}" + (f"|{json.dumps(extra)}" if extra else ""),
                "asv_commit": COMMIT, "asv_env": "existing",
            } | ({"asv_params": f"{engine}|{label}|{state}|{tp}"} if new else {}))
    (mdir / "records" / f"{COMMIT[:8]}-existing.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "benchmarks.json").write_text(json.dumps({**bench_meta, "version": 2}))
    return root


@pytest.fixture(scope="module", autouse=True)
def matplotlib_fonts_loaded() -> None:
    """matplotlib keeps the font files it used open for the life of the process (a cache, not a
    leak): open them before the per-test file-descriptor check takes its snapshot."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(charts.STYLE):
        fig = Figure()
        fig.suptitle("x", fontweight="bold")
        fig.text(0, 0, "x")
        fig.savefig(io.BytesIO(), format="png")


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_results(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def tidy(results_dir: Path) -> pd.DataFrame:
    return load(results_dir).table


@pytest.fixture(scope="module")
def built_report(results_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reports") / "synthetic"
    report.write_report(results_dir, out)
    return out


# -- the tidy table ---------------------------------------------------------------------------------
def test_table_has_the_contract_columns(tidy: pd.DataFrame) -> None:
    required = ["machine", "gpu", "engine", "engine_version", "method", "method_used", "parent_state", "tp",
                "batch", "metric", "value", "unit", "ci_low", "ci_high", "status", "error"]
    assert set(required) <= set(tidy.columns)
    assert list(tidy.columns) == COLUMNS
    assert set(tidy["status"]) == {"ok", "error", "timeout", "skipped"}
    ok = tidy[tidy["status"] == "ok"]
    assert ok["value"].notna().all() and ok["unit"].notna().all()
    row = ok[(ok["metric"] == "tokens_per_s.b8") & (ok["method"] == "spawn") & (ok["tp"] == 2)
             & (ok["parent_state"] == "bare")].iloc[0]
    assert (row["batch"], row["unit"], row["value"]) == (8, "tokens/s", pytest.approx(960.0))
    assert row["ci_low"] == pytest.approx(864.0) and row["ci_high"] == pytest.approx(1056.0) and row["n"] == 3
    assert row["engine_version"] == "torch-tp-1.0" and row["method_used"] == "spawn" and row["gpu"] == "none"


def test_failed_and_skipped_configurations_stay_with_their_status(tidy: pd.DataFrame) -> None:
    # one row per value asv holds: nothing dropped
    expected = sum(math.prod(len(v) for v in values) for engine, module, full in
                   (("torch-tp", "torch_tp", True), ("vllm", "engines", False))
                   for values, *_ in _benchmarks(module, engine, full).values())
    assert len(tidy) == expected
    status = tidy[tidy["metric"] == "status"].set_index(["engine", "method", "parent_state", "tp"])
    assert status.at[("torch-tp", "fork", "device-initialized", 1), "status"] == "error"
    assert status.at[("torch-tp", "fork", "device-initialized", 1), "error"] == FORK_ERROR
    assert status.at[("torch-tp", "fork", "device-initialized", 1), "value"] == 1
    assert status.at[("torch-tp", "spawn", "device-initialized", 2), "status"] == "timeout"
    assert status.at[("torch-tp", "spawn", "device-queried", 1), "status"] == "skipped"
    # every metric of a failed configuration carries the failure, not just the status row
    failed = tidy[(tidy["engine"] == "torch-tp") & (tidy["method"] == "fork") & (tidy["parent_state"] == "device-initialized")]
    assert set(failed["status"]) == {"error"} and failed["value"].isna().sum() == len(failed) - 2
    # skipped configurations have no record of their own: the environment's engine version is used
    assert tidy[tidy["status"] == "skipped"]["engine_version"].notna().all()
    # a metric that does not exist in a configuration (no forkserver under spawn) is skipped, not failed
    fs = tidy[(tidy["metric"] == "mem.forkserver.uss_mib") & (tidy["method"] == "spawn") & (tidy["parent_state"] == "bare")]
    assert set(fs["status"]) == {"skipped"}


def test_other_engine_modules_and_unknown_methods_appear(tidy: pd.DataFrame) -> None:
    vllm = tidy[tidy["engine"] == "vllm"]
    assert set(vllm["benchmark"]) == {"engines.VLLMStartup.track_status", "engines.VLLMStartup.track_time_to_ready"}
    # the sidecar names the environment "existing", asv "existing-py_...": still joined
    assert set(vllm[vllm["method"] == "fork"]["status"]) - {"skipped"} == {"error"}
    assert "ray" in set(tidy["method"])
    assert method_order(["ray", "spawn", "fork", "forkserver-preload"]) == ["fork", "spawn", "forkserver-preload", "ray"]


def test_the_grid_without_a_cuda_check_parameter(tmp_path: Path) -> None:
    """Since the harness folded the CUDA check into the parent state ("device-queried-nvml") and
    added labelled method variants, asv's parameters are engine, method, parent_state, tp."""
    for names_from in ("benchmarks.json", "shape"):
        root = write_results(tmp_path / names_from, new=True)
        if names_from == "shape":
            (root / "benchmarks.json").unlink()
        t = load(root).table
        st = t[t["metric"] == "status"].set_index(["engine", "method", "parent_state", "cuda_check", "tp"])
        variant = st.loc[("torch-tp", "fork-override", "bare", "runtime", 1)]
        assert (variant["status"], variant["method_used"]) == ("ok", "fork")  # joined through asv_params
        nvml = st.loc[("torch-tp", "spawn", "device-queried", "nvml", 2)]
        assert nvml["status"] == "skipped" and "needs a CUDA device" in nvml["error"]
    cells = charts.compatibility(t)
    assert "device-queried (NVML check)" in set(cells["parent_state"])
    assert method_order(t["method"]) == ["fork", "spawn", "forkserver-preload", "ray", "fork-override"]


def test_the_last_record_of_a_configuration_wins(tmp_path: Path) -> None:
    root = write_results(tmp_path)
    sidecar = next((root / "box" / "records").glob("*.jsonl"))
    first = json.loads(sidecar.read_text().splitlines()[0])  # torch-tp fork bare tp1, ok
    again = {**first, "asv_token": "t2", "method_used": "fork-verified-again"}
    with sidecar.open("a") as f:
        f.write(json.dumps(again) + "\n")
    t = load(root).table
    row = t[(t["metric"] == "status") & (t["engine"] == "torch-tp") & (t["method"] == "fork")
            & (t["parent_state"] == "bare") & (t["tp"] == 1)]
    assert row["method_used"].tolist() == ["fork-verified-again"]


def test_table_cli_prints_csv_in_a_child_interpreter(results_dir: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "analysis", "table", str(results_dir), "--csv"], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0]) == COLUMNS and len(rows) == len(load(results_dir).table)


def test_param_names_come_from_the_shape_without_benchmarks_json(tmp_path: Path, tidy: pd.DataFrame) -> None:
    root = write_results(tmp_path)
    (root / "benchmarks.json").unlink()
    t = load(root).table
    assert t["metric"].tolist() == tidy["metric"].tolist()


# -- bad input ----------------------------------------------------------------------------------
def _cli_error(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert cli.main(list(args)) == 2
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    return lines[0]


def test_missing_and_empty_directories(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert "no such directory" in _cli_error(capsys, "table", str(tmp_path / "nope"))
    assert "no asv results" in _cli_error(capsys, "table", str(tmp_path))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "machine.json").write_text("{}")
    assert "no results in them" in _cli_error(capsys, "table", str(tmp_path))


@pytest.mark.parametrize("damage,expected", [
    (lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]), "corrupt or truncated JSON"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "version": 1})), "format version 1"),
    (lambda p: p.write_text("[1, 2]"), "not an asv result file"),
])
def test_damaged_result_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture, damage, expected: str) -> None:
    root = write_results(tmp_path)
    victim = root / "box" / f"{COMMIT[:8]}-existing-py_venv_bin_python.json"
    damage(victim)
    line = _cli_error(capsys, "table", str(root))
    assert expected in line and str(victim) in line


def test_truncated_record_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_results(tmp_path)
    sidecar = next((root / "box" / "records").glob("*.jsonl"))
    sidecar.write_text(sidecar.read_text()[:-40])
    assert f"{sidecar}:" in _cli_error(capsys, "table", str(root))


def test_bad_options_are_one_line(results_dir: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["plan", str(results_dir)])  # --tp missing
    assert exc.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert "measured: 1, 2" in _cli_error(capsys, "plan", str(results_dir), "--tp", "4")
    assert "--parent-state warm: not measured" in _cli_error(capsys, "plan", str(results_dir), "--tp", "1",
                                                             "--engine", "torch-tp", "--parent-state", "warm")


def test_a_failed_report_never_replaces_a_good_one(results_dir: Path, built_report: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    good = (built_report / "index.html").read_bytes()
    bad = write_results(tmp_path / "bad")
    next((bad / "box").glob("*py_venv_bin_python.json")).write_text('{"results": {')  # truncated
    assert "corrupt or truncated" in _cli_error(capsys, "report", str(bad), "-o", str(built_report))

    def explode(*args, **kwargs):
        raise RuntimeError("disk full while drawing")

    monkeypatch.setattr(charts, "draw", explode)
    with pytest.raises(RuntimeError):
        report.write_report(results_dir, built_report)
    assert (built_report / "index.html").read_bytes() == good
    assert [p.name for p in built_report.parent.iterdir() if p.name.startswith(".")] == []  # no temp folder left


# -- charts ------------------------------------------------------------------------------------
def test_charts_are_written_as_png_and_svg(built_report: Path) -> None:
    for name in charts.CHARTS:
        png, svg = built_report / f"box-{name}.png", built_report / f"box-{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert b"<svg" in svg.read_bytes()[:2000], name
        assert png.stat().st_size > 10_000, f"{name} looks empty"


def test_a_chart_without_data_says_so(tidy: pd.DataFrame) -> None:
    nothing = tidy.assign(status="error")
    for name, (_, make) in charts.CHARTS.items():
        if name == "compatibility":
            continue
        fig = make(nothing)
        assert any("nothing measured" in t.get_text() or "fork did not run" in t.get_text() for t in fig.texts), name


def test_compatibility_cells(tidy: pd.DataFrame) -> None:
    cells = charts.compatibility(tidy).set_index(["engine", "method", "parent_state"])
    assert cells.at[("torch-tp torch-tp-1.0", "fork", "device-initialized"), "verdict"] == "fails"
    assert cells.at[("torch-tp torch-tp-1.0", "fork", "device-initialized"), "error"] == FORK_ERROR
    assert cells.at[("torch-tp torch-tp-1.0", "spawn", "device-initialized"), "text"] == "TP1 works, TP2 hangs"
    assert cells.at[("torch-tp torch-tp-1.0", "ray", "bare"), "verdict"] == "works"
    assert cells.at[("torch-tp torch-tp-1.0", "spawn", "device-queried"), "verdict"] == "n/a"


# -- capacity planning ---------------------------------------------------------------------------
def _measured(method: str, ttr: float, pss: float, gpu: float | None, rate: float, status: str = "ok") -> list[dict]:
    """Hand-made tidy rows of one TP=2 configuration of our workload on an 8-GPU machine."""
    base = {c: None for c in COLUMNS} | {"machine": "node", "commit": "c", "env": "e", "date": pd.Timestamp(0),
                                         "engine": "torch-tp", "method": method, "method_used": method, "tp": 2,
                                         "parent_state": "torch", "cuda_check": "runtime", "status": status,
                                         "error": None if status == "ok" else "boom", "gpu_count": 8}
    rows = [base | {"metric": "status", "value": 0 if status == "ok" else 1}]
    if status == "ok":
        rows += [base | {"metric": "time_to_ready_s", "value": ttr, "ci_low": ttr * 0.95, "ci_high": ttr * 1.05, "n": 5},
                 base | {"metric": "mem.group.pss_mib", "value": pss, "ci_low": pss * 0.99, "ci_high": pss * 1.01,
                         "n": 5},
                 base | {"metric": "tokens_per_s.b4", "value": rate, "batch": 4, "ci_low": rate * 0.95,
                         "ci_high": rate * 1.05, "n": 5}]
        if gpu is not None:
            rows += [base | {"metric": f"mem.rank{r}.gpu_mib", "value": gpu + r} for r in range(2)]
    return rows


def test_capacity_plan_on_hand_made_numbers() -> None:
    df = pd.DataFrame(_measured("fork", 1.0, 10 * 1024, 20_000, 1000)
                      + _measured("spawn", 10.0, 20 * 1024, 20_000, 1000)
                      + _measured("forkserver-preload", 0.5, 10 * 1024, 20_000, 800)
                      + _measured("forkserver", 2.0, 5 * 1024, 90_000, 1000)
                      + _measured("ray", 0, 0, None, 0, status="error"), columns=COLUMNS)
    node = Node(gpus=8, gpu_mem_gib=80, ram_gib=64, cpus=16)
    p = plan(df, node, tp=2, restarts_per_day=100, busy_hours=0)  # no decode load: start-up decides
    t = p.table.set_index("method")
    assert list(t.index) == ["fork", "spawn", "forkserver", "forkserver-preload", "ray"]
    # 8 GPUs / TP 2 = 4; 16 cores / 2 = 8; RAM 64 GiB / 10 GiB = 6 (fork), / 20 GiB = 3 (spawn)
    assert t.at["fork", "replicas"] == 4 and t.at["fork", "limited_by"] == "GPUs"
    assert t.at["spawn", "replicas"] == 3 and t.at["spawn", "limited_by"] == "host RAM"
    assert t.at["forkserver", "replicas"] == 0 and t.at["forkserver", "limited_by"] == "GPU memory"
    assert t.at["forkserver", "gpu_fit"] == "does not fit"  # our workload reserves nothing: all of it is fixed
    assert t.at["fork", "ram_headroom_gib"] == pytest.approx(64 - 4 * 10)
    assert t.at["fork", "gpu_headroom_gib"] == pytest.approx(80 - 20_001 / 1024)
    assert t.at["fork", "startup_gpu_s_per_day"] == pytest.approx(100 * 1.0 * 2)
    assert t.at["forkserver-preload", "startup_gpu_s_per_day"] == pytest.approx(100 * 0.5 * 2)
    # same replicas as fork, half its start-up (resolved, 50% of fork's): recommended, though it decodes slower
    assert p.recommended == "forkserver-preload"
    assert p.verdict.startswith("forkserver-preload: against fork: starts 0.5 s faster (50% of fork's")
    assert t.at["spawn", "reason"].startswith("spawn loses to forkserver-preload: 4 replicas a node against 3")
    assert t.at["forkserver", "reason"].startswith("does not fit: GPU memory; GPU: fixed 90,001 MiB")
    assert t.at["ray", "reason"] == "fails: boom" and not t.at["ray", "recommended"]
    # an hour of decoding a day: forkserver-preload's slower decode (800 vs 1000 tokens/s, resolved, 20%)
    # costs 2 x 900 GPU-s a day, more than it saves at start-up at every point: fork wins, with the CUDA caveat
    busy = plan(df, node, tp=2, restarts_per_day=100, busy_hours=1)
    t = busy.table.set_index("method")
    assert t.at["forkserver-preload", "decode_gpu_s_per_day"] == pytest.approx(2 * (3600 * 1000 / 800 - 3600))
    assert t.at["spawn", "decode_gpu_s_per_day"] == 0
    assert busy.recommended == "fork" and "decodes 25.0% faster" in busy.verdict
    assert "fork is wrong once the parent queries CUDA" in t.at["fork", "reason"]
    # a GPU machine's measurements do not plan a node without GPUs
    with pytest.raises(BadInput, match="^--gpus 0: node measured on GPUs"):
        plan(df, Node(gpus=0, gpu_mem_gib=None, ram_gib=64, cpus=4), tp=2, restarts_per_day=1)


def test_capacity_costs_per_node_and_fleet_and_an_unresolved_start_up() -> None:
    df = pd.DataFrame(_measured("fork", 1.0, 10 * 1024, 20_000, 1000)
                      + _measured("spawn", 10.0, 20 * 1024, 20_000, 1000), columns=COLUMNS)
    node = Node(gpus=8, gpu_mem_gib=80, ram_gib=1024, cpus=64)
    p = plan(df, node, tp=2, restarts_per_day=100, busy_hours=1, replicas=40)
    t = p.table.set_index("method")
    # 4 replicas a node (8 GPUs / TP 2), each losing 100 x 1 s x 2 GPUs a day; 40 replicas need 10 nodes
    assert t.at["fork", "node_gpu_h_per_day"] == pytest.approx(4 * 200 / 3600)
    assert t.at["fork", "nodes_needed"] == 10
    assert t.at["fork", "fleet_gpu_h_per_day"] == pytest.approx(40 * 200 / 3600)
    # decode rates equal within [-9.5%, +10.5%]: at one busy hour fork's start-up saving (100 x 9 s x 2 GPUs,
    # at least 100 x 8.45 s) outweighs the worst decode case; busy all day it does not
    assert p.recommended == "fork"
    assert break_even_gap(9, 100, 1) == pytest.approx(0.2) and break_even_gap(9, 100, 0) is None
    allday = plan(df, node, tp=2, restarts_per_day=100)
    assert allday.recommended is None
    assert allday.verdict.startswith("no verdict: fork vs spawn: fork starts 9 s sooner [8.45, 9.55] (from the start "
                                     "request to ready; exec to ready not recorded before record/3); "
                                     "decode fork 0% [-9.5%, +10.5%] of spawn's (asv's intervals of the medians); "
                                     "fork decoding 1% slower cancels its saving at 100 starts and 24 busy h a day")
    assert allday.break_even.loc["100", "1 h"] == "20.0% fork" and allday.break_even.loc["100", "24 h"] == "1% ?"
    # start-up times inside each other's 99% intervals: no recommendation, and what would resolve them
    close = df.copy()
    ttr = close["metric"] == "time_to_ready_s"
    close.loc[ttr, ["ci_low", "ci_high"]] = [[0.5, 20.0]] * int(ttr.sum())
    p = plan(close, node, tp=2, restarts_per_day=100, busy_hours=1)
    assert p.recommended is None
    assert p.verdict.startswith("no verdict: fork vs spawn: start-up spawn - fork +9 s [-19.5, +19.5] (from the start "
                                "request to ready; exec to ready not recorded before record/3), not resolved at 99%")
    assert "cold starts a side would resolve the start-up" in p.verdict


def test_gpu_need_is_a_fixed_part_plus_the_kv_cache() -> None:
    """vLLM's GPU figure is mostly the KV cache it sized from gpu_memory_utilization: on a smaller
    GPU the cache shrinks, only the fixed part must fit (reports/h200-tp1: a 1B model on 40 GiB)."""
    res = load(REPO / "reports" / "h200-tp1")
    node = Node(gpus=8, gpu_mem_gib=40, ram_gib=1024, cpus=64)
    t = plan(res.table, node, tp=1, restarts_per_day=24, engine="vllm").table.set_index("method")
    fork = t.loc["fork"]
    assert fork["gpu_mib_measured"] == pytest.approx(72_866, abs=1)
    assert fork["gpu_fixed_mib"] == pytest.approx(72_866 - 67_993.6, abs=1)  # less the records' kv_cache_mib
    assert fork["kv_cache_mib"] == pytest.approx(0.9 * 40 * 1024 - fork["gpu_fixed_mib"])
    assert fork["kv_cache_tokens"] == pytest.approx(fork["kv_cache_mib"] * 2_175_920 / 67_993.6)
    assert fork["replicas"] == 8 and fork["limited_by"] == "GPUs"
    assert "KV cache shrunk to" in fork["reason"] and "32.0 tokens/MiB" in fork["reason"]
    # the parent's own CUDA context counts in the fixed part where the parent created one
    forced = plan(res.table, node, tp=1, restarts_per_day=24, engine="vllm",
                  parent_state="device-initialized").table.set_index("method")
    assert forced.index[0] == "fork→spawn (forced)"
    assert forced.iloc[0]["gpu_fixed_mib"] == pytest.approx(fork["gpu_fixed_mib"] + 612, abs=1)
    # Xinference's GPU process is its engine core; no KV size recorded: its fit on 40 GiB is unknown (it fits
    # the 141 GiB it was measured on), with what it would need, never a wrong "does not fit"
    xi = plan(res.table, node, tp=1, restarts_per_day=24, engine="xinference",
              measured_gpu_mib=143_771).table.iloc[0]
    assert xi["method"] == "fork→spawn (forced)" and xi["gpu_mib_measured"] == pytest.approx(72_366, abs=1)
    assert xi["gpu_fit"] == "unknown" and xi["replicas"] == 8 and pd.isna(xi["gpu_fixed_mib"])
    assert "GPU fit unknown: measured 72,366 MiB on a 143,771 MiB GPU" in xi["reason"]
    assert "below gpu_memory_utilization=0.9 x 40,960 = 36,864 MiB" in xi["reason"]
    big = plan(res.table, Node(gpus=8, gpu_mem_gib=141, ram_gib=1024, cpus=64), tp=1, restarts_per_day=24,
               engine="xinference", measured_gpu_mib=143_771).table.iloc[0]
    assert big["gpu_fit"] == "fits"
    # its time to ready is the whole restart, server start included (phase.ready, not the launch's 132 s)
    assert xi["time_to_ready_s"] == pytest.approx(206.6, abs=0.1)
    assert "server start request to ready" in xi["reason"]


def test_capacity_plan_takes_the_newest_of_two_environments() -> None:
    old = [r | {"env": "other", "date": pd.Timestamp(-1)} for r in _measured("spawn", 99.0, 20 * 1024, 20_000, 1000)]
    df = pd.DataFrame(old + _measured("fork", 1.0, 10 * 1024, 20_000, 1000)
                      + _measured("spawn", 10.0, 20 * 1024, 20_000, 1000), columns=COLUMNS)
    t = plan(df, Node(gpus=8, gpu_mem_gib=80, ram_gib=64, cpus=16), tp=2, restarts_per_day=100).table
    assert list(t["method"]) == ["fork", "spawn"]
    assert t.set_index("method").at["spawn", "time_to_ready_s"] == 10.0
    # asv's pass of a later commit in another environment skipped fork: the older measurement stays
    skipped = [r | {"env": "later", "date": pd.Timestamp(1), "metric": "status", "value": None, "status": "skipped"}
               for r in _measured("fork", 1.0, 10 * 1024, 20_000, 1000)[:1]]
    t = plan(pd.concat([df, pd.DataFrame(skipped, columns=COLUMNS)]), Node(gpus=8, gpu_mem_gib=80, ram_gib=64, cpus=16),
             tp=2, restarts_per_day=100).table.set_index("method")
    assert t.at["fork", "status"] == "ok" and t.at["fork", "time_to_ready_s"] == 1.0


def test_break_even_points() -> None:
    # 1 s + N/100 = 3 s + N/200  ->  N = 400
    assert break_even_tokens(1, 100, 3, 200) == pytest.approx(400)
    assert break_even_tokens(1, 200, 3, 100) is None  # a starts faster and decodes faster: never
    assert break_even_tokens(1, 100, 1, 100) is None
    # R*1 + T/100 = R*3 + T/200 with T = 4000  ->  R = 10
    assert break_even_restarts(1, 100, 3, 200, 4000) == pytest.approx(10)
    assert rates_differ((100, 120), (130, 150)) and rates_differ((130, 150), (100, 120))
    assert not rates_differ((100, 140), (130, 150))  # overlapping 99% intervals: no break-even from them
    assert not rates_differ((float("nan"), 120), (130, 150))


def test_plan_cli_defaults_to_the_measured_machine(results_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["plan", str(results_dir), "--tp", "2", "--engine", "torch-tp", "--busy-hours", "0", "--csv"]) == 0
    t = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("method")
    assert t.at["fork", "replicas"] == 8  # 16 CPU cores / TP 2, no GPU
    assert t["recommended"].sum() == 1 and t.at["fork", "recommended"]


# -- the report ---------------------------------------------------------------------------------
def test_report_is_self_contained_and_reproducible(built_report: Path, results_dir: Path) -> None:
    page = (built_report / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(charts.CHARTS) == 6
    for words in ("Methodology", "CLOCK_MONOTONIC", "smaps_rollup", "compute_stats", "Capacity planning",
                  "Machine and versions", "torch 2.13.0+cpu"):
        assert words in page, words
    assert (built_report / "table.csv").exists()
    # the report carries the results it was made from: it can be rebuilt from itself, in place
    assert load(built_report).table.equals(load(results_dir).table)
    before = sorted(p.relative_to(built_report) for p in (built_report / "results").rglob("*"))
    report.write_report(built_report, built_report)
    assert sorted(p.relative_to(built_report) for p in (built_report / "results").rglob("*")) == before


def test_everything_reaching_the_page_is_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = "<script>alert(1)</script>"
    root = write_results(tmp_path / "r", machine=hostile, error='<img src=x onerror="alert(2)">',
                         env_suffix="<svg onload=alert(3)>")

    def placeholder(df, machine, out_dir, prefix="", **_):  # the page is under test here, not the charts
        paths = {}
        for name in charts.CHARTS:
            paths[name] = {ext: out_dir / f"{prefix}{name}.{ext}" for ext in ("png", "svg")}
            for p in paths[name].values():
                p.write_bytes(b"x")
        return paths

    monkeypatch.setattr(charts, "draw", placeholder)
    page = (Path(report.write_report(root, tmp_path / "out"))).read_text()
    assert hostile not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    assert "<svg onload" not in page
    assert "<script" not in page


# -- the notebook -------------------------------------------------------------------------------
def test_notebook_runs_over_the_committed_sample(tmp_path: Path) -> None:
    pytest.importorskip("jupytext")
    pytest.importorskip("nbclient")
    assert (REPO / "reports" / "sample-cpu" / "results").is_dir(), "the committed sample report is missing"
    # In a child interpreter: the kernel's ZeroMQ context would stay open in this one.
    executed = tmp_path / "executed.ipynb"
    script = (
        "import sys, jupytext, nbclient, nbformat\n"
        "nb = jupytext.read(sys.argv[1])\n"
        "nbclient.NotebookClient(nb, timeout=120, kernel_name='python3',\n"
        "                        resources={'metadata': {'path': sys.argv[2]}}).execute()\n"
        "nbformat.write(nb, sys.argv[3])\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(REPO / "notebooks" / "capacity_planning.py"),
                          str(REPO / "notebooks"), str(executed)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]  # CellExecutionError names the failing cell
    nb = json.loads(executed.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("recommended:" in "".join(o.get("text", "")) for o in outputs)


# -- the reports that decide ------------------------------------------------------------------------
COMMITTED = sorted(p for p in (REPO / "reports").glob("*/results") if p.is_dir())


@pytest.mark.parametrize("results", COMMITTED, ids=lambda p: p.parent.name)
def test_every_startup_bar_equals_time_to_ready(results: Path) -> None:
    """Chart 1 stacks each engine's phases in time order, clamped at 0: each bar is exactly the
    configuration's time to ready, whatever phases the engine has (vLLM, Xinference, Ray)."""
    from analysis.load import latest

    df = latest(charts.label_nvml(load(results).table))
    stacks = charts.phase_stacks(df)
    assert stacks
    totals = charts.bar_totals(df).reset_index()
    for engine, (spans, _) in stacks.items():
        want = totals[totals["engine_label"] == engine].set_index(["parent_state", "tp", "method"])["value"]
        assert (spans >= 0).all().all(), engine
        assert set(spans.index) == set(want.index), engine
        for key, total in want.items():
            assert spans.loc[key].sum() == pytest.approx(total, abs=1e-9), (engine, key)


def test_the_summary_gives_causes_intervals_and_only_resolved_verdicts(capsys: pytest.CaptureFixture) -> None:
    from analysis.summary import Estimate, difference, summarize

    d = difference(Estimate(10, 9, 11, 3), Estimate(4, 3, 5, 3))
    assert (d.value, d.lo, d.hi, d.resolved) == (6, 4, 8, True)
    assert not difference(Estimate(5, 3, 7, 3), Estimate(4, 3, 5, 3)).resolved
    groups, _ = summarize(load(REPO / "reports" / "h100-tp2" / "results").table)
    by = {g.key["parent_state"] + g.key["cuda_check"]: g for g in groups}
    queried = by["device-queriedruntime"]
    fork = next(r for r in queried.rows if r.method == "fork")
    assert fork.cause.endswith("RuntimeError: Cannot re-initialize CUDA in forked subprocess. To use CUDA with "
                               "multiprocessing, you must use the 'spawn' start method")
    assert "Traceback" not in fork.cause
    assert queried.verdicts[0].startswith("use spawn: fork fails")
    for g in groups:  # a "use" verdict only where a difference is resolved
        for r in g.rows:
            for k, delta in r.deltas.items():
                if not delta.resolved:
                    assert not any(v.startswith(f"use {r.method} over") and k == "only" for v in g.verdicts)
        assert any("fork is wrong once the parent touched CUDA" in v for v in g.verdicts)
    bare = by["bareruntime"]
    assert bare.verdicts[0].startswith("spawn vs fork: not resolved with 3 cold starts: run")
    # a fork that was not measured (left out of the profile) is no failure: vllm serve on the H200
    h200, _ = summarize(load(REPO / "reports" / "h200-tp1" / "results").table)
    serve = next(g for g in h200 if g.key["engine"] == "vllm-serve")
    assert serve.verdicts[0] == "only spawn measured here: no comparison with fork"
    assert cli.main(["summary", str(REPO / "reports" / "h100-tp2")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Executive summary") and "e+0" not in out and "Traceback" not in out


def test_a_record_of_another_schema_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_results(tmp_path)
    sidecar = next((root / "box" / "records").glob("*.jsonl"))
    lines = sidecar.read_text().splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), "schema": "forkspawn.record/9"})
    sidecar.write_text("\n".join(lines) + "\n")
    line = _cli_error(capsys, "table", str(root))
    assert f"{sidecar}:1:" in line and "forkspawn.record/9" in line


# -- the charts draw the table's numbers, and fit -------------------------------------------------
H200 = REPO / "reports" / "h200-tp1" / "results"


@pytest.fixture(scope="module")
def h200_view() -> pd.DataFrame:
    from analysis.load import latest

    return charts.view(latest(load(H200).table))


@pytest.fixture(scope="module")
def h100_vllm_view() -> pd.DataFrame:
    """reports/h100-vllm-tp1's view with its decode parity, as the report hands it to the charts."""
    from analysis import parity
    from analysis.load import latest

    res = load(REPO / "reports" / "h100-vllm-tp1")
    view = charts.view(latest(res.table))
    view.attrs["parity"] = parity.table(res.records)
    return view


def _bars(fig) -> list:
    return [p for ax in fig.axes for c in ax.containers if hasattr(c, "patches") for p in c.patches]


def _rounded(values) -> list[float]:
    return sorted(round(float(v), 6) for v in values)


def no_bar_of_nothing(fig) -> None:
    """Every bar has a height, and every panel left on the figure draws something or says why not."""
    assert all(math.isfinite(p.get_height()) and math.isfinite(p.get_y()) for p in _bars(fig))
    for ax in fig.axes:
        drawn = ax.containers or ax.collections or [ln for ln in ax.get_lines() if len(ln.get_xdata())]
        assert drawn or any(t.get_text().strip() for t in ax.texts), ax.get_title()


def throughput_bars_are_the_tables(view: pd.DataFrame, fig) -> None:
    """Chart 3: one bar per tokens/s median of the table, and no other bar."""
    no_bar_of_nothing(fig)
    ok = charts._ok(view, r"tokens_per_s\.b\d+")
    assert _rounded(p.get_height() for p in _bars(fig)) == _rounded(ok["value"])


def startup_stacks_are_time_to_ready(view: pd.DataFrame, fig) -> dict:
    """Chart 1: each configuration's stack of phases is its time to ready (as a restart pays it),
    from the exec of the process restarted where the record has exec to ready (record/3)."""
    no_bar_of_nothing(fig)
    totals: dict = {}
    for p in _bars(fig):
        key = (id(p.axes), round(p.get_x() + p.get_width() / 2, 6))
        totals[key] = totals.get(key, 0.0) + p.get_height()
    assert _rounded(totals.values()) == _rounded(charts.bar_totals(view)["value"])
    return totals


def memory_segments_are_the_tables(view: pd.DataFrame, fig) -> None:
    """Chart 2: every segment of a stack is one process's value in the table."""
    no_bar_of_nothing(fig)
    ok = charts._ok(view, r"mem\.[^.]+\.(uss|pss|rss|gpu)_mib")
    values = set(_rounded(ok[ok["process"] != "group"]["value"]))
    assert set(_rounded(p.get_height() for p in _bars(fig))) <= values


def test_chart_3_bars_are_the_tables_tokens_per_s(h200_view: pd.DataFrame) -> None:
    import matplotlib

    with matplotlib.rc_context(charts.STYLE):
        fig = charts.chart_throughput(h200_view)
    throughput_bars_are_the_tables(h200_view, fig)
    # named by the method that ran: Xinference asked fork and ran spawn
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert "fork→spawn (forced)" in labels
    # n=2 has no whisker: it says so
    assert any(t.get_text() == "n=2: no interval" for ax in fig.axes for t in ax.texts)


def test_chart_1_stacks_to_time_to_ready_on_one_scale(h200_view: pd.DataFrame) -> None:
    import matplotlib

    with matplotlib.rc_context(charts.STYLE):
        fig = charts.chart_startup(h200_view)
    totals = startup_stacks_are_time_to_ready(h200_view, fig)
    assert max(totals.values()) == pytest.approx(206.65, abs=0.01)  # Xinference, its server's start included
    # one y-scale per engine (a row of panels), so that Xinference's 207 s does not flatten vLLM's 20 vs 61 s
    tops: dict[str, set] = {}
    for ax in fig.axes:
        if ax.containers:
            tops.setdefault(ax.get_title().split("\n")[0], set()).add(ax.get_ylim()[1])
    assert all(len(t) == 1 for t in tops.values()), tops
    vllm = next(t for e, t in tops.items() if e.startswith("vllm 0.26.0"))
    xinference = next(t for e, t in tops.items() if e.startswith("xinference"))
    assert max(vllm) < 150 < min(xinference)


def test_chart_5_is_the_planners_break_even(h100_vllm_view: pd.DataFrame) -> None:
    """Chart 5 draws, per engine and mode, the break-even decode gap of the faster starter over busy
    hours (within a day), one line per restarts a day, against the decode interval's worst case from
    decode parity across cold starts (reports/h100-vllm-tp1: fork up to 1.9% slower at batch 16, its
    14 cold starts a side paired round by round)."""
    import matplotlib

    from analysis import decide

    with matplotlib.rc_context(charts.STYLE):
        fig = charts.chart_amortisation(h100_vllm_view)
    compiled = next(ax for ax in fig.axes if ax.get_title().startswith("fork starts 27.3 s sooner than spawn"))
    for line in compiled.get_lines():
        if line.get_label().split()[0].isdigit():  # a restarts-a-day curve: "24 starts/day"
            r = float(line.get_label().split()[0])
            x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
            assert x.min() >= 0.1 and x.max() <= 24
            saving = 38.944 - 11.660  # the medians of time to ready
            assert y == pytest.approx([100 * decide.break_even_gap(saving, r, h) for h in x], rel=1e-3)
    labels = [t.get_text() for t in compiled.get_legend().get_texts()]
    assert "99% interval: fork up to 1.9% slower" in labels
    assert "fork holds up to 5.3 h a day at 24 starts/day" in labels  # the planner's own statement


def test_chart_3_says_what_decode_parity_says_of_a_pair_it_cannot_resolve(h100_vllm_view: pd.DataFrame) -> None:
    """asv's intervals of the medians leave reports/h100-vllm-tp1's fork and spawn unresolved; parity
    across cold starts calls the compiled pair equal within ±3% at batch 16, leaves it open at batch 1
    and eager open at both: the note says each."""
    import matplotlib

    with matplotlib.rc_context(charts.STYLE):
        fig = charts.chart_throughput(h100_vllm_view)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("vllm")]
    assert len(panels) == 2  # batch 1 and 16
    for ax in panels:
        note = "\n".join(t.get_text() for t in ax.texts)
        compiled = "equal within ±3%" if ax.get_title().split("\n")[0].endswith("batch 16") else "unresolved"
        assert f"spawn vs fork ({compiled} across cold starts)" in note
        assert "spawn-eager vs fork-eager (unresolved across cold starts)" in note


@pytest.mark.parametrize("name", list(charts.CHARTS))
def test_tick_labels_never_overprint(h200_view: pd.DataFrame, name: str) -> None:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    with matplotlib.rc_context(charts.STYLE):
        fig = charts.CHARTS[name][1](h200_view)
        FigureCanvasAgg(fig).draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
            for i, a in enumerate(boxes):
                for b in boxes[i + 1:]:
                    assert not a.overlaps(b), (name, ax.get_title())



def test_a_metric_an_ok_record_lacks_has_the_records_note_as_its_reason() -> None:
    """Issue #32: Xinference's batch-16 rate was null, the reason in the record's notes; the table's
    `error` says it (asv stored NaN: the benchmark's setup skipped it), and it reads "not run"."""
    from analysis import verdict
    from analysis.load import _status
    from forkspawn.record import Record

    note = "tokens/s at batch 16 not measured: asked for 5 output tokens, got [1, 5]: fixed lengths not honoured"
    rec = Record(status="ok", samples={"tokens_per_s.b1": [1.0]}, notes=["role supervisor: ...", note])
    assert _status(math.nan, rec, "tokens_per_s.b16") == ("skipped", note)
    assert _status(None, rec, "step_latency_s.b16") == ("skipped", note)
    assert _status(math.nan, rec, "tokens_per_s.b4")[1].startswith("not measured in this run")
    assert verdict.word("skipped", note) == verdict.NOT_RUN  # it could exist: it was not measured


def test_an_environment_named_by_a_machines_path_is_the_same_environment() -> None:
    """asv named an `existing` environment by its interpreter's absolute path; `make bench` names it
    by the path in the project. Results of both, for one configuration, are one configuration:
    `latest` keeps the newer, whichever way each is named."""
    from analysis.load import env_key, latest

    old = _measured("fork", 2.0, 10 * 1024, 20_000, 1000)
    new = _measured("fork", 1.0, 10 * 1024, 20_000, 1000)
    df = pd.DataFrame([r | {"env": "existing-py_work_main_.venv-vllm_bin_python", "commit": "old"} for r in old]
                      + [r | {"env": "existing-py_.venv-vllm_bin_python", "commit": "new", "date": pd.Timestamp(1)}
                         for r in new], columns=COLUMNS)
    assert env_key("existing-py_root_tree_.venv_bin_python") == env_key("existing-py_.venv_bin_python")
    assert env_key("existing-py_.venv-vllm_bin_python") == "existing-py_.venv-vllm_bin_python"
    assert env_key("virtualenv-py3.11-torch2.13.0") == "virtualenv-py3.11-torch2.13.0"
    assert set(latest(df)["commit"]) == {"new"}
