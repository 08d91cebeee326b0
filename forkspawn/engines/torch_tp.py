"""Our own workload: N ranks of `model.TPDecoder` started with the requested start method."""

from __future__ import annotations

import gc
import importlib.metadata
import os
import statistics
from typing import Any

from .. import machine, memory, ray_cluster
from ..checkpoint import ModelSpec, resolve_checkpoint
from ..clock import since_exec
from ..config import Config
from ..launcher import GroupFailure, WorkerGroup
from ..methods import METHODS, apply, verify
from ..record import ProcessMemory, Run
from .contract import no_ray_head

# The adapter's contract (engines.contract.Adapter); METHODS: our workload starts with every
# method, Ray's included
__all__ = ["METHODS", "engine_version", "ray_head", "run_once", "unavailable"]
DECODE_TIMEOUT_S = 600.0


def unavailable() -> str | None:
    return None  # torch is a dependency of the harness itself


def engine_version() -> str:
    return importlib.metadata.version("torch")


ray_head = no_ray_head  # its Ray head needs nothing beyond ray_cluster's defaults


def run_once(config: Config, parent_state: dict[str, Any]) -> Run:
    run = Run(parent_state=parent_state, engine_version=engine_version())
    checkpoint = resolve_checkpoint(config.model, config.cache_path())
    ctx, forkserver = apply.context(config.method, config.forkserver)
    port = machine.free_port()
    specs = [
        {
            "rank": r,
            "world": config.tp,
            "device": config.device,
            "checkpoint": str(checkpoint),
            "dtype": ModelSpec.from_hf(checkpoint).torch_dtype,
            "port": port,
            "threads": max(1, len(os.sched_getaffinity(0)) // config.tp),
            "warmup_steps": config.warmup_steps,
        }
        for r in range(config.tp)
    ]
    group = WorkerGroup(ctx, specs)
    try:
        group.start()
        if getattr(ctx, "joined_s", None):  # Ray: when the parent had joined the cluster
            group.stamp_all("cluster_joined", ctx.joined_s)
        ready = group.wait_ready(config.timeout_s)
        run.phases = group.phases()
        run.time_to_ready_s = max(p.t_s for p in run.phases if p.name == "ready")
        run.exec_to_ready_s = since_exec(min(group.stamped("start_requested").values()) + run.time_to_ready_s)
        run.forkserver = apply.forkserver_info(forkserver)
        run.method_used = verify.method_used(group.pids)
        run.notes += _prestarted(group)
        run.processes = _processes(group, run.forkserver, ready)
        digests = {r["output_digest"] for r in ready}
        run.output_digest = digests.pop() if len(digests) == 1 else None
        if digests:
            run.notes.append("ranks generated different tokens")
        memory.probe(run.processes, on_gpu=config.device == "cuda")

        result = group.request(("decode", config.batches, config.warmup_steps, config.decode_steps),
                               DECODE_TIMEOUT_S)[0]  # ranks step in lockstep: rank 0 speaks for all
        for batch, times in result["latencies"].items():
            run.tokens_per_s[batch] = batch * len(times) / sum(times)
            run.step_latency_s[batch] = statistics.median(times)
        if result["bandwidth"]:
            # Decoding reads every weight once per step: the memory-bound ceiling of rank 0
            run.bandwidth_gb_s = result["bandwidth"] / 1e9
            run.weight_bytes = ready[0]["weight_bytes"]
            run.roofline_tokens_per_s = {b: b * result["bandwidth"] / run.weight_bytes for b in run.tokens_per_s}
        memory.probe_host(run.processes, "after_decode")
        gc.collect()  # what the parent's garbage does to a forked rank's shared pages
        memory.probe_host(run.processes, "after_gc")
    except GroupFailure as failure:
        run.fail(failure.status, failure.error, failure.traceback)
        run.phases = run.phases or group.phases()
    finally:
        teardown = group.close()
    if run.status == "ok":
        run.teardown_s = teardown
    run.parent_state["child_bad_fork"] = [f.get("bad_fork") for f in group.facts]
    run.parent_state["child_torch_at_entry"] = [f.get("torch_at_entry") for f in group.facts]
    return run


def _processes(group: WorkerGroup, forkserver: dict | None, ready: list[dict]) -> list[ProcessMemory]:
    procs = [ProcessMemory("parent", None, os.getpid(), started_by=None)]
    if forkserver and forkserver.get("pid"):
        procs.append(ProcessMemory("forkserver", None, forkserver["pid"], started_by="spawn"))
    for rank, (pid, info) in enumerate(zip(group.pids, ready)):
        procs.append(ProcessMemory("rank", rank, pid, started_by=verify.started_by(pid),
                                   torch_reserved_mib=info.get("torch_reserved_mib")))
    # Ray's own processes (a local head's GCS, raylet, agents, idle workers) are part of its cost
    return procs + ray_cluster.own_processes(set(group.pids))


def _prestarted(group: WorkerGroup) -> list[str]:
    """Ray may run an actor in a worker process it started before anyone asked (its idle pool)."""
    requested = group.stamped("start_requested")
    return [f"rank {rank} ran in a process created {requested[rank] - created:.2f} s before its start request"
            f" (Ray's prestarted workers)" for rank, pid in enumerate(group.pids)
            if (created := verify.process_start(pid)) is not None and created < requested[rank] - 0.02]


