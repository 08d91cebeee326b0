"""Measuring the measurement (issue 9): harness overhead, probe cost, validity, page cache, precision.

Every function reuses the harness itself (launcher.WorkerGroup, methods.context, memory.probe,
stats.summarize) and compares it with something that does not share its code: a stdlib-only
script, a direct parse of /proc, `python -X importtime`, `nvidia-smi`, the kernel's mincore().

The trivial rank and the harness's cold start live in `trivial.py`, which spawned children
import. Everything heavier than the standard library is imported inside the functions here.

CLI: python -m forkspawn.quality {overhead,probes,validity,pagecache,precision RECORDS.jsonl}
     [--repeat N] [--methods ...] [--json]
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from . import vocabulary as vocab
from .clock import now
from .record import SchemaError, read_records
from .trivial import group as _group

MIB = 1024 * 1024
METHODS = ("fork", "spawn", "forkserver", "forkserver-preload")
CHEAP_METHODS = ("fork", "spawn", "forkserver")  # preload imports torch into the server: seconds per start


# The independent reference: the standard library only, its own target, its own clock reads.
BARE_SCRIPT = '''
import multiprocessing as mp, sys, time, json

def entry(conn):
    conn.send(time.monotonic())
    conn.recv()

if __name__ == "__main__":
    # PARENT_IMPORTS
    method, tp = sys.argv[1], int(sys.argv[2])
    ctx = mp.get_context("forkserver" if method.startswith("forkserver") else method)
    if method == "forkserver-preload":
        ctx.set_forkserver_preload(["torch"])
    elif method == "forkserver":
        ctx.set_forkserver_preload([])
    conns, procs, t0 = [], [], None
    for r in range(tp):
        mine, theirs = ctx.Pipe()
        p = ctx.Process(target=entry, args=(theirs,))
        t = time.monotonic()
        t0 = t if t0 is None else t0
        p.start()
        theirs.close()
        conns.append(mine); procs.append(p)
    stamps = [c.recv() for c in conns]
    for c in conns:
        c.send(None)
    for p in procs:
        p.join()
    print(json.dumps({"ready_s": max(stamps) - t0}))
'''


# What the harness variant's parent has imported when it forks (see overhead): the same-parent
# reference imports it too, inside its main guard so that spawned children do not.
HARNESS_PARENT_IMPORTS = "import forkspawn.launcher, forkspawn.methods, forkspawn.trivial"


def overhead(method: str, repeat: int = 10, tp: int = 1) -> dict[str, Any]:
    """Harness time-to-ready of trivial ranks vs the bare stdlib script, same method, `repeat` rounds.

    Three variants, each a fresh interpreter: the harness; the bare script in a parent of the
    harness's size (it imports the harness's modules first, and uses none of them); the bare
    script in a minimal parent. A forked child's start grows with its parent (page tables, COW
    faults), so the overhead, the harness's own cost, is harness minus same-size bare; the
    `parent_size_s` line (same-size minus minimal) shows what the modules of any parent cost a
    fork. Variants rotate so that drift in the machine's load hits all alike. Medians of the
    paired differences with asv's 99% CI; the goal is max(1 ms, 1% of bare).
    """
    import subprocess
    import tempfile

    from .measure import ensure_bytecode
    from .stats import summarize

    ensure_bytecode()
    times: dict[str, list[float]] = {"harness": [], "bare": [], "minimal": []}
    with tempfile.TemporaryDirectory(prefix="forkspawn-quality-") as tmp:
        minimal, same = Path(tmp, "bare_start.py"), Path(tmp, "bare_start_same_parent.py")
        minimal.write_text(BARE_SCRIPT)
        same.write_text(BARE_SCRIPT.replace("# PARENT_IMPORTS", HARNESS_PARENT_IMPORTS))
        cmds = {"harness": [sys.executable, "-m", "forkspawn.trivial", method, str(tp)],
                "bare": [sys.executable, str(same), method, str(tp)],
                "minimal": [sys.executable, str(minimal), method, str(tp)]}
        order = list(cmds)
        for i in range(repeat):
            for variant in order[i % 3:] + order[:i % 3]:
                out = subprocess.run(cmds[variant], capture_output=True, text=True, timeout=300, cwd=tmp)
                if out.returncode != 0:
                    raise RuntimeError(f"{variant} start with {method} failed: {out.stderr.strip()[-800:]}")
                times[variant].append(json.loads(out.stdout.splitlines()[-1])["ready_s"])
    harness, bare, minimal_s = times["harness"], times["bare"], times["minimal"]
    d, b = summarize([h - x for h, x in zip(harness, bare)]), summarize(bare)
    limit = max(1e-3, 0.01 * b["median"])
    return {"method": method, "tp": tp, "n": repeat,
            "harness_s": summarize(harness), "bare_s": b, "minimal_s": summarize(minimal_s), "overhead_s": d,
            "parent_size_s": summarize([x - m for x, m in zip(bare, minimal_s)]),
            "overhead_rel": d["median"] / b["median"], "limit_s": limit,
            # met: the whole 99% CI is within the goal; missed: the whole CI is above it
            "goal": "met" if (d["ci_high"] or math.inf) <= limit else "missed" if (d["ci_low"] or -math.inf) > limit else "unresolved",
            "samples": {"harness_s": harness, "bare_s": bare, "minimal_s": minimal_s}}


def import_tax(repeat: int = 5) -> dict[str, Any]:
    """What a real spawned (or forkserver) rank imports of the harness before its first stamp.

    The rank re-imports the parent's main module (forkspawn.parent, as __mp_main__) and the
    target's module (forkspawn.worker); multiprocessing's bootstrap is imported first so that
    only the harness's share counts. Gross: their cumulative import time. Net: the self time of
    those of their modules that the rank's own imports (torch, torch.distributed, forkspawn.model)
    would not load anyway, i.e. what the harness adds to time-to-ready rather than moves between
    phases. The trivial-rank comparison cannot see this (its main module is this light one).
    """
    import subprocess

    from .stats import summarize

    boot = "import multiprocessing.spawn, multiprocessing.connection"
    stmt = f"{boot}; import forkspawn.parent, forkspawn.worker"
    listing = subprocess.run([sys.executable, "-c", f"{boot}; {PHASE_IMPORTS}; import sys; print(' '.join(sys.modules))"],
                             capture_output=True, text=True, timeout=300)
    rank_modules = set(listing.stdout.split())
    gross, net = [], []
    for _ in range(repeat):
        cum = importtime(stmt)
        own = importtime(stmt, column="self")
        gross.append(cum.get("forkspawn.parent", 0.0) + cum.get("forkspawn.worker", 0.0))
        net.append(sum(t for m, t in own.items() if m not in rank_modules and m in _harness_modules(stmt)))
    return {"statement": stmt, "seconds": summarize(gross), "net_seconds": summarize(net),
            "samples": {"gross_s": gross, "net_s": net}}


def _harness_modules(stmt: str, _memo: dict[str, set[str]] = {}) -> set[str]:  # noqa: B006 (a memo)
    """Modules `stmt` imports beyond multiprocessing's bootstrap."""
    import subprocess

    if stmt not in _memo:
        code = ("import sys; a = set(sys.modules); import multiprocessing.spawn, multiprocessing.connection; "
                "b = set(sys.modules); import forkspawn.parent, forkspawn.worker; print(' '.join(set(sys.modules) - b))")
        _memo[stmt] = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout.split())
    return _memo[stmt]


