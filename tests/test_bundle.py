"""The offline engine bundle (forkspawn/tools/bundle.py) end to end on stand-in wheels: the real
`build` against a local --find-links with --no-index (no registry), split into several parts,
then `install` into a fresh venv that lends this environment's packages (torch) through a .pth."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest
from conftest import fake_nvidia_smi

from forkspawn import bundled
from forkspawn.tools import bundle

TORCH = bundle.strip_local(importlib.metadata.version("torch"))
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
FA2 = "fakeengine/_fa2_C.so"
REPO = Path(__file__).resolve().parents[1]
# pip sees no machine- or user-wide configuration (extra indexes, find-links, constraints).
PIP_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forkspawn.tools.bundle", *args], capture_output=True,
                          text=True, env=PIP_ENV | (env or {}), timeout=300)


def one_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, (out.returncode, out.stderr)
    return lines[0]


@pytest.fixture(scope="module")
def links(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in wheels: an engine pinning this torch, its dependency (incompressible, so that the
    bundle needs several parts), a package the box has, and a left-out kernel package with a
    dependency of its own."""
    d = tmp_path_factory.mktemp("links")
    payload = os.urandom(300_000)
    bundle.stub_wheel(d, "fakeengine", "1.0", [f"torch=={TORCH}", "fakedep>=1", "boxpkg<2", "click<100",
                                                "flashinfer-python", "fakeopt; extra == 'opt'"],
                      {"fakeengine/__init__.py": b"VERSION = '1.0'\n", FA2: os.urandom(50_000)})
    bundle.stub_wheel(d, "fakeengine", "2.0", ["torch==0.0.1"], {"fakeengine/__init__.py": b""})
    bundle.stub_wheel(d, "fakedep", "1.0", [], {"fakedep/__init__.py": b"", "fakedep/blob.bin": payload,
                                                 "fakedep/template.py": b"{% if x %}\n"})
    bundle.stub_wheel(d, "boxpkg", "1.0", [], {"boxpkg/__init__.py": b""})
    bundle.stub_wheel(d, "click", "99.0", [], {"click_stub/__init__.py": b""})
    bundle.stub_wheel(d, "flashinfer-python", "0.1", ["cudaonly"], {"flashinfer/__init__.py": b""})
    bundle.stub_wheel(d, "cudaonly", "0.1", [], {"cudaonly/__init__.py": b""})
    bundle.stub_wheel(d, "fakeopt", "0.1", [], {"fakeopt/__init__.py": b""})
    bundle.stub_wheel(d, "asv_runner", "0.3.2", [], {"asv_runner/__init__.py": b""})  # the harness's own (bundle.HARNESS)
    return d


def build(links: Path, out: Path, engine: str = "fakeengine==1.0", torch: str = TORCH) -> subprocess.CompletedProcess:
    box = out.parent / f"box-{torch}.txt"
    box.write_text(f"# stand-in box\ntorch=={torch}\nboxpkg\nclick\n")
    return run("build", "--out", str(out), "--box", str(box), "--engine", engine,
               "--python-version", PY, "--platform", "manylinux_2_17_x86_64", "--part-mb", "0.1",
               "--find-links", str(links), "--no-index", "--trim", f"{FA2}=FA2 stand-in")


