"""Memory probes: host memory from /proc, GPU memory from NVML, for a list of processes.

- RSS counts every resident page, including copy-on-write pages still shared after fork, so
  summing RSS over a forked group counts those pages once per process.
- USS is memory only this process holds (freed when it exits); PSS splits each shared page
  evenly among its sharers, so PSS sums to the group's real footprint. Both come from
  /proc/PID/smaps_rollup through psutil's `memory_full_info`.
- Peak RSS is the kernel's own high-water mark (VmHWM in /proc/PID/status) since the process
  was created: exact, and free of the perturbation a sampling thread would add.
- GPU memory per process comes from NVML, matched by PID. It includes the CUDA context. NVML
  cannot attribute memory across PID namespaces (containers): then the value is null with a note.
- Host memory is read at ready, and again later (`probe_host`: after decoding, and after the
  parent's gc.collect()): a forked child shares pages with its parent until either writes them,
  so its PSS at ready is the low end of what it holds once it works.
"""

from __future__ import annotations

from pathlib import Path

import psutil

from .record import ProcessMemory
from .vocabulary import HOST_KINDS, LATER

MIB = 1024 * 1024


def probe(processes: list[ProcessMemory], on_gpu: bool) -> None:
    """Fill in the memory fields of `processes` in place, reading each process now."""
    gpu, gpu_note = gpu_memory_by_pid() if on_gpu else ({}, "CPU run: no GPU in use")
    for proc in processes:
        try:
            info = psutil.Process(proc.pid).memory_full_info()
            proc.rss_mib, proc.uss_mib, proc.pss_mib = info.rss / MIB, info.uss / MIB, info.pss / MIB
            proc.peak_rss_mib = peak_rss_mib(proc.pid)
        except psutil.Error:
            continue  # the process has gone: its fields stay null
        if proc.pid in gpu:
            proc.gpu_mib = gpu[proc.pid]
        elif gpu:  # NVML sees the group's other processes: this one holds no CUDA context
            proc.gpu_mib, proc.gpu_note = 0.0, "no CUDA context (NVML lists no memory for this PID)"
        else:
            proc.gpu_note = gpu_note


def probe_host(processes: list[ProcessMemory], when: str) -> None:
    """Read host memory (RSS, USS, PSS) of `processes` again, into their `<kind>_<when>_mib`
    fields (`when`: one of vocabulary.LATER); a process that has gone keeps them null."""
    if when not in LATER:
        raise ValueError(f"unknown memory probe {when!r}; valid: {', '.join(LATER)}")
    for proc in processes:
        try:
            info = psutil.Process(proc.pid).memory_full_info()
        except psutil.Error:
            continue
        for kind in HOST_KINDS:
            name = kind.removesuffix("_mib")
            setattr(proc, f"{name}_{when}_mib", getattr(info, name) / MIB)


def peak_rss_mib(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return None


def gpu_memory_by_pid() -> tuple[dict[int, float], str | None]:
    """GPU MiB used per PID over all visible GPUs, and a note when NVML cannot tell."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no driver, or no NVML library
        return {}, f"NVML unavailable: {exc}"
    try:
        used: dict[int, float] = {}
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if p.usedGpuMemory is None:
                    return {}, "NVML does not report per-process memory here (restricted or virtualised GPU)"
                used[p.pid] = used.get(p.pid, 0.0) + p.usedGpuMemory / MIB
        if not used:
            return {}, "NVML lists no compute process (none holds a CUDA context, or PIDs are in another namespace)"
        return used, None
    finally:
        pynvml.nvmlShutdown()