# --- memory probes: cost and perturbation ----------------------------------------------------

def _statm_rss_mib(pid: int) -> float:
    """RSS from /proc/PID/statm: one small read that allocates nothing in the process it reads."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


def probe_cost(pids: list[int], repeat: int = 20) -> dict[str, Any]:
    """Seconds one `memory.probe` call takes over this process and `pids`, and what probing does
    to RSS: of the processes read (should be nothing) and of this process, which reads (the
    parent is itself probed, so growth there would show up in its own figure)."""
    from . import memory
    from .record import ProcessMemory
    from .stats import summarize

    me = os.getpid()
    others_before = [_statm_rss_mib(p) for p in pids]
    me_before = _statm_rss_mib(me)
    times = []
    for _ in range(repeat):
        procs = [ProcessMemory("parent", None, me, None)] + [ProcessMemory("rank", r, p, None) for r, p in enumerate(pids)]
        t0 = now()
        memory.probe(procs, on_gpu=False)
        times.append(now() - t0)
    me_after = _statm_rss_mib(me)
    others_after = [_statm_rss_mib(p) for p in pids]
    maps = [sum(1 for _ in open(f"/proc/{p}/maps")) for p in pids]
    return {"processes": len(pids) + 1, "n": repeat, "probe_s": summarize(times), "first_probe_s": times[0],
            "rank_mappings": maps, "rank_rss_delta_mib": [a - b for a, b in zip(others_after, others_before)],
            "parent_rss_delta_mib": me_after - me_before, "samples": {"probe_s": times}}


def _fresh(func: str, **kwargs: Any) -> Any:
    """`func(**kwargs)` of this module in a fresh interpreter, as `measure` runs each start in a
    fresh parent: the parent then is what a real parent is, and what starting workers leaves in
    a process (multiprocessing's resource tracker, a forkserver) ends with it."""
    import subprocess

    out = subprocess.run([sys.executable, "-m", "forkspawn.quality", "_call", func, json.dumps(kwargs)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{func} failed: {out.stderr.strip()[-1500:]}")
    return json.loads(out.stdout.splitlines()[-1])


def probes(repeat: int = 20, tp: int = 2, import_torch: bool = True) -> dict[str, Any]:
    """probe_cost and compare_readers over one live group of (torch-importing) trivial spawn
    ranks, whose parent is a fresh interpreter."""
    return _fresh("_probes_here", repeat=repeat, tp=tp, import_torch=import_torch)


def _probes_here(repeat: int, tp: int, import_torch: bool) -> dict[str, Any]:
    group = _group("spawn", tp, import_torch)
    try:
        group.start()
        group.wait_ready(120)
        cost = probe_cost(group.pids, repeat)
        readers = compare_readers([os.getpid()] + group.pids)
    finally:
        group.close()
    worst = {k: max(abs(r[k]["probe_minus_rollup"]) for r in readers) for k in ("rss_mib", "pss_mib", "uss_mib")}
    return {"probe": cost, "readers": readers, "max_abs_probe_minus_rollup_mib": worst}


def sampler_perturbation(repeat: int = 5, interval_s: float = 0.01, tp: int = 2) -> dict[str, Any]:
    return _fresh("_sampler_here", repeat=repeat, interval_s=interval_s, tp=tp)


def _sampler_here(repeat: int, interval_s: float, tp: int) -> dict[str, Any]:
    """Time to ready of torch-importing trivial ranks with and without a thread that probes them
    every `interval_s` during start-up: what sampling would cost, had the harness sampled (it does
    not: peak RSS is the kernel's VmHWM, and the one probe runs after ready)."""
    import threading

    from . import memory
    from .record import ProcessMemory
    from .stats import summarize

    def start(sample: bool) -> tuple[float, int]:
        group = _group("spawn", tp, import_torch=True)
        stop, count = threading.Event(), [0]

        def sampler() -> None:
            while not stop.wait(interval_s):
                memory.probe([ProcessMemory("rank", r, p, None) for r, p in enumerate(group.pids)], on_gpu=False)
                count[0] += 1

        thread = threading.Thread(target=sampler, daemon=True)
        try:
            group.start()
            if sample:
                thread.start()
            group.wait_ready(120)
            ready = max(p.t_s for p in group.phases() if p.name == "ready")
        finally:
            stop.set()
            if sample:
                thread.join()
            group.close()
        return ready, count[0]

    plain, sampled, probes_made = [], [], []
    for i in range(repeat):
        for sample in ((False, True) if i % 2 == 0 else (True, False)):
            ready, count = start(sample)
            (sampled if sample else plain).append(ready)
            if sample:
                probes_made.append(count)
    diffs = [s - p for s, p in zip(sampled, plain)]
    return {"interval_s": interval_s, "tp": tp, "n": repeat, "plain_s": summarize(plain), "sampled_s": summarize(sampled),
            "delta_s": summarize(diffs), "probes_per_start": probes_made, "samples": {"plain_s": plain, "sampled_s": sampled}}


# --- validity: independent readers -----------------------------------------------------------

def smaps_rollup_mib(pid: int) -> dict[str, float]:
    """RSS, PSS and USS (Private_Clean + Private_Dirty + Private_Hugetlb) from /proc/PID/smaps_rollup."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        fields[key] = int(rest.split()[0])  # kB
    uss = sum(v for k, v in fields.items() if k.startswith("Private_"))
    return {"rss_mib": fields["Rss"] / 1024, "pss_mib": fields["Pss"] / 1024, "uss_mib": uss / 1024}


def smaps_sum_mib(pid: int) -> dict[str, float]:
    """The same totals summed over every mapping of /proc/PID/smaps: another kernel code path,
    which rounds PSS per mapping (so it may read slightly lower than smaps_rollup)."""
    rss = pss = uss = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if line.startswith("Rss:"):
            rss += int(line.split()[1])
        elif line.startswith("Pss:"):
            pss += int(line.split()[1])
        elif line.startswith("Private_"):
            uss += int(line.split()[1])
    return {"rss_mib": rss / 1024, "pss_mib": pss / 1024, "uss_mib": uss / 1024}


def compare_readers(pids: list[int]) -> list[dict[str, Any]]:
    """For each PID: memory.probe's figures (psutil) minus a direct smaps_rollup parse, read
    back to back, bracketed by two direct reads whose difference bounds the process's own drift."""
    from . import memory
    from .record import ProcessMemory

    out = []
    for pid in pids:
        before = smaps_rollup_mib(pid)
        pm = ProcessMemory("rank", None, pid, None)
        memory.probe([pm], on_gpu=False)
        after = smaps_rollup_mib(pid)
        full = smaps_sum_mib(pid)
        row: dict[str, Any] = {"pid": pid}
        for kind in ("rss_mib", "pss_mib", "uss_mib"):
            direct = (before[kind] + after[kind]) / 2
            row[kind] = {"probe": getattr(pm, kind), "rollup": direct, "smaps": full[kind],
                         "probe_minus_rollup": getattr(pm, kind) - direct,
                         "smaps_minus_rollup": full[kind] - direct, "drift": after[kind] - before[kind]}
        out.append(row)
    return out


def nvidia_smi_by_pid() -> tuple[dict[int, float], str | None]:
    """GPU MiB per PID as nvidia-smi reports it: the independent reader for memory.gpu_memory_by_pid."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return {}, "nvidia-smi not found (no NVIDIA driver on this machine)"
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        return {}, f"nvidia-smi failed: {out.stderr.strip() or out.stdout.strip()}"
    used: dict[int, float] = {}
    for line in out.stdout.strip().splitlines():
        pid, mib = (x.strip() for x in line.split(","))
        if mib.isdigit():
            used[int(pid)] = used.get(int(pid), 0.0) + float(mib)
    return used, None


def gpu_validity() -> dict[str, Any]:
    """NVML (what the harness records) vs nvidia-smi for every compute process, same moment."""
    from .memory import gpu_memory_by_pid

    nvml, nvml_note = gpu_memory_by_pid()
    smi, smi_note = nvidia_smi_by_pid()
    rows = [{"pid": p, "nvml_mib": nvml.get(p), "nvidia_smi_mib": smi.get(p)} for p in sorted(set(nvml) | set(smi))]
    return {"processes": rows, "nvml_note": nvml_note, "nvidia_smi_note": smi_note}


def _hold_gpu(mib: int, ready: Any, stop: Any) -> None:
    import torch

    buf = torch.empty(mib * 2**20, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    ready.set()
    stop.wait()
    del buf


def gpu_validity_with_holders(mibs: list[int], rounds: int = 3) -> dict[str, Any]:
    """gpu_validity `rounds` times while spawned processes hold `mibs` MiB of CUDA memory each
    (run it in a fresh interpreter: the CLI does)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    stop, procs, readies = ctx.Event(), [], []
    try:
        for mib in mibs:
            ready = ctx.Event()
            procs.append(ctx.Process(target=_hold_gpu, args=(mib, ready, stop)))
            procs[-1].start()
            readies.append(ready)
        for ready in readies:
            ready.wait(300)
        return {"held_mib": {p.pid: m for p, m in zip(procs, mibs)}, "rounds": [gpu_validity() for _ in range(rounds)]}
    finally:
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()


def importtime(stmt: str, column: str = "cumulative") -> dict[str, float]:
    """Seconds per module imported by `stmt` in a fresh interpreter (-X importtime), cumulative or self."""
    import subprocess

    out = subprocess.run([sys.executable, "-X", "importtime", "-c", stmt], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip()[-800:])
    cumulative: dict[str, float] = {}
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            own, cum, name = line.split("|")
            cumulative.setdefault(name.strip(), int(cum if column == "cumulative" else own.split(":")[1]) / 1e6)
    return cumulative


# The imports of a rank's imports_done phase (worker.rank_main), in a fresh interpreter.
PHASE_IMPORTS = "import torch, torch.distributed; import forkspawn.model"


def import_validity(repeat: int = 5, records: str | None = None) -> dict[str, Any]:
    """`import torch` and the whole imports_done set by -X importtime, beside the harness's
    imports_done - process_entry of spawn/bare ranks (from a records file, if given).

    The phase should be at least the importtime figure (the rank also unpickles, sends its
    facts and runs torch's lazy initialisation); process_entry itself holds interpreter start-up."""
    from .stats import summarize

    torch_s, phase_set_s = [], []
    for _ in range(repeat):
        torch_s.append(importtime("import torch")["torch"])
        t = importtime(PHASE_IMPORTS)
        phase_set_s.append(sum(t.get(m, 0.0) for m in ("torch", "torch.distributed", "forkspawn.model")))
    result: dict[str, Any] = {"importtime_torch_s": summarize(torch_s), "importtime_phase_set_s": summarize(phase_set_s),
                              "samples": {"torch_s": torch_s, "phase_set_s": phase_set_s}}
    if records:
        for rec in read_records(records):
            s = rec.get("samples", {})
            if rec.get("method") == "spawn" and rec.get("parent_state") == "bare" and vocab.phase("imports_done", 0) in s:
                spans = [i - e for i, e in zip(s[vocab.phase("imports_done", 0)], s[vocab.phase("process_entry", 0)])]
                result[f"phase_imports_tp{rec['tp']}_s"] = summarize(spans)
                result[f"phase_process_entry_tp{rec['tp']}_s"] = summarize(s[vocab.phase("process_entry", 0)])
    return result


# --- page cache ------------------------------------------------------------------------------

def resident_fraction(path: str | os.PathLike) -> float:
    """Fraction of `path`'s pages in the page cache, by mincore() on a shared read-only mapping.

    Since Linux 5.2, mincore reports page-cache residency of a file mapping only to callers
    that own the file or may write it (otherwise only pages this process mapped): the harness
    owns its generated checkpoints, so this is exact for them; vmtouch and fincore do the same.
    """
    import ctypes
    import mmap

    size = os.path.getsize(path)
    if size == 0:
        return 1.0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    page = mmap.PAGESIZE
    pages = (size + page - 1) // page
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap of {path} failed")
        try:
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore of {path} failed")
            return sum(b & 1 for b in vec) / pages
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)


def drop_from_cache(path: str | os.PathLike) -> None:
    """Evict `path`'s clean, unmapped pages (POSIX_FADV_DONTNEED); pages another process maps stay."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)  # dirty pages are not evicted: write them back first
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def files_of(directory: str | os.PathLike) -> list[Path]:
    return sorted(p for p in Path(directory).rglob("*") if p.is_file())


def page_cache_state(paths: list[Path]) -> dict[str, Any]:
    """Byte-weighted resident fraction over `paths`, and whether that counts as warm (>= 99%)."""
    sizes = [p.stat().st_size for p in paths]
    resident = sum(resident_fraction(p) * s for p, s in zip(paths, sizes))
    frac = resident / sum(sizes) if sum(sizes) else 1.0
    return {"files": len(paths), "bytes": sum(sizes), "resident_fraction": frac, "warm": frac >= 0.99}


def warm_page_cache(paths: list[Path]) -> dict[str, Any]:
    """Read every byte of `paths` so the next start finds them cached (`make bench` can do this
    once before asv, making "warm" a decision rather than an accident of the previous run)."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    return page_cache_state(paths)


def torch_library_files() -> list[Path]:
    """The shared libraries torch maps at import: the bulk of a cold `import torch`."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    lib = Path(spec.origin).parent / "lib" if spec and spec.origin else None
    return sorted(lib.glob("*.so*")) if lib and lib.is_dir() else []


def cold_vs_warm(model: str = "tiny", repeat: int = 3, method: str = "spawn", drop_torch: bool = False) -> dict[str, Any]:
    """Time to ready of real cold starts (`measure.run_in_fresh_parent`) with the checkpoint
    (and optionally torch's libraries) evicted before each start, alternating with warm starts."""
    from .checkpoint import resolve_checkpoint
    from .config import Config
    from .measure import resolve, run_in_fresh_parent
    from .stats import summarize

    config = resolve(Config(model=model, method=method, parent_state="bare", repeat=1, decode_steps=1, batches=(1,)))
    checkpoint = resolve_checkpoint(config.model, config.cache_path())
    files = files_of(checkpoint) + (torch_library_files() if drop_torch else [])
    runs: dict[str, list[float]] = {"cold": [], "warm": []}
    states: dict[str, list[float]] = {"cold": [], "warm": []}
    for i in range(repeat):
        for kind in (("cold", "warm") if i % 2 == 0 else ("warm", "cold")):
            if kind == "cold":
                for f in files:
                    drop_from_cache(f)
            else:
                for f in files:
                    f.read_bytes()  # make sure: warm means every byte was just read
            states[kind].append(page_cache_state(files)["resident_fraction"])
            run = run_in_fresh_parent(config)
            if run.status != "ok":
                raise RuntimeError(f"{kind} start failed: {run.error}")
            runs[kind].append(run.time_to_ready_s)
    return {"model": model, "method": method, "dropped": "checkpoint" + (" + torch libraries" if drop_torch else ""),
            "bytes": sum(f.stat().st_size for f in files), "resident_before": states,
            "cold_s": summarize(runs["cold"]), "warm_s": summarize(runs["warm"]), "samples": runs}


# --- precision of a records file -------------------------------------------------------------

def _ci(samples: list[float]) -> tuple[float, float, float]:
    """asv's median and 99% CI (asv_runner.statistics.compute_stats), as asv stores them."""
    from asv_runner.statistics import compute_stats

    median, st = compute_stats(list(samples), 1)
    return median, st["ci_99_a"], st["ci_99_b"]


def resolved(a: list[float], b: list[float]) -> bool:
    """The 99% CIs of the two medians do not overlap: asv's own fallback test in `is_different`."""
    if len(a) < 2 or len(b) < 2:
        return False
    _, a0, a1 = _ci(a)
    _, b0, b1 = _ci(b)
    return a1 < b0 or b1 < a0


def asv_is_different(a: list[float], b: list[float]) -> bool:
    """What `asv compare` would conclude (Mann-Whitney U at p < 0.002 where n allows, else the CIs)."""
    from asv._stats import is_different

    _, sa = _stats(a)
    _, sb = _stats(b)
    return bool(is_different(a, b, sa, sb))


def _stats(samples: list[float]):
    from asv_runner.statistics import compute_stats

    return compute_stats(list(samples), 1)


def repeats_needed(a: list[float], b: list[float], power: float = 0.95, draws: int = 200,
                   n_max: int = 30, seed: int = 9) -> int | None:
    """Smallest n (both sides) at which `resolved` holds in >= `power` of bootstrap draws of n
    samples from each observed set; None if not by `n_max`.

    Why a bootstrap: the CI that must separate is asv's, whose width at small n comes from a
    Laplace posterior and at n >= 8 from order statistics; redrawing from the observed samples
    asks how often a run of n repeats on this machine would show the difference, without
    assuming a noise model. It needs some samples to draw from: at least 5 per side.
    """
    import random

    if min(len(a), len(b)) < 5:
        return None
    rng = random.Random(seed)
    for n in range(2, n_max + 1):
        hits = sum(resolved(rng.choices(a, k=n), rng.choices(b, k=n)) for _ in range(draws))
        if hits >= power * draws:
            return n
    return None


def config_key(rec: dict[str, Any]) -> tuple:
    extra = json.dumps(rec.get("config", {}).get("extra") or {}, sort_keys=True)
    return (rec["engine"], rec["method"], rec["config"]["parent_state"], rec.get("cuda_check", "runtime"), rec["tp"], extra)


# (method A, parent state A) vs (method B, parent state B): the headline comparisons
HEADLINE_PAIRS = ((("fork", "torch"), ("spawn", "bare")),  # an engine that imported torch forks; or spawns from bare
                  (("fork", "bare"), ("spawn", "bare")),
                  (("fork", "torch"), ("spawn", "torch")))
HEADLINE_METRICS = (vocab.TIME_TO_READY, vocab.mem(vocab.rank_label(0), "uss"))


def precision(path: str | os.PathLike, power: float = 0.95) -> dict[str, Any]:
    """Per configuration: CV and asv CI of every headline metric; per headline comparison:
    resolved at 99% now, asv's verdict, and the repeats needed (see `repeats_needed`).

    When a configuration appears in several records (several runs), the last one is used.
    """
    from .stats import summarize

    latest: dict[tuple, dict] = {}
    for rec in read_records(path):
        if rec.get("status") == "ok" and rec.get("samples"):
            latest[config_key(rec)] = rec
    configs = []
    for key, rec in sorted(latest.items()):
        metrics = [m for m in rec["samples"] if m in HEADLINE_METRICS or re.fullmatch(vocab.mem_re(r"rank[^.]*", "uss"), m)]
        configs.append({"engine": key[0], "method": key[1], "parent_state": key[2], "tp": key[4],
                        "stats": {m: summarize(rec["samples"][m]) for m in sorted(metrics)}})
    comparisons = []
    for key, rec in latest.items():
        engine, method, state, check, tp, extra = key
        for (ma, sa), (mb, sb) in HEADLINE_PAIRS:
            if (method, state) != (ma, sa):
                continue
            other = latest.get((engine, mb, sb, check, tp, extra))
            if other is None:
                continue
            for metric in HEADLINE_METRICS:
                a, b = rec["samples"].get(metric), other["samples"].get(metric)
                if not a or not b:
                    continue
                comparisons.append({
                    "engine": engine, "tp": tp, "metric": metric, "a": f"{ma}/{sa}", "b": f"{mb}/{sb}",
                    "median_a": _ci(a)[0], "median_b": _ci(b)[0], "ratio_b_over_a": _ci(b)[0] / _ci(a)[0],
                    "n": [len(a), len(b)], "resolved_99": resolved(a, b), "asv_is_different": asv_is_different(a, b),
                    "repeats_needed": repeats_needed(a, b, power=power), "power": power})
    return {"records": str(path), "configs": configs, "comparisons": comparisons}


# --- command line ----------------------------------------------------------------------------

def _fmt_ms(st: dict[str, Any]) -> str:
    lo = "?" if st["ci_low"] is None else f"{st['ci_low'] * 1e3:.2f}"
    hi = "?" if st["ci_high"] is None else f"{st['ci_high'] * 1e3:.2f}"
    return f"{st['median'] * 1e3:8.2f} ms [{lo}, {hi}]"


def _cv(st: dict[str, Any]) -> str:
    return "   -" if st["cv"] is None else f"{st['cv'] * 100:5.1f}%"


def _table(command: str, result: Any) -> str:
    lines = []
    if command == "overhead":
        lines.append("method              harness ttr (99% CI)          bare, same parent (99% CI)    "
                     "overhead (99% CI)            rel     goal")
        for r in result["methods"]:
            lines.append(f"{r['method']:<19} {_fmt_ms(r['harness_s']):<29} {_fmt_ms(r['bare_s']):<29} "
                         f"{_fmt_ms(r['overhead_s']):<28} {r['overhead_rel'] * 100:5.1f}%  "
                         f"{r['goal']} (<= {r['limit_s'] * 1e3:.2f} ms), n={r['n']}")
        lines.append("bare in a minimal parent, and what the harness-sized parent adds to it (same-size minus minimal):")
        for r in result["methods"]:
            lines.append(f"{r['method']:<19} {_fmt_ms(r['minimal_s']):<29} {_fmt_ms(r['parent_size_s'])}")
        t = result["import_tax"]
        lines.append(f"harness imports in a real spawned rank before its first stamp: {_fmt_ms(t['seconds'])} gross, "
                     f"{_fmt_ms(t['net_seconds'])} net of what the rank imports anyway, n={t['seconds']['n']}")
    elif command == "probes":
        p = result["probe"]
        lines.append(f"memory.probe over {p['processes']} processes: {_fmt_ms(p['probe_s'])} per call, CV {_cv(p['probe_s'])}, "
                     f"n={p['n']} (first call {p['first_probe_s'] * 1e3:.2f} ms; rank mappings {p['rank_mappings']})")
        lines.append(f"RSS change across the probes: ranks {[round(x, 3) for x in p['rank_rss_delta_mib']]} MiB, "
                     f"probing parent {p['parent_rss_delta_mib']:+.3f} MiB")
        if "sampler" in result:
            s = result["sampler"]
            lines.append(f"start-up with a {s['interval_s'] * 1e3:.0f} ms sampler: {_fmt_ms(s['sampled_s'])} vs "
                         f"{_fmt_ms(s['plain_s'])} without; paired delta {_fmt_ms(s['delta_s'])}, n={s['n']}, "
                         f"probes per start {s['probes_per_start']}")
    elif command == "validity":
        lines.append("pid       kind     probe(psutil)  smaps_rollup  probe-rollup  smaps-rollup  drift   (MiB)")
        for row in result["memory"]["readers"]:
            for kind in ("rss_mib", "pss_mib", "uss_mib"):
                v = row[kind]
                lines.append(f"{row['pid']:<9} {kind[:3]:<8} {v['probe']:13.3f} {v['rollup']:13.3f} "
                             f"{v['probe_minus_rollup']:+13.3f} {v['smaps_minus_rollup']:+13.3f} {v['drift']:+7.3f}")
        g = result["gpu"]
        lines.append(f"GPU: {g['processes'] or 'no compute processes'}; NVML: {g['nvml_note'] or 'ok'}; "
                     f"nvidia-smi: {g['nvidia_smi_note'] or 'ok'}")
        i = result["imports"]
        lines.append(f"-X importtime 'import torch': {_fmt_ms(i['importtime_torch_s'])}; "
                     f"rank's imports_done set ({PHASE_IMPORTS}): {_fmt_ms(i['importtime_phase_set_s'])}")
        for k, v in i.items():
            if k.startswith("phase_"):
                lines.append(f"records {k}: {_fmt_ms(v)}, n={v['n']}")
    elif command == "pagecache":
        for k in ("checkpoint", "torch_libraries"):
            s = result[k]
            lines.append(f"{k}: {s['files']} files, {s['bytes'] / MIB:.1f} MiB, {s['resident_fraction'] * 100:.1f}% resident "
                         f"-> {'warm' if s['warm'] else 'cold'}")
        if "cold_vs_warm" in result:
            c = result["cold_vs_warm"]
            lines.append(f"time to ready, {c['method']} bare, {c['dropped']} evicted: cold {_fmt_ms(c['cold_s'])} vs warm "
                         f"{_fmt_ms(c['warm_s'])}, n={c['cold_s']['n']}; resident before: {c['resident_before']}")
    elif command == "precision":
        lines.append("configuration                          metric                CV      median  (99% CI)                 n")
        for c in result["configs"]:
            name = f"{c['engine']} {c['method']}/{c['parent_state']} tp={c['tp']}"
            for m, st in c["stats"].items():
                if st["median"] is None:
                    continue
                ci = "[" + ", ".join("?" if x is None else f"{x:.4g}" for x in (st["ci_low"], st["ci_high"])) + "]"
                lines.append(f"{name:<38} {m:<20} {_cv(st)} {st['median']:10.4g} {ci:<24} {st['n']}")
        lines.append("")
        lines.append("comparison                        metric              ratio   resolved@99%  asv differs  repeats needed")
        for c in result["comparisons"]:
            need = c["repeats_needed"] if c["repeats_needed"] is not None else ("n<5" if min(c["n"]) < 5 else ">30")
            lines.append(f"tp={c['tp']} {c['a']:>12} vs {c['b']:<12}   {c['metric']:<18} {c['ratio_b_over_a']:7.3f}  "
                         f"{str(c['resolved_99']):<13} {str(c['asv_is_different']):<12} {need} (n now {c['n']}, power {c['power']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m forkspawn.quality", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("overhead", "probes", "validity", "pagecache", "precision"))
    parser.add_argument("records", nargs="?", help="records JSON Lines file (precision; validity: phases to compare)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--model", default="tiny", help="pagecache: the checkpoint preset or directory")
    parser.add_argument("--sampler", action="store_true", help="probes: also time start-up under a 10 ms sampler")
    parser.add_argument("--cold", action="store_true", help="pagecache: also time cold vs warm starts")
    parser.add_argument("--drop-torch", action="store_true", help="pagecache --cold: evict torch's libraries too")
    parser.add_argument("--warm", action="store_true", help="pagecache: first read the checkpoint and torch's libraries")
    parser.add_argument("--hold-gpu", type=int, nargs="+", metavar="MIB",
                        help="validity: first start processes holding this much CUDA memory each")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    try:
        result: dict[str, Any]
        if args.command == "overhead":
            result = {"methods": [overhead(m, args.repeat) for m in args.methods], "import_tax": import_tax(min(args.repeat, 5))}
        elif args.command == "probes":
            result = probes(args.repeat)
            if args.sampler:
                result["sampler"] = sampler_perturbation(max(3, args.repeat // 4))
        elif args.command == "validity":
            gpu = gpu_validity_with_holders(args.hold_gpu)["rounds"][-1] if args.hold_gpu else gpu_validity()
            result = {"memory": probes(3), "gpu": gpu,
                      "imports": import_validity(min(args.repeat, 5), args.records)}
        elif args.command == "pagecache":
            from .checkpoint import default_cache_dir, resolve_checkpoint

            state = warm_page_cache if args.warm else page_cache_state
            result = {"checkpoint": state(files_of(resolve_checkpoint(args.model, default_cache_dir()))),
                      "torch_libraries": state(torch_library_files())}
            if args.cold:
                result["cold_vs_warm"] = cold_vs_warm(args.model, repeat=args.repeat, drop_torch=args.drop_torch)
        else:
            if not args.records:
                parser.error("precision needs a records JSON Lines file")
            result = precision(args.records)
    except SchemaError as e:  # a records file of another harness version: one line, exit 2
        print(f"python -m forkspawn.quality: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1) if args.json else _table(args.command, result))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_call"]:  # see _fresh
        print(json.dumps(globals()[sys.argv[2]](**json.loads(sys.argv[3]))))
        sys.exit(0)
    sys.exit(main())
