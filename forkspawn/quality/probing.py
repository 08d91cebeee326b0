"""Probe validity: what a memory probe costs and perturbs, and whether it reads what independent
readers (smaps_rollup, smaps, nvidia-smi) read."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ..clock import now
from ..trivial import group as _group

MIB = 1024 * 1024


def _statm_rss_mib(pid: int) -> float:
    """RSS from /proc/PID/statm: one small read that allocates nothing in the process it reads."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


def probe_cost(pids: list[int], repeat: int = 20) -> dict[str, Any]:
    """Seconds one `memory.probe` call takes over this process and `pids`, and what probing does
    to RSS: of the processes read (should be nothing) and of this process, which reads (the
    parent is itself probed, so growth there would show up in its own figure)."""
    from .. import memory
    from ..record import ProcessMemory
    from ..stats import summarize

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
    """`func(**kwargs)` of this module in a fresh interpreter (`python -m forkspawn.quality _call`,
    which calls `call_here`), as `measure` runs each start in a fresh parent: the parent then is
    what a real parent is, and what starting workers leaves in a process (multiprocessing's
    resource tracker, a forkserver) ends with it."""
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

    from .. import memory
    from ..record import ProcessMemory
    from ..stats import summarize

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
    from .. import memory
    from ..record import ProcessMemory

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
    from ..memory import gpu_memory_by_pid

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


# What `_fresh` may run in a fresh interpreter, by name.
_HERE = {"_probes_here": _probes_here, "_sampler_here": _sampler_here}


def call_here(func: str, kwargs: dict[str, Any]) -> Any:
    """Run one of `_fresh`'s functions in this interpreter: the fresh one `_fresh` started."""
    return _HERE[func](**kwargs)
