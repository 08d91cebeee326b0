"""Fault injection for the fault tests: `FORKSPAWN_FAULT="WHO:WHERE:ACTION"`.

- `RANK:PHASE:kill|hang|raise`: rank RANK dies by SIGKILL, sleeps forever, or raises when it
  reaches PHASE (a start-up phase, or `decode`).
- `parent:fork:hold-lock`: the classic fork deadlock. A thread of the parent holds `LOCK`
  while workers are started; each worker takes `LOCK` at entry. A forked child inherits the
  lock as held by a thread that does not exist in it and blocks forever; a spawned child
  imports this module afresh and gets a free lock.

A real engine's processes are not ours to instrument: its faults (`engine_fault`, e.g. vLLM's
config.extra.vllm_fault) are `PROCESS:decode:kill`, the parent sending SIGKILL to the process of
that record label (`rank0`, `engine-core`) while the engine decodes.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

FAULT_ENV = "FORKSPAWN_FAULT"
ACTIONS = ("kill", "hang", "raise", "hold-lock")
LOCK = threading.Lock()


ENGINE_PROCESS = re.compile(r"rank\d+|engine-core")


def parse(spec: str, what: str, who: str = "RANK", where: str = "PHASE",
          actions: tuple[str, ...] = ACTIONS) -> tuple[str, str, str]:
    """`WHO:WHERE:ACTION` as a triple; ValueError (one line naming `what`) if malformed."""
    parts = spec.split(":")
    if len(parts) != 3 or parts[2] not in actions:
        raise ValueError(f"bad {what}={spec!r}; expected {who}:{where}:ACTION with ACTION in {', '.join(actions)}")
    return parts[0], parts[1], parts[2]


def engine_fault(spec: str, what: str) -> str:
    """A real engine's fault, checked: `PROCESS:decode:kill`, PROCESS a record label; the label."""
    process, where, _ = parse(spec, what, "PROCESS", "decode", ("kill",))
    if not ENGINE_PROCESS.fullmatch(process) or where != "decode":
        raise ValueError(f"bad {what}={spec!r}; expected PROCESS:decode:kill with PROCESS rank<N> or engine-core")
    return process


def _fault() -> tuple[str, str, str] | None:
    spec = os.environ.get(FAULT_ENV)
    return parse(spec, FAULT_ENV) if spec else None


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
