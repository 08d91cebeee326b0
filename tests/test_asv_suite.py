"""The asv suite as asv sees it: it loads, and its grid is the one docs/running.md describes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the suite's glue is the suite's: benchmarks/common.py


def suite_of(**env: str):
    """The suite the environment `env` asks for (common.Suite.from_environ)."""
    from benchmarks.common import Suite

    return Suite.from_environ({"FORKSPAWN_GPUS": "0", **env})


def test_asv_check_passes() -> None:
    out = subprocess.run([sys.executable, "-m", "asv", "check", "-E", f"existing:{sys.executable}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No problems found" in out.stdout


def test_cpu_grid_has_every_method_and_no_device_state_but_in_startup() -> None:
    from benchmarks.common import SUITE
    from benchmarks.torch_tp import TorchTPMemory, TorchTPStartup
    from forkspawn.methods import METHODS

    assert TorchTPMemory.params[1] == list(METHODS)
    if not SUITE.on_gpu:
        assert TorchTPMemory.params[2] == ["bare", "torch"]
        assert "device-initialized" in TorchTPStartup.params[2]  # shown as skipped, not hidden
        assert TorchTPMemory.params[3] == ["2", "1"][-len(SUITE.tps):]  # asv preselects the first: measured


GRID_OF_PROFILE = """
import itertools, json, sys
sys.path.insert(0, {root!r})
from benchmarks import common as suite
from benchmarks.engines import VllmStartup
from benchmarks.torch_tp import TorchTPStartup
measured = [" ".join(p) for cls in (TorchTPStartup, VllmStartup) for p in itertools.product(*cls.params)
            if not suite.SUITE.profile.leaves_out(p[0], p[1], p[2], int(p[3]), cls.tps)]
print(json.dumps({{"params": [TorchTPStartup.params, VllmStartup.params], "measured": measured,
                  "vllm_extra": suite.config_of("vllm", "spawn", "bare", "2", suite.SUITE, {{}}, VllmStartup.options).extra}}))
"""


def _grid(profile: str) -> dict:
    env = {"FORKSPAWN_PROFILE": profile, "FORKSPAWN_GPUS": "0", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", GRID_OF_PROFILE.format(root=str(ROOT))], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_profiles_share_the_grid_and_leave_out_what_they_say() -> None:
    full, default = _grid("full"), _grid("default")
    assert full["params"] == default["params"]  # results of different profiles line up
    assert "torch-tp fork bare 1" in full["measured"] and "torch-tp fork bare 1" not in default["measured"]
    assert "torch-tp ray bare 2" in default["measured"] and "torch-tp ray torch 2" not in default["measured"]
    assert "vllm fork-override bare 2" in default["measured"] and "vllm ray-override bare 2" not in default["measured"]
    assert default["vllm_extra"] == {"vllm_kwargs": {"enforce_eager": True}} and full["vllm_extra"] == {}


@pytest.mark.parametrize("env,line", [
    ({"FORKSPAWN_PROFILE": "fast"}, "unknown FORKSPAWN_PROFILE 'fast'; valid: full, default, brief, quick"),
    ({"FORKSPAWN_JOBS": "^engines ^(torch_tp"},
     "FORKSPAWN_JOBS: '^(torch_tp' is not a regular expression (missing ), unterminated subpattern at position 1)"),
])
def test_a_bad_profile_or_job_list_is_a_one_line_error(env: dict, line: str) -> None:
    """`make bench` asks `forkspawn profile` first: one line naming the culprit and the choices."""
    out = subprocess.run([sys.executable, "-m", "forkspawn", "profile"], capture_output=True, text=True,
                         env={"FORKSPAWN_GPUS": "0", **env}, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"forkspawn: error: {line}"]


ORDER_OF_PREFILL = """
import json, os, sys
sys.path.insert(0, {root!r})
from types import SimpleNamespace
from benchmarks import common as suite
from benchmarks.engines import VllmStartup
seen, turns = [], []
def cached_record(token, config, conf_dir, asv_params, grid_suite, until=None):
    seen.append(asv_params.replace("|", " "))
    turns.append([asv_params.split("|")[1], until])
    return SimpleNamespace(status="ok", samples={{}})
