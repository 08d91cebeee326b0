"""The asv suite as asv sees it: it loads, and its grid is the one the README describes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_asv_check_passes() -> None:
    out = subprocess.run([sys.executable, "-m", "asv", "check", "-E", f"existing:{sys.executable}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No problems found" in out.stdout


def test_cpu_grid_has_every_method_and_no_device_state_but_in_startup() -> None:
    from forkspawn import asvsuite
    from forkspawn.config import METHODS

    sys.path.insert(0, str(ROOT))
    from benchmarks.torch_tp import TorchTPMemory, TorchTPStartup

    assert TorchTPMemory.params[1] == list(METHODS)
    if not asvsuite.ON_GPU:
        assert TorchTPMemory.params[2] == ["bare", "torch"]
        assert "device-initialized" in TorchTPStartup.params[2]  # shown as skipped, not hidden
        assert TorchTPMemory.params[3] == ["1", "2"][: len(asvsuite.tp_sizes())]


GRID_OF_PROFILE = """
import itertools, json, sys
sys.path.insert(0, {root!r})
from forkspawn import asvsuite as suite
from benchmarks.engines import VllmStartup
from benchmarks.torch_tp import TorchTPStartup
measured = [" ".join(p) for cls in (TorchTPStartup, VllmStartup) for p in itertools.product(*cls.params)
            if not suite.PROFILE.leaves_out(p[0], p[1], p[2], int(p[3]), cls.tps)]
print(json.dumps({{"params": [TorchTPStartup.params, VllmStartup.params], "measured": measured,
                  "vllm_extra": suite.config_of("vllm", "spawn", "bare", "2", {{}}, VllmStartup.options).extra}}))
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


def test_an_unknown_profile_is_a_one_line_error() -> None:
    """`make bench` asks `forkspawn profile` first: one line naming the culprit and the choices."""
    out = subprocess.run([sys.executable, "-m", "forkspawn", "profile"], capture_output=True, text=True,
                         env={"FORKSPAWN_PROFILE": "fast", "FORKSPAWN_GPUS": "0"}, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["forkspawn: error: unknown FORKSPAWN_PROFILE 'fast'; valid: full, default, brief, quick"]
