"""What a process did over an interval: its threads, context switches, page faults, CPU time and
CPU affinity (read from /proc, from outside), and its garbage collections and torch's thread
count (from inside, through gcwatch).

A real engine's decode diagnostics are the difference of two snapshots taken around its decode
windows (`snapshot` before, `during` after): the evidence for why a forked engine might decode
at another rate than a spawned one (threads it did or did not start, CPU it burnt, switches it
suffered, collections it ran). Counted per process over every thread; a thread that ended
inside the interval takes its context switches with it (the kernel keeps those per thread),
while CPU time and page faults include it (kept for the whole process).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from . import gcwatch

_TICK = os.sysconf("SC_CLK_TCK")


def snapshot(pid: int, gc_dir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The cumulative counters of process `pid` now (None if it has gone)."""
    proc = Path(f"/proc/{pid}")
    try:
        # fields after the command name, which may hold spaces: minflt is the 10th field, majflt
        # the 12th, utime and stime the 14th and 15th (proc(5))
        stat = proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()
        names: Counter[str] = Counter()
        voluntary = involuntary = 0
        for task in proc.joinpath("task").iterdir():
            try:
                status = task.joinpath("status").read_text()
                names[_thread_kind(task.joinpath("comm").read_text().strip())] += 1
            except OSError:  # the thread ended meanwhile
                continue
            voluntary += int(re.search(r"^voluntary_ctxt_switches:\s*(\d+)", status, re.M).group(1))
            involuntary += int(re.search(r"^nonvoluntary_ctxt_switches:\s*(\d+)", status, re.M).group(1))
        affinity = sorted(os.sched_getaffinity(pid))
    except (OSError, IndexError):
        return None
    snap = {"threads": sum(names.values()), "thread_names": dict(sorted(names.items())),
            "voluntary_switches": voluntary, "involuntary_switches": involuntary,
            "minor_faults": int(stat[7]), "major_faults": int(stat[9]),
            "cpu_user_s": int(stat[11]) / _TICK, "cpu_system_s": int(stat[12]) / _TICK,
            "affinity": _ranges(affinity), "cpus": len(affinity)}
    gc_totals = gcwatch.read(gc_dir, pid) if gc_dir else None
    return {**snap, **(gc_totals or {"gc_collections": None, "gc_s": None, "torch_threads": None})}


COUNTERS = ("voluntary_switches", "involuntary_switches", "minor_faults", "major_faults", "cpu_user_s",
            "cpu_system_s", "gc_s")


def during(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any] | None:
    """What happened between two snapshots of one process: counters as differences, the rest
    (threads, their names, affinity, torch's threads) as they were at the end."""
    if before is None or after is None:
        return None
    out = dict(after)
    for name in COUNTERS:
        if after[name] is not None and before[name] is not None:
            out[name] = round(after[name] - before[name], 6)
    if after["gc_collections"] is not None and before["gc_collections"] is not None:
        out["gc_collections"] = [a - b for a, b in zip(after["gc_collections"], before["gc_collections"])]
    return out


def _thread_kind(comm: str) -> str:
    """A thread's name with its serial number dropped (`ZMQbg/IO/0` -> `ZMQbg/IO/#`), so that a
    pool of threads counts as one kind."""
    return re.sub(r"\d+$", "#", comm)


def _ranges(cpus: list[int]) -> str:
    """`0-3,8`: a CPU list as the kernel writes it."""
    spans: list[list[int]] = []
    for c in cpus:
        if spans and c == spans[-1][1] + 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans)