suite.cached_record = cached_record
print(json.dumps({{"n": suite.measure_first("^engines\\\\.VllmStartup$", "t"), "seen": seen,
                  "filtered": [suite.measure_first("^engines\\\\.VllmStartup$", "t", ["device-initialized"], ["fork"]), seen[-1]],
                  "alternate": [turns.clear(), suite.measure_first("^engines\\\\.VllmStartup$", "t", ["torch"],
                                                                  ["fork", "spawn"], alternate=True), turns][1:],
                  "counts": {{m + (s != "torch") * f"-{{s}}": [suite.SUITE.measured("vllm", m, s)[k]
                                                              for k in ("least", "repeat", "warmup_starts")]
                             for m, s in (("fork", "torch"), ("spawn", "torch"), ("fork", "device-queried"),
                                          ("spawn", "device-queried"))}},
                  "model": suite.SUITE.measured("vllm")["model"],
                  "variants": [suite.SUITE.profile.leaves_out("vllm", m, "torch", 1, [1]) for m in VllmStartup.variants],
                  "serve": [suite.SUITE.profile.leaves_out("vllm-serve", m, "bare", 1, [1]) for m in ("fork", "spawn")],
                  "extra": {{m: suite.config_of("vllm", m, "torch", "1", suite.SUITE, VllmStartup.variants).extra
                            for m in ("fork-coldcache", "spawn-killworker", "fork-killcore")}}}}))
