"""The asv suite as asv sees it: it loads, and its grid is the one the README describes."""

from __future__ import annotations

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
