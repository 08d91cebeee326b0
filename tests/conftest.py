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

# Every process the tests start inherits this tag, forked or exec'd, wherever it re-parents to.
TEST_TAG_ENV = "FORKSPAWN_TEST_SESSION"
os.environ.setdefault(TEST_TAG_ENV, uuid.uuid4().hex)
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
    """Live processes started under this test session, other than pytest and its helpers."""
    me, tag, found = os.getpid(), os.environ[TEST_TAG_ENV], []
    for p in psutil.process_iter():
        try:
            if p.pid != me and p.status() != psutil.STATUS_ZOMBIE and p.environ().get(TEST_TAG_ENV) == tag:
                found.append(p)
        except psutil.Error:
            pass
    return found


def _ours_in_tmp() -> set[str]:
    return set(os.listdir(tempfile.gettempdir()))


def _shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _orphaned(names: set[str]) -> set[str]:
    """Segments no live process maps or holds open: leaked, rather than in use by another program."""
    used = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            used.update(line.rsplit("/dev/shm/", 1)[1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                        if "/dev/shm/" in line)
            used.update(os.readlink(f"/proc/{pid}/fd/{fd}").rsplit("/dev/shm/", 1)[-1]
                        for fd in os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return {n for n in names if n.split(" (deleted)")[0] not in used and os.path.exists(f"/dev/shm/{n}")}


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """After each test: no process of ours alive, no new /dev/shm entry or temp dir, same fds."""
    shm, tmp, fds = _shm(), _ours_in_tmp(), psutil.Process().num_fds()
    yield
    deadline = time.monotonic() + 5  # processes being reaped right now get a moment
    while tagged_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [f"{p.name()}[{p.pid}]" for p in tagged_processes()]
    for p in tagged_processes():
        p.kill()
    assert not left, f"processes left behind: {left}"
    leaked = _orphaned(_shm() - shm)
    if leaked:  # a segment between its creation and its first mapping looks orphaned: look again
        time.sleep(1)
        leaked &= _orphaned(_shm() - shm)
    assert not leaked, f"/dev/shm entries left behind: {leaked}"
    assert _ours_in_tmp() - tmp == set(), f"temp dirs left behind: {_ours_in_tmp() - tmp}"
    assert psutil.Process().num_fds() == fds, "file descriptors of the test process leaked"
