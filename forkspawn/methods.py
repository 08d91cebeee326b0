"""Start methods: choosing them, and verifying from the outside what really happened.

Choosing: `context()` turns a method name into a multiprocessing context (for `ray`, an
equivalent whose processes are Ray actors: ray_cluster.py). The forkserver is process-global in
CPython, which is one reason every measurement runs in a fresh parent interpreter: its
forkserver is always the one this measurement configured.

Verifying what really happened is `provenance.py`'s (its names are found here too).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
from typing import Any

from .config import METHODS
from .provenance import maps_torch, method_used, process_start, started_by

__all__ = ["context", "forkserver_info", "method_used", "process_facts", "process_start", "started_by"]


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
    return {**info, "pid": pid, "torch_loaded": pid is not None and maps_torch(pid)}


def process_facts() -> dict[str, Any]:
    """What a freshly started worker can say about itself before importing anything heavy."""
    import sys

    return {"torch_at_entry": "torch" in sys.modules}






