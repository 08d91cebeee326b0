"""Faults injected into real worker groups: crashes, hangs, the fork deadlock and interrupts
are recorded as results, and the whole process tree is torn down (checked after every test
by conftest's nothing_left_behind)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import measure, tagged_processes

from forkspawn.worker import PHASES

FAULT = "FORKSPAWN_FAULT"


@pytest.mark.parametrize("phase", PHASES[1:-1] + ("decode",))
def test_a_rank_killed_in_any_phase_fails_the_group(phase: str) -> None:
    rec = measure("--method", "fork", "--parent-state", "torch", "--tp", "2", env={FAULT: f"1:{phase}:kill"})
    assert rec["status"] == "error"
    assert f"rank 1 was killed by signal 9 during {phase}" in rec["error"]


def test_an_exception_in_a_rank_is_reported_cause_first_with_its_traceback() -> None:
    rec = measure("--method", "spawn", "--tp", "2", env={FAULT: "0:weights_loaded:raise"})
    assert rec["status"] == "error"
    # the exception's own line first (what reports show), then where; the traceback on its own
    assert rec["error"] == "RuntimeError: injected fault in rank 0 at weights_loaded (rank 0, during weights_loaded)"
    assert rec["traceback"].startswith("Traceback (most recent call last):")
    assert "in rank_main" in rec["traceback"]
    assert rec["traceback"].endswith("RuntimeError: injected fault in rank 0 at weights_loaded")


def test_a_hung_rank_is_a_timeout_within_the_bound() -> None:
    t0 = time.monotonic()
    rec = measure("--method", "fork", "--parent-state", "torch", "--tp", "2", "--timeout", "4",
                  env={FAULT: "1:dist_initialized:hang"})
    assert rec["status"] == "timeout"
    assert "rank 1 in device_ready" in rec["error"]  # the last phase it finished
    assert time.monotonic() - t0 < 4 + 30  # the bound, plus the parent interpreter's own start and teardown


def test_fork_while_a_parent_thread_holds_a_lock_deadlocks_and_spawn_does_not() -> None:
    env = {FAULT: "parent:fork:hold-lock"}
    forked = measure("--method", "fork", "--parent-state", "torch", "--tp", "2", "--timeout", "4", env=env)
    assert forked["status"] == "timeout" and "start_requested" in forked["error"]
    spawned = measure("--method", "spawn", "--tp", "1", env=env)
    assert spawned["status"] == "ok"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_measurement_stops_every_process_and_writes_nothing(sig: int, tmp_path) -> None:
    out = tmp_path / "record.json"
    proc = subprocess.Popen([sys.executable, "-m", "forkspawn", "measure", "--tp", "2", "--method", "spawn",
                             "--timeout", "300", "-o", str(out)], env={**os.environ, FAULT: "1:device_ready:hang"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a shell's background job (`make test &`) starts with SIGINT ignored, and
                            # Python keeps it so: the command meets Ctrl-C as a terminal delivers it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while len(tagged_processes()) < 4 and time.monotonic() < deadline:  # cli, parent, two ranks
        time.sleep(0.2)
    assert len(tagged_processes()) >= 4, "the ranks never started"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err.strip().splitlines()[-1]
    assert not out.exists()


def test_a_configuration_that_fails_the_same_way_twice_is_not_repeated() -> None:
    """Failures are results: the second alike one ends the configuration (`failed-fast`), so a
    broken point costs two cold starts, not `repeat` of them."""
    rec = measure("--method", "spawn", "--tp", "1", "--repeat", "4", env={FAULT: "0:weights_loaded:raise"})
    assert rec["status"] == "error" and rec["runs_ok"] == 0
    assert (rec["runs"], rec["stop_reason"]) == (2, "failed-fast")
    assert rec["gpu_used_mib"] == {"before": None, "after": None}  # NVML finds no GPU here


def test_an_exception_line_is_one_line_named_as_a_traceback_names_it() -> None:
    from forkspawn.worker import exception_line

    cuda = RuntimeError("Cannot re-initialize CUDA in forked subprocess. To use CUDA with\n"
                        "multiprocessing, you must use the 'spawn' start method")
    assert exception_line(cuda) == ("RuntimeError: Cannot re-initialize CUDA in forked subprocess. To use CUDA with "
                                    "multiprocessing, you must use the 'spawn' start method")
    assert exception_line(subprocess.TimeoutExpired("x", 1)).startswith("subprocess.TimeoutExpired: ")
    assert exception_line(KeyboardInterrupt()) == "KeyboardInterrupt"


def test_runs_written_before_the_traceback_field_still_load() -> None:
    from forkspawn.record import Run

    old = Run.from_dict({"status": "error", "error": "rank 0 failed during device_ready: Traceback ..."})
    assert old.traceback is None and old.error.startswith("rank 0 failed")


SHM_IN_USE = """
import json, multiprocessing
from multiprocessing import shared_memory
from forkspawn import leftovers
before = leftovers.shm_entries()
queue = multiprocessing.get_context("spawn").Queue()  # named semaphores, as vLLM's benchmark makes
segment = shared_memory.SharedMemory(create=True, size=4096)
segment.close()  # linked, mapped by nobody: what a crashed run leaves
new = leftovers.shm_entries() - before
print(json.dumps([sorted(new), sorted(leftovers.orphaned_shm(new)), segment._name.lstrip("/")]))
segment.unlink()
"""


def test_a_live_named_semaphore_is_in_use_not_leaked() -> None:
    """`measure` removes /dev/shm entries a run left that no process maps or holds: a live named
    semaphore of any process on the machine (glibc maps it under the temp name it was created as)
    is in use, and another program's queue keeps working while a measurement ends."""
    out = subprocess.run([sys.executable, "-c", SHM_IN_USE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    new, orphaned, segment = json.loads(out.stdout)
    assert any(n.startswith("sem.") for n in new)
    assert orphaned == [segment]