@pytest.fixture(scope="module")
def built(links: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("b") / "bundle"
    r = build(links, out)
    assert r.returncode == 0, r.stderr
    return out


def make_venv(where: Path) -> Path:
    """A fresh venv lending this environment's packages (torch, pip) through a .pth."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    py = where / "bin" / "python"
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "lend.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return where


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_manifest(built: Path):
    m = json.loads((built / "manifest.json").read_text())
    assert m["schema"] == bundle.SCHEMA and m["torch"] == f"torch=={TORCH}"
    # what the harness imports beside the engine travels with it, asked for or not (bundle.HARNESS)
    assert {f["project"] for f in m["files"]} == {"fakeengine", "fakedep", "click", "asv_runner"}
    assert [c["what"] for c in m["box_carried"]] == ["click"]  # the box's, carried anyway (CARRY)
    assert m["box_unverified"] == [{"what": "boxpkg", "required": "boxpkg<2 by fakeengine", "resolved": "1.0"}]
    assert len(m["parts"]) >= 3
    assert sorted(p.name for p in built.iterdir()) == sorted(["manifest.json", *(p["name"] for p in m["parts"])])
    for p in m["parts"]:
        assert sha(built / p["name"]) == p["sha256"] and (built / p["name"]).stat().st_size == p["size"]
    data = b"".join((built / p["name"]).read_bytes() for p in m["parts"])
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(data))) as tar:
        inner = json.load(tar.extractfile("manifest.json"))
        for f in m["files"]:
            blob = tar.extractfile(f"wheels/{f['name']}").read()
            assert hashlib.sha256(blob).hexdigest() == f["sha256"] and len(blob) == f["size"]
    assert inner == {k: v for k, v in m.items() if k != "parts"}
    why = {e["what"].split("==")[0].split(":")[0]: e["why"] for e in m["left_out"]}
    assert "the box has it" in why["boxpkg"] and "torch" in why
    assert why["flashinfer-python"] == bundle.LEFT_OUT["flashinfer-python"]
    assert why["cudaonly"] == "needed only by packages left out: flashinfer-python"
    assert "fakeopt" not in why  # an extra nobody asked for is not resolved at all
    assert any(FA2 in e["what"] and e["why"] == "FA2 stand-in" for e in m["left_out"])
    assert {"name": "VLLM_USE_FLASHINFER_SAMPLER", "value": "0"}.items() <= m["env"][0].items()


def test_install(built: Path, tmp_path: Path):
    venv = make_venv(tmp_path / "venv")
    r = run("install", "--bundle", str(built), "--venv", str(venv), env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 0, r.stderr
    py = str(venv / "bin" / "python")
    code = ("import fakeengine, fakedep, os, json; from forkspawn.bundled import installed; "
            "d = os.path.dirname(fakeengine.__file__); print(json.dumps([sorted(os.listdir(d)), installed()]))")
    files, info = json.loads(subprocess.run([py, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert "_fa2_C.so" not in files and "__init__.py" in files
    assert info == json.loads((venv / "forkspawn-bundle.json").read_text())
    # Bytecode although the box sets PYTHONDONTWRITEBYTECODE=1 (as the GPU boxes do): fakeengine's
    # and fakedep's __init__.py and click's stub compile, fakedep's template does not.
    assert "__pycache__" in files and info["bytecode"]["sources"] == 4 and info["bytecode"]["compiled"] == 3
    assert "compiled the bytecode of 3 of 4 installed .py files" in r.stderr
    assert info["torch"] == f"torch=={TORCH}" and info["versions"]["fakeengine"] == "1.0"
    assert any(FA2 in e["what"] for e in info["left_out"]) and info["env"]
    assert bundled.installed() is None or sys.prefix != str(venv)  # this interpreter has none
    # What the harness takes from it: every record's versions, and each fresh parent's env.
    code = "import json, forkspawn.bundled as b; print(json.dumps([b.record_versions(), b.runtime_env()]))"
    env = {k: v for k, v in os.environ.items() if k != "VLLM_USE_FLASHINFER_SAMPLER"} | {"VLLM_USE_RUST_FRONTEND": "1"}
    versions, (run_env, notes) = json.loads(subprocess.run([py, "-c", code], capture_output=True, text=True,
                                                           check=True, env=env).stdout)
    assert "fakeengine 1.0" in versions["bundle"] and FA2 in versions["bundle_left_out"]
    assert "boxpkg" not in versions["bundle_left_out"]  # the box's own are not listed
    assert run_env["VLLM_USE_FLASHINFER_SAMPLER"] == "0" and "VLLM_USE_RUST_FRONTEND" not in run_env
    assert any("kept '1'" in n for n in notes)


def test_verify(built: Path):
    r = run("verify", "--bundle", str(built))
    assert r.returncode == 0, r.stderr


def test_split_cuts_the_parts_again_and_they_still_verify(built: Path, tmp_path: Path):
    copy = tmp_path / "bundle"
    shutil.copytree(built, copy)
    before = json.loads((copy / "manifest.json").read_text())
    r = run("split", "--bundle", str(copy), "--part-mb", "0.05")
    assert r.returncode == 0, r.stderr
    after = json.loads((copy / "manifest.json").read_text())
    assert len(after["parts"]) > len(before["parts"])
    assert max(p["size"] for p in after["parts"]) <= int(0.05 * bundle.MIB)
    assert {k: v for k, v in after.items() if k != "parts"} == {k: v for k, v in before.items() if k != "parts"}
    assert sorted(p.name for p in copy.iterdir()) == sorted(["manifest.json", *(p["name"] for p in after["parts"])])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # nothing left beside it
    assert run("verify", "--bundle", str(copy)).returncode == 0


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_bad_part(built: Path, tmp_path: Path, damage: str):
    copy = tmp_path / "bundle"
    shutil.copytree(built, copy)
    part = copy / json.loads((copy / "manifest.json").read_text())["parts"][1]["name"]
    if damage == "corrupt":
        data = bytearray(part.read_bytes())
        data[len(data) // 2] ^= 0xFF
        part.write_bytes(data)
    else:
        part.unlink()
    venv = make_venv(tmp_path / "venv")
    line = one_line(run("install", "--bundle", str(copy), "--venv", str(venv)))
    assert part.name in line and damage in line
    assert not (venv / "forkspawn-bundle.json").exists()
    assert one_line(run("verify", "--bundle", str(copy))) == line.replace("install:", "verify:")


def test_other_torch(links: Path, tmp_path: Path):
    out = tmp_path / "bundle"
    r = build(links, out, engine="fakeengine==2.0", torch="0.0.1")
    assert r.returncode == 0, r.stderr
    venv = make_venv(tmp_path / "venv")
    line = one_line(run("install", "--bundle", str(out), "--venv", str(venv)))
    assert "torch==0.0.1" in line and importlib.metadata.version("torch") in line


def test_failed_build_leaves_nothing(links: Path, built: Path, tmp_path: Path):
    out = tmp_path / "bundle"
    shutil.copytree(built, out)
    before = {p.name: sha(p) for p in out.iterdir()}
    r = build(links, out, engine="nosuchengine==1.0")
    errors = [line for line in r.stderr.splitlines() if not line.startswith("bundle: ")]  # progress lines
    assert r.returncode == 2 and len(errors) == 1 and "nosuchengine" in errors[0], r.stderr
    assert {p.name: sha(p) for p in out.iterdir()} == before  # the old bundle is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box-" + TORCH + ".txt", "bundle"]
    assert build(links, tmp_path / "new", engine="nosuchengine==1.0").returncode == 2
    assert not (tmp_path / "new").exists()


def test_trim_rules_match_vllm():
    """The real rules, on vLLM 0.26.0's paths, for a Python 3.12 box."""
    r = lambda p: bundle.trim_reason(p, "312", bundle.TRIM)  # noqa: E731
    assert r("vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so") and r("vllm/vllm-rs")
    assert r("vllm/third_party/fmha_sm100/csrc/fmha_sm100_plan.cu")
    assert r("vllm/third_party/deep_gemm/_C.cpython-311-x86_64-linux-gnu.so")
    assert not r("vllm/third_party/deep_gemm/_C.cpython-312-x86_64-linux-gnu.so")
    assert not r("vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so") and not r("vllm/vllm_flash_attn/flash_attn_interface.py")
    assert bundle.platforms("manylinux_2_28_x86_64")[:2] == ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64"]
    assert "manylinux2014_x86_64" in bundle.platforms("manylinux_2_28_x86_64")


def test_make_offline_env(built: Path, tmp_path: Path):
    """`make offline-env OFFLINE=1`: a venv lending PYTHON's packages, the bundle installed,
    this project installed editable, all without a registry."""
    repo = Path(__file__).resolve().parents[1]
    venv = tmp_path / "venv"
    r = subprocess.run(["make", "-s", "-C", str(repo), "offline-env", "OFFLINE=1", f"VENV={venv}",
                        f"BUNDLE_DIR={built}", f"PYTHON={sys.executable}"],
                       capture_output=True, text=True, env=PIP_ENV, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    code = "import fakeengine, forkspawn.bundled as b; print(b.installed()['versions']['fakeengine'])"
    out = subprocess.run([venv / "bin" / "python", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "1.0", out.stderr
    assert (venv / "bin" / ".done").exists()


def test_measurements_read_the_bundle_without_importing_the_build_tool() -> None:
    """measure and machine read an installed bundle through forkspawn.bundled; the build and
    install tool (forkspawn.tools.bundle: pip, zip, xz) is no part of a measurement."""
    code = "import sys, forkspawn.measure, forkspawn.machine; print('forkspawn.tools.bundle' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_a_bundle_of_todays_manifest_still_installs(built: Path, tmp_path: Path):
    """A bundle made before the box descriptions (no torch_carried, no engine_choice) installs."""
    copy = tmp_path / "bundle"
    shutil.copytree(built, copy)
    m = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({k: v for k, v in m.items() if k not in ("torch_carried", "engine_choice")}))
    venv = make_venv(tmp_path / "venv")
    r = run("install", "--bundle", str(copy), "--venv", str(venv))
    assert r.returncode == 0, r.stderr
    assert json.loads((venv / "forkspawn-bundle.json").read_text())["torch_carried"] is False


def test_describe_reads_the_box_without_importing_torch(tmp_path: Path):
    """`describe` on a box: this Python, its glibc's manylinux tag, torch and its CUDA read from
    torch/version.py (a stand-in CUDA build first on the path), the driver from nvidia-smi."""
    site = tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text("raise SystemExit('torch was imported')\n")
    (site / "torch" / "version.py").write_text("from typing import Optional\n__version__ = '2.11.0+cu130'\n"
                                               "cuda: Optional[str] = '13.0'\nhip: Optional[str] = None\n")
    (site / "torch-2.11.0+cu130.dist-info").mkdir()
    (site / "torch-2.11.0+cu130.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.11.0+cu130\n")
    out = tmp_path / "box.json"
    r = run("describe", "-o", str(out), env={"PYTHONPATH": str(site),
                                             "PATH": f"{fake_nvidia_smi(tmp_path / 'bin', 'NVIDIA H200, 580.159.03, 143771')}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    box = json.loads(out.read_text())
    libc = os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")
    assert box["schema"] == bundle.BOX_SCHEMA and box["python"] == ".".join(map(str, sys.version_info[:3]))
    assert box["platform"] == f"manylinux_{libc[0]}_{libc[1]}_x86_64"
    assert (box["torch"], box["torch_cuda"], box["driver"]) == ("2.11.0+cu130", "13.0", "580.159.03")
    assert box["packages"]["torch"] == "2.11.0+cu130" and box["packages"]["pytest"] == importlib.metadata.version("pytest")
    assert "forkspawn-bench" not in box["packages"]
    assert bundle.read_box(out)["packages"]["torch"] == "2.11.0+cu130"


def box_json(path: Path, packages: dict, **kw) -> Path:
    path.write_text(json.dumps({"schema": bundle.BOX_SCHEMA, "python": PY, "platform": "manylinux_2_17_x86_64",
                                "packages": packages, **kw}))
    return path


def test_build_for_a_described_box_carries_what_conflicts_with_its_versions(links: Path, tmp_path: Path):
    """Python and platform come from the description; the box's boxpkg 2.5 does not fit
    fakeengine's boxpkg<2, so the bundle carries boxpkg 1.0 (the venv's copy shadows the box's)."""
    box = box_json(tmp_path / "box.json", {"torch": TORCH + "+cpu", "boxpkg": "2.5", "click": None})
    out = tmp_path / "bundle"
    r = run("build", "--out", str(out), "--box", str(box), "--engine", "fakeengine==1.0", "--part-mb", "0.1",
            "--find-links", str(links), "--no-index")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["python"] == PY and m["platform"][0] == "manylinux_2_17_x86_64" and m["torch_carried"] is False
    assert {f["project"] for f in m["files"]} == {"fakeengine", "fakedep", "click", "boxpkg", "asv_runner"}
    assert [c["what"] for c in m["box_carried"]] == ["click", "boxpkg"]
    assert m["box_carried"][1]["why"].startswith("the box's boxpkg 2.5 conflicts (fakeengine 1.0 depends on boxpkg<2")


@pytest.fixture(scope="module")
def torch_links(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An engine pinning torch 2.11.0 and a stand-in of that torch, with a CUDA library of its own."""
    d = tmp_path_factory.mktemp("torchlinks")
    bundle.stub_wheel(d, "fakeengine", "3.0", ["torch==2.11.0"], {"fakeengine/__init__.py": b""})
    bundle.stub_wheel(d, "torch", "2.11.0", ["nvidia-fakelib==13.0"], {"torch/__init__.py": b"__version__ = '2.11.0'\n"})
    bundle.stub_wheel(d, "nvidia-fakelib", "13.0", [], {"nvidia_fakelib/__init__.py": b""})
    bundle.stub_wheel(d, "asv_runner", "0.3.2", [], {"asv_runner/__init__.py": b""})
    return d


def test_build_carries_the_pinned_torch_when_the_box_has_another(torch_links: Path, tmp_path: Path):
    """No release pins the box's torch 2.12.1: the engine's torch 2.11.0 travels, with its CUDA
    library (the box's own nvidia-* set aside), after the box's driver is checked against CUDA 13.0;
    `install` then takes it into the venv instead of asking the box's torch to be 2.11.0."""
    box = box_json(tmp_path / "box.json", {"torch": "2.12.1+cu130", "nvidia-fakelib": "12.0"}, driver="580.159.04")
    out = tmp_path / "bundle"
    r = run("build", "--out", str(out), "--box", str(box), "--engine", "fakeengine==3.0", "--part-mb", "0.1",
            "--find-links", str(torch_links), "--no-index")
    assert r.returncode == 0, r.stderr
    assert "bundle: the box's torch 2.12.1+cu130 is not the torch==2.11.0 that fakeengine==3.0 pins: the bundle " \
           "carries torch 2.11.0 and its CUDA libraries (GBs); driver 580.159.04 >= 580.65.06 for CUDA 13.0 of torch 2.11.0" in r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["torch_carried"] is True and m["torch"] == "torch==2.11.0"
    assert {f["project"] for f in m["files"]} == {"fakeengine", "torch", "nvidia-fakelib", "asv_runner"}
    venv = make_venv(tmp_path / "venv")  # lends this environment's torch, not 2.11.0
    r = run("install", "--bundle", str(out), "--venv", str(venv))
    assert r.returncode == 0, r.stderr
    assert bundle.venv_torch(str(venv / "bin" / "python")) == "2.11.0"

    old = box_json(tmp_path / "old.json", {"torch": "2.12.1+cu130"}, driver="570.124.06")
    line = one_line(run("build", "--out", str(tmp_path / "refused"), "--box", str(old), "--engine", "fakeengine==3.0",
                        "--find-links", str(torch_links), "--no-index"))
    assert line == ("forkspawn.tools.bundle build: NVIDIA driver 570.124.06 is older than 580.65.06, which CUDA 13.0 "
                    "of torch 2.11.0 needs (the box's driver, in its description)")
    assert not (tmp_path / "refused").exists()


def test_a_box_description_chooses_the_vllm_and_checks_its_python(tmp_path: Path):
    """No --engine: the vLLM that pins the box's torch; a box Python outside it is refused."""
    box = {"python": "3.12.3", "platform": "manylinux_2_31_x86_64", "packages": {"torch": "2.11.0+cu130"}}
    assert bundle.plan(box, tmp_path, None, None, None)[:3] == ("3.12", "manylinux_2_31_x86_64", "vllm==0.26.0")
    box["packages"]["torch"] = "2.13.0"
    assert bundle.plan(box, tmp_path, None, None, None)[2] == "vllm==0.32.0"
    with pytest.raises(bundle.BundleError, match=r"Python 3.10 is outside vllm==0.32.0's >=3.11,<3.15"):
        bundle.plan({**box, "python": "3.10.4"}, tmp_path, None, None, None)
    with pytest.raises(bundle.BundleError, match=r"does not say the box's python-version .*PY_TARGET"):
        bundle.plan({"packages": {}}, tmp_path, None, None, None)
    committed = bundle.read_box(REPO / "mk" / "box-cuda.json")
    assert bundle.plan(committed, tmp_path, None, None, None)[:3] == ("3.12", "manylinux_2_31_x86_64", "vllm==0.26.0")


def test_a_default_part_and_the_working_tree_fit_one_device_call() -> None:
    """A lent GPU box is reached one call at a time, each carrying at most 64 MiB: the tracked tree
    (nearly all of it the committed reports) plus one part of `make bundle` and its manifest
    (about 40 KiB). A report that grows the tree past that needs smaller parts (PART_MB)."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: which files travel is git's tracked set")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    tree = sum((REPO / f).stat().st_size for f in files.decode().split("\0") if f and (REPO / f).is_file())
    part_mb = float(next(ln.split("?=")[1] for ln in (REPO / "mk" / "bundle.mk").read_text().splitlines()
                         if ln.startswith("PART_MB ?=")))
    assert tree + (part_mb + 1) * 2**20 <= 64 * 2**20, f"tree {tree / 2**20:.1f} MiB + part {part_mb} MiB"
