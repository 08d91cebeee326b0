"""Start methods: choosing them, and verifying from the outside what really happened.

Choosing: `context()` turns a method name into a multiprocessing context (for `ray`, an
equivalent whose processes are Ray actors: ray_cluster.py). The forkserver is process-global in
CPython, which is one reason every measurement runs in a fresh parent interpreter: its
forkserver is always the one this measurement configured.

Verifying: `started_by()` reads /proc, so it works for processes we did not write (vLLM's
engine core and workers rename themselves with setproctitle, so command lines do not tell).
A forked child keeps its parent's address space, so the address of its `[vdso]` mapping
equals its parent's; `exec` (spawn, and the forkserver's own start) re-randomises it. A Ray
actor is a process its raylet exec'd.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import time
from pathlib import Path
from typing import Any

import psutil

from .config import METHODS


def context(method: str, forkserver_state: str = "fresh") -> tuple[Any, dict | None]:
    """The context for `method`, and for forkserver methods a description of the server."""
    if method not in METHODS:
        raise ValueError(f"unknown start method {method!r}; valid: {', '.join(METHODS)}")
    if method == "ray":
        from .ray_cluster import RayContext

        return RayContext(), None
    if not method.startswith("forkserver"):
        return multiprocessing.get_context(method), None
    ctx = multiprocessing.get_context("forkserver")
    # The server imports these before it forks anyone; CPython silently ignores an ImportError
    # here, which is why the preload is verified afterwards (forkserver_info).
    preload = ["torch"] if method == "forkserver-preload" else []
    server = multiprocessing.forkserver._forkserver
    if server._forkserver_pid is not None:  # a parent that starts groups again (soak) reuses it
        if server._preload_modules != preload:
            raise RuntimeError(f"a forkserver preloading {server._preload_modules} already runs in this parent")
        return ctx, {"state": "warm", "preload": preload}
    ctx.set_forkserver_preload(preload)
    if forkserver_state == "warm":
        multiprocessing.forkserver.ensure_running()
    return ctx, {"state": forkserver_state, "preload": preload}


def forkserver_info(info: dict | None) -> dict | None:
    """Complete a forkserver description with its PID and whether torch is really loaded there."""
    if info is None:
        return None
    pid = multiprocessing.forkserver._forkserver._forkserver_pid
    return {**info, "pid": pid, "torch_loaded": pid is not None and _maps_torch(pid)}


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
        return "ray" if parent_name == "raylet" else "spawn"
    return "forkserver" if "multiprocessing.forkserver" in parent_cmd else "fork"


def method_used(pids: list[int]) -> str | None:
    """The verified method of a worker group, with the forkserver's preload checked in /proc."""
    seen = {started_by(p) for p in pids}
    if len(seen) != 1:
        return "mixed:" + ",".join(sorted(seen)) if seen else None
    used = seen.pop()
    if used == "forkserver":
        server = psutil.Process(pids[0]).ppid()
        return "forkserver-preload" if _maps_torch(server) else "forkserver"
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


def process_facts() -> dict[str, Any]:
    """What a freshly started worker can say about itself before importing anything heavy."""
    import sys

    return {"torch_at_entry": "torch" in sys.modules}


def _vdso(pid: int) -> str | None:
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if line.endswith("[vdso]"):
            return line.split("-", 1)[0]
    return None


def _maps_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _aslr_on() -> bool:
    try:
        return Path("/proc/sys/kernel/randomize_va_space").read_text().strip() != "0"
    except OSError:
        return False
