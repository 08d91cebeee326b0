"""Start a group of N ranks with one multiprocessing context, watch them, always tear them down.

The parent stamps `start_requested` right before each `Process.start()`; ranks stamp their own
phases on the same clock (`clock.now`). A rank that reports an error, dies, or is not ready
by the deadline fails the whole group: in tensor parallelism the others would wait for it
forever in their first collective.
"""

from __future__ import annotations

import multiprocessing.context
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from . import faults, lifecycle
from .clock import now
from .record import Phase
from .worker import rank_main


class GroupFailure(Exception):
    """Why the group failed: `error` is one line that starts with the cause; `traceback` is the
    reporting rank's full traceback, when a rank reported an exception."""

    def __init__(self, status: str, error: str, traceback: str | None = None):
        super().__init__(error)
        self.status, self.error, self.traceback = status, error, traceback


class WorkerGroup:
    def __init__(self, ctx: multiprocessing.context.BaseContext, specs: list[dict[str, Any]],
                 target: Callable[[dict, Connection], None] = rank_main):
        self.ctx, self.specs, self.target = ctx, specs, target
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        self.stamps: list[tuple[int, str, float]] = []  # (rank, phase, CLOCK_MONOTONIC seconds)
        self.facts: list[dict[str, Any]] = [{} for _ in specs]
        self.current: list[str] = ["start_requested"] * len(specs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self) -> None:
        faults.hold_lock_if_asked()
        for rank, spec in enumerate(self.specs):
            mine, theirs = self.ctx.Pipe()
            proc = self.ctx.Process(target=self.target, args=(spec, theirs), name=f"forkspawn-rank{rank}")
            self.stamps.append((rank, "start_requested", now()))
            proc.start()
            theirs.close()
            self.procs.append(proc)
            self.conns.append(mine)

    def wait_ready(self, timeout_s: float) -> list[dict[str, Any]]:
        """Collect phases until every rank is ready; the payloads of their "ready" messages."""
        ready: dict[int, dict] = {}
        deadline = now() + timeout_s
        while len(ready) < len(self.procs):
            for rank, msg in self._receive(deadline, lambda r: r not in ready):
                if msg[0] == "ready":
                    ready[rank] = msg[1]
            if now() >= deadline and len(ready) < len(self.procs):
                where = ", ".join(f"rank {r} in {self.current[r]}" for r in range(len(self.procs)) if r not in ready)
                raise GroupFailure("timeout", f"not ready within {timeout_s:g} s ({where})")
        return [ready[r] for r in range(len(self.procs))]

    def request(self, msg: tuple, timeout_s: float) -> list[Any]:
        """Send `msg` to every rank and gather one "result" from each."""
        for rank, conn in enumerate(self.conns):
            conn.send(msg)
            self.current[rank] = msg[0]
        results: dict[int, Any] = {}
        deadline = now() + timeout_s
        while len(results) < len(self.procs):
            for rank, reply in self._receive(deadline, lambda r: r not in results):
                if reply[0] == "result":
                    results[rank] = reply[1]
            if now() >= deadline and len(results) < len(self.procs):
                raise GroupFailure("timeout", f"no reply to {msg[0]!r} within {timeout_s:g} s")
        return [results[r] for r in range(len(self.procs))]

    def _receive(self, deadline: float, waiting: Callable[[int], bool]):
        """Yield (rank, message) as they arrive; raise on a reported error or a dead rank."""
        live = {self.conns[r]: r for r in range(len(self.procs)) if waiting(r)}
        sentinels = {self.procs[r].sentinel: r for r in live.values()}
        for obj in wait(list(live) + list(sentinels), timeout=max(0.0, deadline - now())):
            if obj in live:
                rank = live[obj]
                try:
                    msg = obj.recv()
                except EOFError:
                    continue  # the pipe closed: the sentinel reports the death
                if msg[0] == "phase":
                    _, name, t, facts = msg
                    self.stamps.append((rank, name, t))
                    self.current[rank] = name
                    self.facts[rank].update(facts)
                elif msg[0] == "error":
                    raise self._failure(rank, _reported(rank, msg))
                else:
                    yield rank, msg
            else:
                rank = sentinels[obj]
                raise self._failure(rank, self._last_error(rank))

    def _failure(self, rank: int, reported: tuple[str, str] | None) -> GroupFailure:
        """The group's failure, blamed on its first cause.

        When a rank dies in a collective its peers fail too, and their reports can arrive
        before its death is seen: a peer that died without reporting anything is the cause.
        """
        if reported is not None:
            text, tb = reported
            others = {p.sentinel: r for r, p in enumerate(self.procs) if r != rank}
            for obj in wait(list(others), timeout=1.0):
                if self._last_error(others[obj]) is None:
                    return GroupFailure("error", f"{self._death(others[obj])}; then {text}", tb)
            return GroupFailure("error", text, tb)
        return GroupFailure("error", self._death(rank))

    def _last_error(self, rank: int) -> tuple[str, str] | None:
        """The error a rank reported before it exited, if it did (see `_reported`)."""
        conn = self.conns[rank]
        while conn.poll():
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] == "error":
                return _reported(rank, msg)
        return None

    def _death(self, rank: int) -> str:
        self.procs[rank].join(5)  # the sentinel fires before the exit status is collected
        code = self.procs[rank].exitcode
        if code is None:  # not our child (a Ray actor): its status is not ours to collect
            how = "exited"
        else:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        return f"rank {rank} {how} during {_next_phase(self.current[rank])}"

    def stamp_all(self, phase: str, t: float) -> None:
        """Every rank reached `phase` at `t` (CLOCK_MONOTONIC), as seen from the parent (e.g. Ray's
        cluster_joined: the parent joined before any rank started)."""
        self.stamps += [(rank, phase, t) for rank in range(len(self.specs))]

    def stamped(self, phase: str) -> dict[int, float]:
        """rank -> when it reached `phase` (CLOCK_MONOTONIC)."""
        return {rank: t for rank, name, t in self.stamps if name == phase}

    def phases(self) -> list[Phase]:
        t0 = min(t for _, _, t in self.stamps)
        return [Phase(rank, name, t - t0) for rank, name, t in self.stamps]

    def close(self, grace_s: float = 10.0) -> float:
        """Stop every rank (politely, then by force) and their descendants; seconds it took."""
        t0 = now()
        family = [c for p in self.procs if p.pid for c in lifecycle.descendants(p.pid)]
        for conn, p in zip(self.conns, self.procs):
            if p.is_alive():
                try:
                    conn.send(("stop",))
                except OSError:
                    pass
        deadline = t0 + grace_s
        for p in self.procs:
            p.join(max(0.0, deadline - now()))
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        lifecycle.kill_all(family)
        for conn in self.conns:
            conn.close()
        return now() - t0


def _reported(rank: int, error: tuple) -> tuple[str, str]:
    """A rank's ("error", phase, exception line, traceback) as (error text, traceback).

    The text leads with the exception line, the cause, because reports and footnotes show an
    error's first line; where it happened follows; the traceback goes to the record's own field.
    """
    _, phase, line, tb = error
    return f"{line} (rank {rank}, during {phase})", tb.strip()


def _next_phase(last: str) -> str:
    from .worker import PHASES

    i = PHASES.index(last) if last in PHASES else -1
    return PHASES[i + 1] if 0 <= i < len(PHASES) - 1 else last
