"""One process lifecycle: start a process group, stop it politely then firmly, wait until it is
gone, reap what a run left behind by tag, and read processes in /proc.

Every grace period is the caller's (they differ on purpose: a server gets 15 s to honour SIGTERM,
Ray's head 1 s); this module only does the steps the same way everywhere.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

from . import leftovers


def start_group(cmd: list[str], env: dict[str, str], stdout: Any = None) -> subprocess.Popen:
    """Start `cmd` as the leader of a new session (so of a new process group: stop_group's handle)."""
    return subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.STDOUT if stdout is not None else None,
                            env=env, start_new_session=True)


def stop_group(proc: subprocess.Popen, grace_s: float = 15.0, kill_s: float = 5.0) -> list[str]:
    """SIGTERM the group led by `proc`, then SIGKILL what is left after `grace_s`; the PIDs that
    had to be killed. Returns once every member is gone. Descendants that left the group are
    signalled by PID too."""
    pgid = proc.pid
    members = group_members(pgid) + descendants(pgid)
    alive: list[psutil.Process] = []
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_s)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        signal_all(members, sig)
        _, alive = psutil.wait_procs(members, timeout=wait)
        if not alive:
            break
    killed = [str(p.pid) for p in alive] if alive else []
    proc.wait()
    return killed


def terminate(procs: list[psutil.Process], grace_s: float, gone_s: float,
              late: Callable[[], list[psutil.Process]] | None = None) -> None:
    """SIGTERM `procs`, SIGKILL those alive after `grace_s` (and any `late()` finds that were not
    among them: started meanwhile), then wait up to `gone_s` until the killed ones are gone."""
    signal_all(procs, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    killed = alive + [p for p in (late() if late else []) if p not in alive]
    signal_all(killed, signal.SIGKILL)
    psutil.wait_procs(killed, timeout=gone_s)


def reap(sid: int, tag: str, grace_s: float = 1.0, gone_s: float = 30.0) -> list[str]:
    """SIGKILL what is left of session `sid`, or carries `tag`, after `grace_s`, and wait up to
    `gone_s` until those are gone; the names killed.

    The grace lets helpers that end with the parent (forkserver, resource tracker) go by themselves.
    """
    deadline = time.monotonic() + grace_s
    while leftovers.tagged_processes(value=tag, session=sid) and time.monotonic() < deadline:
        time.sleep(0.05)
    left, killed = [], []
    for p in leftovers.tagged_processes(value=tag, session=sid):
        try:
            left.append(f"{p.name()}[{p.pid}]")
            p.send_signal(signal.SIGKILL)
            killed.append(p)
        except psutil.Error:
            pass
    # a big process (an engine's server) takes seconds to give its memory back after SIGKILL:
    # the next cold start, and `forkspawn leftovers`, must not find it still there
    psutil.wait_procs(killed, timeout=gone_s)
    return left


def wait_children_gone(deadline: float, clock: Callable[[], float],
                       ignore: Callable[[psutil.Process], bool] = lambda p: False) -> list[psutil.Process]:
    """Wait until this process has no live descendants (zombies and those `ignore`d do not
    count) or `clock()` passes `deadline`; those still alive."""
    me = psutil.Process()
    while True:
        alive = [p for p in me.children(recursive=True) if not ignore(p) and status(p) != psutil.STATUS_ZOMBIE]
        if not alive or clock() > deadline:
            return alive
        time.sleep(0.05)


def kill_all(procs: Iterable[psutil.Process]) -> None:
    signal_all(procs, signal.SIGKILL)


def signal_all(procs: Iterable[psutil.Process], sig: int) -> None:
    """Send `sig` to each of `procs`; those already gone are skipped."""
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


# --- reading processes -----------------------------------------------------------------------

def group_members(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def status(p: psutil.Process) -> str:
    try:
        return p.status()
    except psutil.Error:
        return psutil.STATUS_DEAD


def cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def thread_cpus(pid: int) -> dict[int, str]:
    """Thread id -> its allowed CPUs (Cpus_allowed_list), from /proc/PID/task."""
    out = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        out[int(task.name)] = re.search(r"Cpus_allowed_list:\s*(\S+)", text).group(1)
    return out


def shared_objects(pid: int) -> list[str]:
    """The lines of /proc/PID/maps that map a shared library."""
    try:
        return [line for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if line.endswith(".so") or ".so." in line]
    except OSError:
        return []
