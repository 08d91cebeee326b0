"""A tensor-parallel rank: start up phase by phase, then serve decode requests.

This module is the target that spawn and forkserver children import by name, so it imports
nothing heavy at module level: under spawn the `imports_done` phase must contain the cost of
importing torch, and a `bare` parent must stay free of torch.

Protocol over the rank's pipe (tuples): the rank sends ("phase", name, t, facts), ("ready", dict),
("result", dict) and ("error", phase, exception line, traceback), facts being what the parent
verifies (pid, ...) and riding on a phase message, one pickle and one wake-up of the parent fewer;
the parent sends ("decode", batches, warmup_steps, steps) and ("stop",).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from . import faults
from .clock import now

PHASES = ("start_requested", "process_entry", "imports_done", "device_ready",
           "dist_initialized", "weights_loaded", "first_token", "ready")
PROMPT_LEN = 16


def rank_main(spec: dict[str, Any], conn: Connection) -> None:
    """Entry point of rank `spec['rank']`; exits non-zero after reporting an error."""
    entered = now()
    rank = spec["rank"]
    phase = "process_entry"  # the phase in progress, which an error is reported in

    def stamp(name: str, t: float | None = None, facts: dict[str, Any] | None = None) -> None:
        nonlocal phase
        faults.at(rank, name)
        conn.send(("phase", name, now() if t is None else t, facts or {}))
        phase = PHASES[PHASES.index(name) + 1] if name != "ready" else "serving"

    try:
        stamp("process_entry", entered, {"pid": os.getpid(), "torch_at_entry": "torch" in sys.modules})
        import torch
        import torch.distributed as dist

        from .model import TPDecoder, dtype_for

        # torch's own record of an unsafe fork (a CUDA runtime inherited from the parent)
        stamp("imports_done", facts={"bad_fork": bool(torch.cuda._is_in_bad_fork())})

        if spec["device"] == "cuda":
            device = torch.device("cuda", spec.get("device_index", rank))
            torch.cuda.set_device(device)
            torch.zeros(1, device=device)  # creates the CUDA context now, inside this phase
            backend = "nccl"
        else:
            device = torch.device("cpu")
            torch.set_num_threads(spec["threads"])
            backend = "gloo"
        stamp("device_ready")

        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{spec['port']}", rank=rank,
                                world_size=spec["world"], device_id=device if backend == "nccl" else None)
        dist.all_reduce(torch.ones(1, device=device))  # communicators are lazy: make this phase pay for them
        stamp("dist_initialized")

        model = TPDecoder(Path(spec["checkpoint"]), rank, spec["world"], device, dtype_for(spec["dtype"], spec["device"]))
        _sync(device)
        stamp("weights_loaded")

        model.generate(model.prompt(1, PROMPT_LEN), 1)
        _sync(device)
        stamp("first_token")

        tokens = model.generate(model.prompt(1, PROMPT_LEN), 1 + spec["warmup_steps"])
        _sync(device)
        stamp("ready")
        reserved = torch.cuda.memory_reserved(device) / 2**20 if device.type == "cuda" else None
        # The same digest from every TP size and start method shows that they computed the same thing.
        digest = hashlib.sha256(repr(tokens).encode()).hexdigest()[:16]
        conn.send(("ready", {"torch_reserved_mib": reserved, "weight_bytes": model.weight_bytes(),
                             "output_digest": digest}))

        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                break
            phase = "decode"
            _, batches, warmup, steps = msg
            faults.at(rank, "decode")
            latencies = {b: _decode(model, device, b, warmup, steps) for b in batches}
            bandwidth = memory_bandwidth(device) if device.type == "cuda" else None
            conn.send(("result", {"latencies": latencies, "bandwidth": bandwidth}))
        dist.destroy_process_group()
    except BaseException as exc:
        try:
            conn.send(("error", phase, exception_line(exc), traceback.format_exc()))
        except OSError:
            pass  # the parent has gone
        sys.exit(1)


def exception_line(exc: BaseException) -> str:
    """`Type: message` on one line, as a traceback's last line names it: what an error text starts with."""
    name = type(exc).__qualname__
    if type(exc).__module__ not in ("builtins", "__main__"):
        name = f"{type(exc).__module__}.{name}"  # e.g. torch.OutOfMemoryError, as traceback writes it
    try:
        text = str(exc)
    except Exception:
        text = "<exception str() failed>"
    return " ".join(f"{name}: {text}".split())[:500] if text else name


def _decode(model: Any, device: Any, batch: int, warmup: int, steps: int) -> list[float]:
    """Per-step latencies (seconds, perf_counter) of `steps` greedy decode steps after `warmup` untimed ones.

    Each step is synchronised before the clock is read, so a step's time is its whole time on
    the device; on CUDA the step is a replayed CUDA graph (see `TPDecoder.decoder`).
    """
    step = model.decoder(model.prompt(batch, PROMPT_LEN), warmup + steps, use_graph=device.type == "cuda")
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def memory_bandwidth(device: Any, gib: float = 1.0, copies: int = 10) -> float:
    """Achievable device memory bandwidth in bytes/s: a device-to-device copy reads and writes each byte."""
    import torch

    src = torch.empty(int(gib * 2**30) // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(copies):
        dst.copy_(src)
    end.record()
    end.synchronize()
    seconds = start.elapsed_time(end) / 1000
    del src, dst
    torch.cuda.empty_cache()
    return 2 * gib * 2**30 * copies / seconds


def _sync(device: Any) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)
