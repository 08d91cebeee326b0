"""Fault injection for the fault tests: `FORKSPAWN_FAULT="WHO:WHERE:ACTION"`.

- `RANK:PHASE:kill|hang|raise`: rank RANK dies by SIGKILL, sleeps forever, or raises when it
  reaches PHASE (a start-up phase, or `decode`).
- `parent:fork:hold-lock`: the classic fork deadlock. A thread of the parent holds `LOCK`
  while workers are started; each worker takes `LOCK` at entry. A forked child inherits the
  lock as held by a thread that does not exist in it and blocks forever; a spawned child
  imports this module afresh and gets a free lock.
"""

from __future__ import annotations

import os
import signal
import threading
import time

FAULT_ENV = "FORKSPAWN_FAULT"
ACTIONS = ("kill", "hang", "raise", "hold-lock")
LOCK = threading.Lock()


def _fault() -> tuple[str, str, str] | None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    parts = spec.split(":")
    if len(parts) != 3 or parts[2] not in ACTIONS:
        raise ValueError(f"bad {FAULT_ENV}={spec!r}; expected RANK:PHASE:ACTION with ACTION in {', '.join(ACTIONS)}")
    return parts[0], parts[1], parts[2]


def hold_lock_if_asked() -> None:
    """In the parent, before workers start: hold LOCK in a thread for the rest of the process."""
    if _fault() == ("parent", "fork", "hold-lock"):
        taken = threading.Event()

        def hold() -> None:
            LOCK.acquire()
            taken.set()
            threading.Event().wait()

        threading.Thread(target=hold, daemon=True, name="forkspawn-lock-holder").start()
        taken.wait()


def at(rank: int, phase: str) -> None:
    """Called by rank `rank` as it reaches `phase`: do what the fault asks, if it targets this point."""
    fault = _fault()
    if fault is None:
        return
    who, where, action = fault
    if who == "parent":
        if phase == "process_entry":
            with LOCK:  # blocks forever in a child forked while the parent held it
                pass
        return
    if int(who) != rank or where != phase:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "hang":
        while True:
            time.sleep(3600)
    raise RuntimeError(f"injected fault in rank {rank} at {phase}")
