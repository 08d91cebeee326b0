"""This process's garbage collections, readable by another process at any moment.

A `gc.callbacks` hook adds up the collections of each generation and the time they take
(`perf_counter`, from the "start" to the "stop" callback), and writes the totals, with torch's
intra-op thread count where torch is imported, into a small memory-mapped file `<dir>/<pid>`: a
store into shared memory, no system call, so the parent reads a process's figures before and
after an interval without asking it anything (activity.py). Standard library only.

How every process of an engine gets it: the fresh parent installs it (`install`) before the
engine starts; a forked child inherits the hook and, right after the fork, opens a file of its
own with zeroed totals (`os.register_at_fork`); a spawned child installs it when it re-imports
the parent's main module `forkspawn.parent` as `__mp_main__` (which CPython's spawn does), where
`install_from_env` finds the directory in `ENV`. Both methods thus run the same hook.
"""

from __future__ import annotations

import gc
import mmap
import os
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

ENV = "FORKSPAWN_GCWATCH"  # the directory of the files; unset: no hook
_LAYOUT = struct.Struct("<qqqdq")  # collections of generations 0, 1, 2; seconds in them; torch threads (-1: unknown)


class _Totals:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.counts = [0, 0, 0]
        self.seconds = 0.0
        self.started = 0.0
        self.map = self._open()

    def _open(self) -> mmap.mmap:
        fd = os.open(self.directory / str(os.getpid()), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, _LAYOUT.size)
            mapped = mmap.mmap(fd, _LAYOUT.size)
        finally:
            os.close(fd)
        _LAYOUT.pack_into(mapped, 0, 0, 0, 0, 0.0, -1)
        return mapped

    def reopen(self) -> None:
        """In a forked child: totals of its own, in a file of its own (or none: unwatched)."""
        self.counts, self.seconds = [0, 0, 0], 0.0
        try:
            self.map = self._open()
        except OSError:
            gc.callbacks.remove(self)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self.started
        self.counts[info["generation"]] += 1
        torch = sys.modules.get("torch")
        threads = -1
        # torch initialises its thread settings lazily per thread: ask from the main thread only
        if torch is not None and threading.current_thread() is threading.main_thread():
            try:
                threads = torch.get_num_threads()
            except Exception:  # a partly imported torch
                pass
        if threads < 0:  # keep the last known count
            threads = _LAYOUT.unpack_from(self.map)[-1]
        _LAYOUT.pack_into(self.map, 0, *self.counts, self.seconds, threads)


_installed: _Totals | None = None


def install(directory: str | os.PathLike) -> bool:
    """Count this process's collections into `directory` (once per process; children follow);
    whether it is counted. A directory that cannot take the file leaves the process unwatched:
    a diagnostic never stops the process it watches."""
    global _installed
    if _installed is not None:
        return True
    try:
        _installed = _Totals(Path(directory))
    except OSError:
        return False
    gc.callbacks.append(_installed)
    os.register_at_fork(after_in_child=_installed.reopen)
    return True


def install_from_env() -> None:
    """`install` where the environment asks for it (a spawned child of a watched parent)."""
    if directory := os.environ.get(ENV):
        install(directory)


def read(directory: str | os.PathLike, pid: int) -> dict[str, Any] | None:
    """The totals of process `pid` so far, or None where it never ran the hook."""
    try:
        data = Path(directory, str(pid)).read_bytes()
    except OSError:
        return None
    if len(data) < _LAYOUT.size:
        return None
    c0, c1, c2, seconds, threads = _LAYOUT.unpack_from(data)
    return {"gc_collections": [c0, c1, c2], "gc_s": seconds, "torch_threads": None if threads < 0 else threads}