"""


def _order_of_prefill(profile: str) -> dict:
    env = {"FORKSPAWN_PROFILE": profile, "FORKSPAWN_GPUS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", ORDER_OF_PREFILL.format(root=str(ROOT))], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_prefill_takes_every_method_of_a_state_before_the_next_state_on_a_gpu_grid() -> None:
    """A lease that ends early leaves fork and spawn of the most common parent state measured,
    not fork of every state and spawn of none (asv's own order)."""
    got = _order_of_prefill("default")
    # the GPU default's vLLM points (benchmarks/common.py, _GPU_DEFAULT_POINTS): the torch parent's
    # pair, then the parents that touched CUDA; the labelled variants and Ray are left to `full`
    assert got["seen"][:got["n"]] == ["vllm fork torch 1", "vllm spawn torch 1", "vllm fork device-initialized 1",
                                      "vllm fork device-queried 1", "vllm fork device-queried-nvml 1"]
    assert all(got["variants"]) and got["serve"] == [None, None], "`vllm serve` is measured asked for fork and spawn"
    assert got["filtered"] == [1, "vllm fork device-initialized 1"]  # --states and --methods keep only those points
    # the torch parent's pair: 3 each, fork after a warm-up (the box's first start); fork after the
    # CUDA runtime query fails the same way twice; the other device-state points once
    assert got["counts"] == {"fork": [3, 3, 1], "spawn": [3, 3, 0], "fork-device-queried": [2, 2, 0],
                             "spawn-device-queried": [1, 1, 0]}
    # --alternate: a round of warm-ups (until=0), then fork and spawn take turns, one cold start
    # each a round, to the cap (3), the order turning round every round (ABBA); then asv's setup
    # reads each record back
    n, turns = got["alternate"]
    assert n == 2
    rounds = [[["fork", r], ["spawn", r]][:: 1 if r % 2 else -1] for r in range(1, 4)]
    assert turns == [["fork", 0], ["spawn", 0]] + [t for r in rounds for t in r] + [["fork", None], ["spawn", None]]
    assert got["model"] == "1b"
    assert got["extra"] == {"fork-coldcache": {"vllm_compile_cache": "cold"},
                            "spawn-killworker": {"vllm_fault": "rank0:decode:kill", "vllm_executor": "mp"},
                            "fork-killcore": {"vllm_fault": "engine-core:decode:kill"}}
    # `full` measures the labelled variants, after every plain method of every state, a state at a
    # time: the mp executor, eager, gc.freeze(), cold compile caches, then the crashes
    full = _order_of_prefill("full")
    plain = 3 * 5  # fork, spawn, ray from each of the five parent states
    assert full["seen"][plain:plain + 11] == [f"vllm {m} torch 1" for m in (
        "fork-mp", "spawn-mp", "fork-eager", "spawn-eager", "fork-gcfreeze", "fork-coldcache", "spawn-coldcache",
        "fork-killworker", "spawn-killworker", "fork-killcore", "spawn-killcore")]
    assert full["counts"]["fork"] == [5, 8, 0] and not any(full["variants"])


def test_recorded_only_skips_what_the_run_did_not_measure(tmp_path: Path, monkeypatch) -> None:
    from benchmarks import common
    from forkspawn.config import Config

    (tmp_path / "asv.conf.json").write_text(json.dumps({"results_dir": "results"}))
    monkeypatch.setenv("ASV_COMMIT", "0" * 40)
    try:
        common.cached_record("tok", Config(), tmp_path, "torch-tp|spawn|bare|1", suite_of(FORKSPAWN_RECORDED_ONLY="1"))
    except NotImplementedError as exc:
        assert "not measured in run tok" in str(exc)
    else:
        raise AssertionError("a point the run did not measure was measured")
    assert not (tmp_path / "results").exists()


def test_gpus_given_means_nvml_is_not_queried() -> None:
    """FORKSPAWN_GPUS (set by `make bench`) is the GPU count; NVML is then never imported."""
    code = ("import sys, benchmarks.common as c; "
            "print(c.SUITE.gpus, c.SUITE.on_gpu, 'pynvml' in sys.modules, c.SUITE.profile.name, *c.SUITE.tps)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         cwd=ROOT, env={**os.environ, "FORKSPAWN_GPUS": "3", "FORKSPAWN_PROFILE": "brief"})
    assert out.stdout.split() == ["3", "True", "False", "brief", "1", "2"]


def test_a_resumed_run_goes_on_from_the_cold_starts_it_had(tmp_path: Path, monkeypatch) -> None:
    """A run interrupted after two of three cold starts (a lease ending) keeps them in the
    journal; resumed with the same token it takes only the third, and the record has all three."""
    from benchmarks import common
    from forkspawn import sidecar
    from forkspawn.config import Config

    (tmp_path / "asv.conf.json").write_text(json.dumps({"results_dir": "results"}))
    monkeypatch.setenv("ASV_COMMIT", "0" * 40)
    suite = suite_of(FORKSPAWN_ASV_MACHINE="test-machine")
    config = Config(method="fork", repeat=3, least=3, decode_steps=2, batches=(1,), model="tiny")
    journalled = []
    real_append = sidecar.append_run

    def append_then_interrupt(journal, token, key, run):
        real_append(journal, token, key, run)
        journalled.append(run["time_to_ready_s"])
        if len(journalled) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(sidecar, "append_run", append_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        common.cached_record("tok", config, tmp_path, "torch-tp|fork|bare|1", suite)
    path = common.records_path(tmp_path, suite)
    assert sidecar.find(path, "tok", common.config_key(config)) is None  # no record yet
    monkeypatch.setattr(sidecar, "append_run", real_append)

    rec = common.cached_record("tok", config, tmp_path, "torch-tp|fork|bare|1", suite)
    assert rec.status == "ok" and rec.runs == 3
    assert rec.samples["time_to_ready_s"][:2] == journalled
    assert len(sidecar.runs(sidecar.journal(path), "tok", common.config_key(config))) == 3
    assert sidecar.find(path, "tok", common.config_key(config)).record.runs == 3
    spent = common.cold_starts_spent(tmp_path / "results", "tok")
    assert spent == ["torch-tp|fork|bare|1: ok, repeat after 3 cold start(s)".replace("|", " "),
                     "open at the cap (neither resolved against the reference nor within the precision): none",
                     "run tok: 1 configuration(s), 3 cold starts (1 repeat)"]
    # a point's key has no model: another model under the same run is refused, not read back as this one
    with pytest.raises(ValueError, match=re.escape("run tok holds 'tiny' at torch-tp|fork|bare|1, not 'small'")):
        common.cached_record("tok", config.replace(model="small"), tmp_path, "torch-tp|fork|bare|1", suite)


def test_an_environment_is_named_by_its_path_in_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make bench` runs `asv run -E repo:PYTHON` (forkspawn/tools/asvenv.py): the name holds the
    interpreter's path in the project, the same in every checkout, where `existing` puts the
    machine's; asv's requirement matrix (FORKSPAWN_ENGINES=torch-tp) stays with the environments it builds."""
    from asv.config import Config
    from asv.environment import get_environments, is_existing_only
    from asv.plugin_manager import plugin_manager

    monkeypatch.chdir(ROOT)  # asv runs in the folder of asv.conf.json
    conf = Config.load(str(ROOT / "asv.conf.json"))
    for plugin in conf.plugins:
        plugin_manager.import_plugin(plugin)
    venv = Path(sys.executable)
    assert venv.is_relative_to(ROOT), "run the tests with the project's .venv"
    outside = os.path.realpath(sys.executable)  # the venv's interpreter links to the system's
    repo, elsewhere, existing = get_environments(conf, [f"repo:{venv}", f"repo:{outside}", f"existing:{outside}"])
    assert repo.name == "existing-py_" + str(venv.relative_to(ROOT)).replace(os.sep, "_")
    assert repo.python == str(venv.relative_to(ROOT))  # the results' `python` parameter, shown in asv's HTML
    assert str(ROOT).replace(os.sep, "_") not in repo.name
    assert elsewhere.name == existing.name  # outside the project: named as asv names it
    assert repo.env_vars == {} and is_existing_only([repo, elsewhere])


def test_alternating_points_take_turns_and_end_with_their_records(tmp_path: Path, monkeypatch) -> None:
    """`prefill --alternate`'s turns on real cold starts: fork, spawn, fork, spawn in the journal;
    no record before a point's last turn, then one with every cold start and no stopping rule."""
    from benchmarks import common
    from forkspawn import sidecar
    from forkspawn.config import Config

    (tmp_path / "asv.conf.json").write_text(json.dumps({"results_dir": "results"}))
    monkeypatch.setenv("ASV_COMMIT", "0" * 40)
    suite = suite_of(FORKSPAWN_ASV_MACHINE="test-machine")
    configs = {m: Config(method=m, parent_state="torch", repeat=2, least=2, decode_steps=2, batches=(1,), model="tiny")
               for m in ("fork", "spawn")}
    for until in (1, 2):
        for method, config in configs.items():
            rec = common.cached_record("tok", config, tmp_path, f"torch-tp|{method}|torch|1", suite, until=until)
            assert (rec is None) == (until == 1)
    path = common.records_path(tmp_path, suite)
    journal = [json.loads(line)["asv_key"].split("|")[1] for line in sidecar.journal(path).read_text().splitlines()]
    assert journal == ["fork", "spawn", "fork", "spawn"]
    for config in configs.values():
        rec = sidecar.find(path, "tok", common.config_key(config)).record
        assert rec.status == "ok" and rec.runs == 2 and rec.config["least"] == 0 and len(rec.cold_starts) == 2


def test_finish_writes_the_records_a_lease_left_in_the_journal(tmp_path: Path, monkeypatch) -> None:
    """A lease that ends mid-stage leaves cold starts journalled and no records; `prefill
    --finish` writes them at the count every point reached, measuring nothing more."""
    from benchmarks import common
    from benchmarks.torch_tp import TorchTPStartup
    from forkspawn import sidecar

    (tmp_path / "asv.conf.json").write_text(json.dumps({"results_dir": "results"}))
    monkeypatch.setenv("ASV_COMMIT", "0" * 40)
    monkeypatch.setenv("ASV_CONF_DIR", str(tmp_path))
    suite = suite_of(FORKSPAWN_COLD_STARTS="torch-tp=3,3")
    monkeypatch.setattr(TorchTPStartup, "suite", suite)
    configs = {m: TorchTPStartup().point("torch-tp", m, "torch", "2") for m in ("fork", "spawn")}
    for method, until in (("fork", 1), ("spawn", 1), ("fork", 2)):  # the lease ended in spawn's second turn
        assert common.cached_record("tok", configs[method], tmp_path, f"torch-tp|{method}|torch|2", suite,
                                    until=until) is None
    n = common.measure_first(r"^torch_tp\.TorchTPStartup$", "tok", ["torch"], ["fork", "spawn"], finish=True)
    assert n == 2
    path = common.records_path(tmp_path, suite)
    recs = {m: sidecar.find(path, "tok", common.config_key(c)).record for m, c in configs.items()}
    assert {m: (r.status, r.runs, r.repeat) for m, r in recs.items()} == {"fork": ("ok", 2, 1), "spawn": ("ok", 1, 1)}
    assert len(sidecar.journal(path).read_text().splitlines()) == 3, "nothing more was measured"
