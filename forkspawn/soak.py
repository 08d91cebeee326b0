"""Soak: start and tear down a worker group many times from one parent; does the parent leak?

`forkspawn soak --method M --cycles N --json` runs in a fresh interpreter (the parent), in
parent state `torch` so that forked ranks skip the import. After each cycle it reads the
parent's RSS, open descriptors and threads, the entries in /dev/shm, the parent's live children
and, on GPUs, the device memory NVML attributes to the parent. Growth is the least-squares slope
per 100 cycles after the first `WARMUP` cycles (allocator pools and lazy imports settle there).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Any

import psutil

from .config import Config

WARMUP = 3


def snapshot(on_gpu: bool) -> dict[str, float]:
    from .memory import MIB, gpu_memory_by_pid

    me = psutil.Process()
    row = {"rss_mib": me.memory_info().rss / MIB, "fds": me.num_fds(), "threads": me.num_threads(),
           "shm_entries": len(os.listdir("/dev/shm")), "children": len(me.children(recursive=True))}
    if on_gpu:
        row["gpu_mib"] = gpu_memory_by_pid()[0].get(os.getpid(), 0.0)
    return row


def soak_config(method: str, tp: int = 1, model: str = "tiny") -> Config:
    """What a soak cycles: parent state torch (forked ranks skip the import), one decode step."""
    return Config(method=method, parent_state="torch", tp=tp, model=model, batches=(1,), warmup_steps=0,
                  decode_steps=1, repeat=1)


def soak(config: Config, cycles: int) -> dict[str, Any]:
    """Cycle a worker group `cycles` times; per-cycle resources and their growth."""
    from . import parent_state, ray_cluster
    from .engines import torch_tp
    from .measure import resolve

    config = resolve(config)
    state = parent_state.prepare(config)
    rows, failures = [], []
    with ray_cluster.for_run(config, torch_tp.ray_head(config)):
        for i in range(cycles):
            run = torch_tp.run_once(config, dict(state))
            if run.status != "ok":
                failures.append(f"cycle {i}: {run.status}: {run.error}")
            rows.append(snapshot(config.device == "cuda"))
    settled = rows[WARMUP:] if len(rows) > WARMUP + 1 else rows
    growth = {k: 100 * _slope([r[k] for r in settled]) for k in rows[0]} if len(settled) > 1 else {}
    return {"method": config.method, "tp": config.tp, "cycles": cycles, "warmup_cycles": WARMUP,
            "growth_per_100_cycles": growth, "first": rows[0], "last": rows[-1], "per_cycle": rows,
            "failures": failures}


def _slope(ys: list[float]) -> float:
    return statistics.linear_regression(range(len(ys)), ys).slope if len(set(ys)) > 1 else 0.0


def soak_in_fresh_parent(method: str, cycles: int) -> dict[str, Any]:
    """`soak` in a fresh interpreter of its own (the caller's state is not ours to assume).

    The checkpoint is generated here, not in that parent: generating runs torch's OpenMP thread
    pool, and a child forked from a process whose pool ran hangs in libgomp at its first
    parallel operation.
    """
    import subprocess

    from .checkpoint import default_cache_dir, resolve_checkpoint

    resolve_checkpoint("tiny", default_cache_dir())
    out = subprocess.run([sys.executable, "-m", "forkspawn", "soak", "--method", method, "--cycles", str(cycles),
                          "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)
