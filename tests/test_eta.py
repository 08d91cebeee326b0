"""What a run will measure and how long it should take (benchmarks/eta.py): the GPU default fits
its budget by the estimate, the CPU default measures what it did, `forkspawn profile` says it all
before measuring, and each cold start's progress line counts the run and the time left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the suite's glue is the suite's: benchmarks/common.py

PLAN = """
import json, sys
sys.path.insert(0, {root!r})
from benchmarks import eta
plan = eta.plan(tuple(sys.argv[1:]) or (".",))
print(json.dumps({{"points": [[p.label, p.least, p.most, p.warmups] for p in plan.points], "seconds": plan.seconds()}}))
"""


def _plan(gpus: int, *jobs: str, profile: str = "default") -> dict:
    """The plan of `make bench`'s jobs (every grid without), FORKSPAWN_GPUS=gpus: points and seconds."""
    env = {"FORKSPAWN_PROFILE": profile, "FORKSPAWN_GPUS": str(gpus), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", PLAN.format(root=str(ROOT)), *jobs], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_gpu_default_fits_20_minutes_on_one_gpu_and_an_hour_on_eight() -> None:
    one = _plan(1)
    vllm = {"fork torch": [4, 4, 1], "spawn torch": [3, 3, 0], "fork device-initialized": [1, 1, 0],
            "fork device-queried": [2, 2, 0], "fork device-queried-nvml": [1, 1, 0]}
    ours = {"fork torch": [3, 3, 0], "spawn torch": [3, 3, 0], "fork device-initialized": [2, 2, 0],
            "spawn device-initialized": [1, 1, 0], "fork device-queried": [2, 2, 0], "spawn device-queried": [1, 1, 0],
            "fork device-queried-nvml": [1, 1, 0]}
    servers = {"vllm-serve fork bare": [1, 1, 0], "vllm-serve spawn bare": [1, 1, 0], "xinference fork bare": [1, 1, 0]}

    def at(tp: int, points: dict, engine: str = "") -> dict:
        return {f"{engine}{p} {tp}": n for p, n in points.items()}

    assert dict((p[0], p[1:]) for p in one["points"]) == {**at(1, vllm, "vllm "), **at(1, ours, "torch-tp "),
                                                          **at(1, servers)}
    assert 15 * 60 < one["seconds"][0] <= one["seconds"][1] <= 20 * 60
    eight = _plan(8)
    # the engines at the largest TP size only, our workload at every size of a group
    assert dict((p[0], p[1:]) for p in eight["points"]) == {
        **at(8, vllm, "vllm "), **at(8, servers), **{k: v for tp in (2, 4, 8) for k, v in at(tp, ours, "torch-tp ").items()}}
    assert one["seconds"][1] < eight["seconds"][0] <= eight["seconds"][1] <= 60 * 60


def test_the_cpu_default_measures_what_it_did() -> None:
    """The CPU default's points and counts of before this profile's GPU side changed (CI's `make
    quick` and the VM's 10-minute `make bench` rest on them), in make bench's jobs."""
    cpu = _plan(0, "^(torch_tp|soak|quality)", "^engines.Vllm(Startup|Phases|Memory|Throughput)", "^engines.Xinference")
    ours = [f"torch-tp {m} {s} 2" for s in ("torch", "bare") for m in ("fork", "spawn", "forkserver", "forkserver-preload")]
    assert cpu["points"] == ([[p, 3, 5, 0] for p in ours] + [["torch-tp ray bare 2", 3, 5, 0], ["vllm spawn bare 2", 3, 3, 0],
                             ["vllm fork-override bare 2", 3, 3, 0], ["xinference spawn bare 1", 2, 2, 0]])
    assert cpu["seconds"][1] < 12 * 60


def test_forkspawn_profile_prints_the_run_its_points_and_the_estimate() -> None:
    env = {**os.environ, "FORKSPAWN_PROFILE": "default", "FORKSPAWN_GPUS": "1", "FORKSPAWN_RUN_ID": "eta-test-1",
           "FORKSPAWN_JOBS": "^engines.Vllm(Startup|Phases|Memory|Throughput) ^(torch_tp|soak|quality)"}
    out = subprocess.run([sys.executable, "-m", "forkspawn", "profile"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "run eta-test-1: FORKSPAWN_RUN_ID=eta-test-1 resumes it"
    assert lines[1].startswith("profile default on 1 GPU, model 1b, TP 1: 12 points, 24 cold starts, about ")
    assert lines[1].endswith(" min of measuring (estimated)")
    assert lines[2].startswith("  vllm TP 1: 5 points, 11 cold starts, about ")
    assert lines[3].startswith("    fork torch 3 (+1 warm-up), spawn torch 3, ")
    assert "fork device-queried 2 (expected to fail)" in out.stdout and "torch-tp TP 1: 7 points, 13 cold starts" in out.stdout
    assert "not measured" in lines[-1]


def test_each_cold_start_says_how_far_the_run_is(tmp_path: Path, monkeypatch) -> None:
    """A real prefill of two points, one cold start each: the progress file's lines count the run's
    cold starts (done / total) and say the time left; the plan then finds both done."""
    from benchmarks import common, eta
    from benchmarks.torch_tp import TorchTPStartup

    (tmp_path / "asv.conf.json").write_text(json.dumps({"results_dir": "results"}))
    monkeypatch.setenv("ASV_COMMIT", "0" * 40)
    monkeypatch.setenv("ASV_CONF_DIR", str(tmp_path))
    progress_log = tmp_path / "progress.log"
    suite = common.Suite.from_environ({"FORKSPAWN_GPUS": "0", "FORKSPAWN_PROFILE": "quick", "FORKSPAWN_ASV_MACHINE": "m",
                                       "FORKSPAWN_PROGRESS": str(progress_log)})
    monkeypatch.setattr(TorchTPStartup, "suite", suite)
    pattern = r"^torch_tp\.TorchTPStartup$"
    progress = eta.RunProgress.start("tok", pattern, ["torch"], ["fork", "spawn"], suite)  # as `forkspawn prefill` does
    assert common.measure_first(pattern, "tok", ["torch"], ["fork", "spawn"], progress=progress) == 2
    lines = [line.split(" ", 1)[1] for line in progress_log.read_text().splitlines()]  # less the time of day
    assert lines[0].startswith(f"prefill {pattern}: its points so far: 0/2 cold starts, about ")
    assert lines[0].endswith(" s left (estimated)")
    fork, spawn = [line for line in lines if " run 1/1: " in line]
    assert fork.startswith("torch-tp fork torch tp=2 run 1/1: ok, ") and "[1/2 cold starts, about " in fork
    assert fork.endswith(" s left (estimated)]")
    assert spawn.startswith("torch-tp spawn torch tp=2 run 1/1: ok, ") and spawn.endswith("[2/2 cold starts, none left]")
    done = eta.RunProgress.of_run(eta.plan((pattern,), ["torch"], ["fork", "spawn"]), "tok")
    assert done.counts() == (2, 2, 2) and done.left_s() == (0, 0)
