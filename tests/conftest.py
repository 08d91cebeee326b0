"""Shared fixtures: a checkpoint cache for the session, the CLI as a subprocess, and the
nothing-left-behind check that runs after every test (processes, /dev/shm, temp dirs, fds)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

from forkspawn import leftovers

# Every process the tests start inherits this tag, forked or exec'd, wherever it re-parents to.
TEST_TAG_ENV = "FORKSPAWN_TEST_SESSION"
os.environ.setdefault(TEST_TAG_ENV, uuid.uuid4().hex)
# No GPU, by construction: the tests assert what a machine without one does (TP 2 on two CPU
# cores, no GPU memory figures), so every process they start sees none, on a GPU box too
# (machine.gpus() and torch read it as CUDA does). GPU paths are tested on fake GPU lists instead
# (tests/test_gpubox.py).
os.environ["CUDA_VISIBLE_DEVICES"] = ""
# A temp dir of the session's own, so that what other programs on the machine create there
# is not mistaken for ours (children inherit TMPDIR).
os.environ["TMPDIR"] = tempfile.mkdtemp(prefix="forkspawn-tests-")
tempfile.tempdir = None


@pytest.fixture(scope="session", autouse=True)
def _remove_session_tmpdir():
    yield
    shutil.rmtree(os.environ["TMPDIR"], ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated-checkpoint cache for the whole session (FORKSPAWN_CACHE wins if set)."""
    if "FORKSPAWN_CACHE" not in os.environ:
        os.environ["FORKSPAWN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return Path(os.environ["FORKSPAWN_CACHE"])


def forkspawn(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the `forkspawn` command line the way a user does, in a child interpreter."""
    return subprocess.run([sys.executable, "-m", "forkspawn", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def measure(*args: str, env: dict | None = None) -> dict:
    """`forkspawn measure ... --json` on the tiny model with short decoding; the one JSON record."""
    out = forkspawn("measure", "--json", "--model", "tiny", "--repeat", "1", "--decode-steps", "4",
                    "--warmup-steps", "2", "--batch", "1", "4", *args, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected exactly one JSON line on stdout, got {len(lines)}"
    return json.loads(lines[0])


def tagged_processes() -> list[psutil.Process]:
    """Live processes started under this test session, other than pytest itself."""
    return leftovers.tagged_processes(TEST_TAG_ENV, os.environ[TEST_TAG_ENV])


def _ours_in_tmp() -> set[str]:
    return set(os.listdir(tempfile.gettempdir()))


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """After each test: no process of ours alive, no new /dev/shm entry or temp dir, same fds."""
    shm, tmp, fds = leftovers.shm_entries(), _ours_in_tmp(), psutil.Process().num_fds()
    yield
    deadline = time.monotonic() + 5  # processes being reaped right now get a moment
    while tagged_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [f"{p.name()}[{p.pid}]" for p in tagged_processes()]
    for p in tagged_processes():
        p.kill()
    assert not left, f"processes left behind: {left}"
    leaked = leftovers.orphaned_shm(leftovers.shm_entries() - shm)
    if leaked:  # a segment between its creation and its first mapping looks orphaned: look again
        time.sleep(1)
        leaked &= leftovers.orphaned_shm(leftovers.shm_entries() - shm)
    assert not leaked, f"/dev/shm entries left behind: {leaked}"
    assert _ours_in_tmp() - tmp == set(), f"temp dirs left behind: {_ours_in_tmp() - tmp}"
    assert psutil.Process().num_fds() == fds, "file descriptors of the test process leaked"


def fake_nvidia_smi(where: Path, *gpus: str, fails: bool = False) -> Path:
    """A directory holding an `nvidia-smi` that answers the engine set's query
    (forkspawn/tools/engineset.py) as the real one does, one `name, driver, MiB` line a GPU."""
    where.mkdir(exist_ok=True)
    body = ("echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9"
            if fails else "printf '%s\\n' " + " ".join(f"'{g}'" for g in gpus))
    smi = where / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n[ \"$1\" = --query-gpu=name,driver_version,memory.total ] || exit 7\n{body}\n")
    smi.chmod(0o755)
    return where
