"""What really happened: how a process came to be, read from the outside in /proc.

`started_by()` reads /proc, so it works for processes we did not write (vLLM's engine core and
workers rename themselves with setproctitle, so command lines do not tell). A forked child
keeps its parent's address space, so the address of its `[vdso]` mapping equals its parent's;
`exec` (spawn, and the forkserver's own start) re-randomises it. A Ray actor is a process its
raylet exec'd.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

from . import FORK, FORKSERVER, FORKSERVER_PRELOAD, RAY, SPAWN


def started_by(pid: int) -> str:
    """How `pid` came to be: 'fork', 'forkserver', 'spawn' (a fresh, exec'd interpreter), 'ray'
    (exec'd by a raylet) or 'unknown'."""
    if not _aslr_on():
        return "unknown"  # without address randomisation, fork and exec look alike
    try:
        ppid = psutil.Process(pid).ppid()
        same = _vdso(pid) == _vdso(ppid)
        parent_cmd = " ".join(psutil.Process(ppid).cmdline())
        parent_name = psutil.Process(ppid).name()
    except (psutil.Error, OSError):
        return "unknown"
    if not same:
        return RAY if parent_name == "raylet" else SPAWN
    return FORKSERVER if "multiprocessing.forkserver" in parent_cmd else FORK



def method_used(pids: list[int]) -> str | None:
    """The verified method of a worker group, with the forkserver's preload checked in /proc."""
    seen = {started_by(p) for p in pids}
    if len(seen) != 1:
        return "mixed:" + ",".join(sorted(seen)) if seen else None
    used = seen.pop()
    if used == FORKSERVER:
        server = psutil.Process(pids[0]).ppid()
        return FORKSERVER_PRELOAD if maps_torch(server) else FORKSERVER
    return used



def process_start(pid: int) -> float | None:
    """When `pid` was created, on CLOCK_MONOTONIC (from its start time in clock ticks since boot)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
    # Boot time on the monotonic axis; BOOTTIME and MONOTONIC differ only by time spent suspended.
    offset = time.clock_gettime(time.CLOCK_BOOTTIME) - time.clock_gettime(time.CLOCK_MONOTONIC)
    return ticks / os.sysconf("SC_CLK_TCK") - offset



def _vdso(pid: int) -> str | None:
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if line.endswith("[vdso]"):
            return line.split("-", 1)[0]
    return None



def maps_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False



def _aslr_on() -> bool:
    try:
        return Path("/proc/sys/kernel/randomize_va_space").read_text().strip() != "0"
    except OSError:
        return False
