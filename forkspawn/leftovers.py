"""What a run may leave behind, found from the outside: tagged processes, orphaned shared memory
and temp dirs. `forkspawn leftovers` (run at the end of `make bench`) and the tests use it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psutil

RUN_TAG_ENV = "FORKSPAWN_RUN"  # set in every measurement's parent, inherited by all it starts


def tagged_processes(env: str = RUN_TAG_ENV, value: str | None = None,
                     session: int | None = None) -> list[psutil.Process]:
    """Live processes whose environment has `env` (equal to `value`, if given), or that belong to
    process session `session`, this one excepted."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid == os.getpid() or p.status() == psutil.STATUS_ZOMBIE:
                continue
            if session is not None and os.getsid(p.pid) == session:
                found.append(p)
                continue
            tag = p.environ().get(env)
            if tag is not None and (value is None or tag == value):
                found.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return found


def shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def orphaned_shm(names: set[str]) -> set[str]:
    """Segments that no live process maps or holds open: leaked, not in use by another program.

    Matched by inode, not name: a named semaphore (glibc's sem_open) is mapped under the temp
    name it was created as (`sem.XXXXXX (deleted)`) before being linked to its own."""
    used = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            used.update(int(line.split()[4]) for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                        if "/dev/shm/" in line)
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/dev/shm/"):
                    used.add(os.stat(f"/proc/{pid}/fd/{fd}").st_ino)
        except OSError:
            pass
    orphans = set()
    for name in names:
        try:
            if os.stat(f"/dev/shm/{name}").st_ino not in used:
                orphans.add(name)
        except OSError:
            pass  # gone already
    return orphans


def report() -> list[str]:
    """One line per leftover of any forkspawn run on this machine (empty: clean)."""
    lines = [f"process {p.pid} ({p.name()}) of run {p.environ().get(RUN_TAG_ENV)}" for p in tagged_processes()]
    lines += [f"temp dir {d}" for d in Path(tempfile.gettempdir()).glob("forkspawn-*") if d.is_dir()]
    return lines
