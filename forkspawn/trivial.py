"""A trivial rank (the launcher's protocol, no work) and one cold start of it through the harness.

`python -m forkspawn.trivial METHOD TP` is the harness variant of `quality.overhead`. This module
imports only the standard library and `clock` at module level: spawned and forkserver children
re-import it (as `__mp_main__`, where they also find `trivial_rank`), and whatever it imported
would land in the very start-up times it measures, which the bare reference does not pay.
"""

from __future__ import annotations

import json
import os
import sys

from .clock import now

TYPE_CHECKING = False  # not typing's: importing typing costs a spawned child milliseconds
if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from typing import Any

    from .launcher import WorkerGroup


def trivial_rank(spec: dict[str, Any], conn: "Connection") -> None:
    """Speaks rank_main's protocol (phases with facts, ready, result, stop) without any work.

    With spec["import_torch"] it imports torch first, so that probes see a realistic address space.
    """
    entered = now()
    conn.send(("phase", "process_entry", entered, {"pid": os.getpid(), "torch_at_entry": "torch" in sys.modules}))
    if spec.get("import_torch"):
        import torch  # noqa: F401  (its address space, for the probes)

        conn.send(("phase", "imports_done", now(), {}))
    conn.send(("phase", "ready", now(), {}))
    conn.send(("ready", {}))
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            return
        conn.send(("result", None))


def group(method: str, tp: int, import_torch: bool = False) -> "WorkerGroup":
    from .launcher import WorkerGroup
    from .methods.apply import context

    ctx, _ = context(method)
    return WorkerGroup(ctx, [{"rank": r, "import_torch": import_torch} for r in range(tp)], target=trivial_rank)


def cold_start(method: str, tp: int) -> dict[str, float]:
    """One cold start of trivial ranks; run in a fresh interpreter (the forkserver is
    process-global, and a fresh parent is what `measure` uses too)."""
    g = group(method, tp)
    try:
        g.start()
        g.wait_ready(60)
        phases = g.phases()
    finally:
        g.close()
    return {"ready_s": max(p.t_s for p in phases if p.name == "ready")}


if __name__ == "__main__":
    print(json.dumps(cold_start(sys.argv[1], int(sys.argv[2]))))
