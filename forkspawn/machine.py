"""Describe the machine and the software without touching a GPU.

Nothing here imports torch or calls into CUDA: a device query would create (or poison) the
very CUDA state the parent-state axis controls. GPUs are read through NVML, which needs no
CUDA context, and torch's build is read from its installed files.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import socket
from pathlib import Path
from typing import Any

import psutil


def gpus() -> list[dict[str, Any]]:
    """Visible NVIDIA GPUs: NVML's, narrowed by CUDA_VISIBLE_DEVICES as CUDA narrows them."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            found.append(
                {
                    "index": i,
                    "name": _text(pynvml.nvmlDeviceGetName(h)),
                    "memory_mib": pynvml.nvmlDeviceGetMemoryInfo(h).total // (1024 * 1024),
                    "driver": driver,
                    "uuid": _text(pynvml.nvmlDeviceGetUUID(h)),
                }
            )
    finally:
        pynvml.nvmlShutdown()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return found if visible is None else cuda_visible(found, visible)


def cuda_visible(found: list[dict[str, Any]], spec: str) -> list[dict[str, Any]]:
    """CUDA's reading of CUDA_VISIBLE_DEVICES: the devices listed, in that order, up to the first
    entry that names none, so "" and "-1" hide every GPU (how the tests pin "no GPU" on a GPU box).
    A list of UUIDs (GPU-..., MIG-...) is left to CUDA: every GPU counts."""
    tokens = [t.strip() for t in spec.split(",")]
    if any(t.startswith(("GPU-", "MIG-")) for t in tokens):
        return found
    kept = []
    for t in tokens:
        if not t.isdigit() or int(t) >= len(found):
            break
        kept.append(found[int(t)])
    return kept


def gpu_used_mib() -> float | None:
    """Device memory in use on the visible GPUs, summed (NVML; None without one): taken before and
    after a configuration, it shows whether its processes gave every byte back."""
    visible = gpus()
    if not visible:
        return None
    import pynvml

    pynvml.nvmlInit()
    try:
        return sum(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(g["index"])).used
                   for g in visible) / 2**20
    finally:
        pynvml.nvmlShutdown()


def host_id() -> dict[str, Any]:
    """Which machine a cold start ran on, beyond its model names: the kernel's boot id (a lent
    machine is booted per lease, so it tells leases apart), the host name and the visible GPUs'
    UUIDs (which physical cards). Decode levels differ between hosts and leases of one GPU model:
    the analysis blocks by these."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = None
    return {"boot_id": boot, "hostname": socket.gethostname(), "gpu_uuids": [g["uuid"] for g in gpus()]}


def torch_has_cuda() -> bool:
    """Whether the installed torch is a CUDA build, judged from its files (no import)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    lib = Path(list(spec.submodule_search_locations)[0]) / "lib"
    return any(lib.glob("libtorch_cuda*.so*"))


def default_device() -> str:
    return "cuda" if gpus() and torch_has_cuda() else "cpu"


def describe() -> dict[str, Any]:
    g = gpus()
    return {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": g[0]["name"] if g else None,
        "gpu_count": len(g),
        "gpu_memory_mib": g[0]["memory_mib"] if g else None,
        "gpu_driver": g[0]["driver"] if g else None,
    }


def versions(*extra: str) -> dict[str, str | None]:
    names = ("python", "forkspawn-bench", "torch", "psutil", "nvidia-ml-py", "asv_runner", "ray") + extra
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names[1:]:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    from .bundled import record_versions

    return {**out, **record_versions()}


def asv_machine_name(desc: dict[str, Any] | None = None) -> str:
    """Host name, GPU count x model and CPU count (`vm-1xNVIDIA-H200-16cpu`), so results of
    different boxes never share a folder, also where hosts of 1 and 2 GPUs share a host name."""
    d = desc or describe()
    gpu = f"{d['gpu_count']}x" + re.sub(r"[^A-Za-z0-9]+", "-", d["gpu"]).strip("-") if d["gpu"] else "cpu"
    return f"{d['hostname']}-{gpu}-{d['cpus']}cpu"


def write_asv_machine(path: Path | None = None) -> str:
    """Register this machine with asv, GPU model and driver included, and return its name.

    asv copies every key of the machine entry into each result file's `params`, which is how
    the GPU reaches the analysis tables.
    """
    from .atomic import write_json_atomic

    d = describe()
    name = asv_machine_name(d)
    path = path or Path.home() / ".asv-machine.json"
    machines = json.loads(path.read_text()) if path.exists() else {"version": 1}
    machines[name] = {
        "machine": name,
        "os": d["os"],
        "arch": d["arch"],
        "cpu": d["cpu"],
        "num_cpu": str(d["cpus"]),
        "ram": f"{d['ram_gib']} GiB",
        "gpu": d["gpu"] or "none",
        "gpu_count": str(d["gpu_count"]),
        "gpu_driver": d["gpu_driver"] or "none",
    }
    write_json_atomic(path, machines)
    return name


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _text(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
