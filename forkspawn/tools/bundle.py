"""An offline engine bundle: vLLM, Xinference and asv as wheels for an air-gapped GPU box.

`build` (on a connected machine) resolves the engines for the box's Python and platform, leaves
out what the box already has (BOX) and what we deliberately do not carry (LEFT_OUT), downloads
the rest, trims the vLLM wheel (TRIM), and writes an xz-compressed tar split into parts small
enough for one device call, with `manifest.json` beside them. `install` (on the box) reassembles
the parts, checks every sha256 and the box's torch against the engine's pin, and installs the
wheels into a venv, then compiles their bytecode. `verify` checks a bundle without installing it.
`describe` (on the box) writes what a build needs to know of it. Stdlib and pip only: the box has
no registry, and this must run before anything else is installed there.

    python3 -m forkspawn.tools.bundle describe -o box.json            # on the box
    python -m forkspawn.tools.bundle build --out .bundle --box box.json
    python -m forkspawn.tools.bundle install --bundle .bundle --venv .venv

This is the tool; what a measurement reads of an installed bundle is forkspawn/bundled.py.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import importlib.metadata
import io
import json
import lzma
import os
import platform as platform_module  # `platform` is build()'s manylinux tag
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from ..atomic import write_text_atomic
from ..bundled import SUMMARY  # written into the target venv by `install`, read by bundled.installed
from . import engineset

SCHEMA = "forkspawn-bundle/1"
BOX_SCHEMA = "forkspawn-box/1"  # what `describe` writes and `build --box` reads
MANIFEST = "manifest.json"
# A device call carries 64 MiB: a part plus the working tree (about 21 MiB) and the lease's scripts.
PART_MB = 40.0
ARCHIVE = "bundle.tar.xz"  # parts are ARCHIVE.000, ARCHIVE.001, ...: `cat` joins them
MIB = 1 << 20

# Packages never carried, whatever asks for them. The box's torch (and its CUDA libraries) must
# be the one vLLM pins; the kernels are optional in vLLM 0.26 (it falls back to its own or to
# Triton ones) and most come with CUDA 12 libraries that do not fit the box's CUDA 13 torch.
LEFT_OUT: dict[str, str] = {
    "torch": "comes from the box (the bundle checks its version against the engine's pin)",
    "torchvision": "comes from the box, built for its torch",
    "torchaudio": "comes from the box, built for its torch",
    "triton": "comes from the box, built for its torch",
    "flashinfer-python": "optional attention/sampling kernels (JIT, hundreds of MB with its "
                         "cubins); vLLM falls back to FlashAttention 3 and its own sampler "
                         "(VLLM_USE_FLASHINFER_SAMPLER=0)",
    "flashinfer-cubin": "prebuilt cubins of flashinfer, which is not carried",
    "flashinfer-jit-cache": "prebuilt kernels of flashinfer, which is not carried",
    "tilelang": "optional kernel DSL (a few sparse-attention/MoE paths), imported lazily",
    "nvidia-cutlass-dsl": "CuTe DSL kernels (optional, imported lazily), with CUDA 12 libraries",
    "quack-kernels": "optional CuTe DSL kernels, imported lazily",
    "humming-kernels": "optional quantized-GEMM kernels, imported lazily",
    "tokenspeed-mla": "optional MLA attention kernels (DeepSeek-style models), imported lazily",
    "nvidia-cudnn-frontend": "cuDNN's Python frontend, used only by flashinfer/cutlass paths",
    "fastsafetensors": "optional loader (load_format=fastsafetensors); the default loader is "
                       "safetensors",
    "torchcodec": "video decoding for multimodal inputs; built against one torch release, and "
                  "beside another it fails to load and breaks transformers' imports",
    "pynvvideocodec": "NVIDIA video decoding for multimodal inputs only",
    "uv": "17 MiB; Xinference uses it only to create per-model virtual envs, which install "
          "from a registry the box does not have (XINFERENCE_ENABLE_VIRTUAL_ENV=0)",
}
# The box's packages carried anyway (the venv's copy shadows the box's), and why.
CARRY: dict[str, str] = {
    "click": "xinference 4.1.0 requires click<8.2.0 (its CLI, xinference-local); the box's "
             "click version is not recorded",
}
# Name prefixes left out: CUDA libraries come with the box's torch; other builds of them (CUDA 12
# wheels pulled by the kernels above) would only shadow the box's.
LEFT_OUT_PREFIXES: dict[str, str] = {
    "nvidia-": "CUDA libraries come from the box, matching its torch build",
}
# What a torch build brings: carried together, the box's own left aside, when the bundle carries
# the engine's torch (no vLLM release of the table pins the box's torch).
TORCH_FAMILY = ("torch", "torchvision", "torchaudio", "triton")
TORCH_FAMILY_PREFIXES = ("nvidia-", "cuda-")


def torch_family(name: str) -> bool:
    return name in TORCH_FAMILY or name.startswith(TORCH_FAMILY_PREFIXES)

# Paths removed from the wheels carried (vLLM's). `{py}` is the target's Python, digits only (312).
# Each rule: (glob over the path inside the wheel, glob of paths it keeps, why).
TRIM: list[tuple[str, str, str]] = [
    ("vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so", "",
     "FlashAttention 2 (290 MiB): an optional import (flash_attn_interface.py sets "
     "FA2_AVAILABLE=False); Hopper uses FlashAttention 3 (_vllm_fa3_C)"),
    ("vllm/vllm-rs", "",
     "the Rust frontend binary, used only with VLLM_USE_RUST_FRONTEND=1 (default off)"),
    ("vllm/third_party/fmha_sm100/*", "",
     "Blackwell (SM100) FMHA sources, imported lazily on SM100 only"),
    ("vllm/third_party/deep_gemm/_C.cpython-*", "vllm/third_party/deep_gemm/_C.cpython-{py}-*",
     "deep_gemm builds for other Pythons than the target's"),
]

# What the harness itself imports on the box beyond the engine and the box's packages: always
# resolved with the engine (a bundle of vLLM alone, built without it, failed every cold start on
# the box at `import forkspawn.stats`: 2026-12-07).
HARNESS = ("asv_runner",)

# Runtime variables the bundle needs because of what it left out.
ENV: dict[str, tuple[str, str]] = {
    "VLLM_USE_FLASHINFER_SAMPLER": ("0", "flashinfer is not carried: without this vLLM's sampler "
                                         "fails at load with \"No module named 'flashinfer'\""),
    "VLLM_USE_RUST_FRONTEND": ("0", "the vllm-rs binary is trimmed (0 is vLLM's default)"),
    "XINFERENCE_ENABLE_VIRTUAL_ENV": ("0", "on by default in Xinference 4.x: it would create a "
                                           "virtual env per model with uv (not carried) from a "
                                           "registry; 0 uses the vllm installed beside it"),
}

# Box versions not passed to the resolver as constraints, and why. Those packages still come
# from the box; only the resolver's view of them is relaxed.
UNCONSTRAINED: dict[str, str] = {
    "numpy": "vllm 0.26.0 pins numba==0.65.0, which wants numpy<2.5; the box has numpy 2.5.2 "
             "with its own numba (vLLM ran with them), and both come from the box",
}

# The older manylinux tags a newer glibc also runs: pip does not expand `manylinux_2_N` itself.
_LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


class BundleError(Exception):
    """A refusal: printed as one line on stderr, exit status 2."""


def norm(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def strip_local(version: str) -> str:
    """`2.11.0+cu130` -> `2.11.0`: the pin names the release, the box's build adds a label."""
    return version.split("+", 1)[0]


def platforms(newest: str) -> list[str]:
    """`manylinux_2_31_x86_64` and every older manylinux tag it implies, newest first."""
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", newest)
    if not m:
        return [newest]
    minor, arch = int(m.group(1)), m.group(2)
    tags = []
    for n in range(minor, 4, -1):
        tags.append(f"manylinux_2_{n}_{arch}")
        if n in _LEGACY:
            tags.append(f"{_LEGACY[n]}_{arch}")
    return tags


def read_box(path: Path) -> dict:
    """The box a bundle is for: a `describe` JSON file (python, platform, torch, driver, packages),
    or a package list (`name` or `name==version` per line, `#` comments), which says no more.
    `packages` maps normalised names to versions (None where unknown)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise BundleError(f"{path}: cannot read the box description ({e.strerror})") from None
    if text.lstrip().startswith("{"):
        try:
            box = json.loads(text)
        except ValueError as e:
            raise BundleError(f"{path}: not valid JSON ({e})") from None
        if box.get("schema") != BOX_SCHEMA or not isinstance(box.get("packages"), dict):
            raise BundleError(f"{path}: schema {box.get('schema')!r}, expected {BOX_SCHEMA!r} with packages")
        return {**box, "packages": {norm(n): v for n, v in box["packages"].items()}}
    packages: dict[str, str | None] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            packages[norm(name.strip())] = version.strip() or None
    return {"packages": packages}


def torch_build() -> tuple[str | None, str | None]:
    """(version, CUDA) of the torch installed for this interpreter, read from its files without
    importing it (an import takes seconds and may touch the GPU): the distribution's version, and
    `cuda = '13.0'` (or None: a CPU build) in torch/version.py."""
    dist = next(importlib.metadata.distributions(name="torch"), None)
    if dist is None:
        return None, None
    version_py = Path(dist.locate_file("torch/version.py"))
    text = version_py.read_text() if version_py.exists() else ""
    m = re.search(r"^cuda\b[^=\n]*=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return dist.version, m.group(1) if m else None


def describe() -> dict:
    """This machine as a bundle's target (`describe -o box.json` on the box): Python, the newest
    manylinux tag its glibc runs, torch and its CUDA, the NVIDIA driver, every installed package."""
    libc, libc_version = platform_module.libc_ver()
    arch = platform_module.machine()
    major_minor = re.match(r"(\d+)\.(\d+)", libc_version) if libc == "glibc" else None
    torch, cuda = torch_build()
    gpus, gpu_note = engineset.nvidia_gpus()
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():  # sys.path order: the one imported wins
        name = dist.metadata["Name"]
        if name and norm(name) != "forkspawn-bench":  # this checkout, not the box's
            packages.setdefault(norm(name), dist.version)
    return {
        "schema": BOX_SCHEMA,
        "python": platform_module.python_version(),
        "platform": f"manylinux_{major_minor[1]}_{major_minor[2]}_{arch}" if major_minor else None,
        "glibc": libc_version or None,
        "torch": torch,
        "torch_cuda": cuda,
        "driver": min((g.driver for g in gpus), key=engineset.version_tuple) if gpus else None,
        "gpus": [f"{g.name}, {g.memory_mib} MiB" for g in gpus],
        "gpu_note": gpu_note,
        "packages": dict(sorted(packages.items())),
    }


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def _pip(python: str, args: list[str], what: str) -> subprocess.CompletedProcess:
    """Run pip; a failure becomes one line naming `what` and pip's last error line."""
    out = subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True)
    if out.returncode != 0:
        lines = [line for line in (out.stderr + out.stdout).splitlines() if line.strip()]
        # pip's first ERROR lines are often notes ("Ignored the following versions ...").
        errors = [line for line in lines if line.startswith("ERROR") and not line.startswith(
            ("ERROR: Ignored the following", "ERROR: ResolutionImpossible"))] or lines or ["(no output)"]
        err = BundleError(f"{what} failed (pip exit {out.returncode}): {errors[0].strip()}")
        err.output = out.stderr + out.stdout  # the whole story, for the callers that read it
        raise err
    return out


# --- requirements and the dependency graph (stdlib only: no `packaging`) ----------------------

_REQ = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*([^;]*)(?:;(.*))?$")


def parse_req(req: str) -> tuple[str, set[str], str, str]:
    """`name[extra,..] spec ; marker` -> (normalised name, extras, spec, marker)."""
    m = _REQ.match(req)
    if not m:
        raise BundleError(f"cannot parse requirement {req!r}")
    extras = {norm(e) for e in (m.group(2) or "").split(",") if e.strip()}
    return norm(m.group(1)), extras, m.group(3).strip(), (m.group(4) or "").strip()


def _marker_extras(marker: str) -> set[str]:
    return {norm(e) for e in re.findall(r"""extra\s*==\s*['"]([^'"]+)['"]""", marker)}


def reachable(roots: list[str], resolved: dict[str, dict], stop: set[str]) -> dict[str, set[str]]:
    """Packages of the resolution that the roots need without going through `stop` (left out
    or the box's): name -> who needs it. Edges are the resolved packages' Requires-Dist, an
    `extra == X` one only where X was asked for; other markers count as true, which is safe
    because a package whose marker is false on the target was not resolved at all."""
    needed: dict[str, set[str]] = {}
    extras: dict[str, set[str]] = {}
    queue: list[tuple[str, set[str], str]] = [(*parse_req(r)[:2], "(requested)") for r in roots]
    while queue:
        name, want, by = queue.pop()
        if name not in resolved:
            continue
        needed.setdefault(name, set()).add(by)
        new = want - extras.get(name, set())
        if name in extras and not new:
            continue
        extras[name] = extras.get(name, set()) | want
        if name in stop:
            continue
        for req in resolved[name]["metadata"].get("requires_dist", []):
            dep, dep_extras, _, marker = parse_req(req)
            need = _marker_extras(marker)
            if need and not need & extras[name]:
                continue
            queue.append((dep, dep_extras, name))
    return needed


def left_out_reason(name: str, box: dict[str, str | None], extra: dict[str, str],
                    carry_torch: bool = False) -> str | None:
    if name in extra:
        return extra[name]
    if carry_torch and torch_family(name):
        return None
    if name in LEFT_OUT:
        return LEFT_OUT[name]
    if name in CARRY:
        return None
    if name in box:
        return f"the box has it ({box[name] or 'version not recorded'})"
    for prefix, why in LEFT_OUT_PREFIXES.items():
        if name.startswith(prefix):
            return why
    return None


def box_unverified(carry: list[str], resolved: dict[str, dict], box: dict[str, str | None]) -> list[dict]:
    """Bounded requirements (`<`, `==`, `~=`) of the carried packages on box packages of
    unrecorded version: what to check on the box (`pip show NAME`) if something fails there."""
    found = []
    for n in carry:
        for req in resolved[n]["metadata"].get("requires_dist", []):
            dep, _, spec, marker = parse_req(req)
            if dep in box and box[dep] is None and dep not in CARRY and "extra" not in marker \
                    and re.search(r"<|==|~=", spec) and dep in resolved:
                found.append({"what": dep, "required": f"{dep}{spec} by {n}",
                              "resolved": resolved[dep]["metadata"]["version"]})
    return found


# --- trimming a wheel ------------------------------------------------------------------------

def trim_reason(path: str, py: str, rules: list[tuple[str, str, str]]) -> str | None:
    for glob, keep, why in rules:
        if fnmatch.fnmatchcase(path, glob) and not (keep and fnmatch.fnmatchcase(path, keep.format(py=py))):
            return why
    return None


def trim_wheel(src: Path, dst: Path, py: str, rules: list[tuple[str, str, str]]) -> list[tuple[str, int, str]]:
    """Copy wheel `src` to `dst` without the paths the rules remove, RECORD rewritten to match
    (pip checks RECORD against the files). Returns (path, bytes, why) of what was removed; an
    empty list leaves `dst` unwritten. ZIP_STORED: the tar's xz compresses better than deflate."""
    with zipfile.ZipFile(src) as z:
        drop = [(i.filename, i.file_size, why) for i in z.infolist()
                if (why := trim_reason(i.filename, py, rules))]
        if not drop:
            return []
        gone = {d[0] for d in drop}
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
            for info in z.infolist():
                if info.filename in gone:
                    continue
                data = z.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    rows = data.decode().splitlines()
                    data = "".join(r + "\n" for r in rows if r.rsplit(",", 2)[0] not in gone).encode()
                info.compress_type = zipfile.ZIP_STORED
                out.writestr(info, data)
    return drop


def torch_pin(requires: Iterable[str]) -> str | None:
    """The exact torch release an engine's Requires-Dist pins (`torch==X`), local label stripped."""
    for req in requires:
        name, _, spec, marker = parse_req(req)
        if name == "torch" and "extra" not in marker:
            m = re.fullmatch(r"==\s*([^,\s]+)", spec.strip("() "))
            if m:
                return strip_local(m.group(1))
    return None


def stub_wheel(where: Path, name: str, version: str, requires: Iterable[str] = (),
               files: dict[str, bytes] | None = None) -> Path:
    """A minimal valid wheel (py3-none-any): dist-info and the given files."""
    where.mkdir(parents=True, exist_ok=True)
    dist = f"{re.sub(r'[-.]+', '_', name)}-{version}"
    meta = "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                    *(f"Requires-Dist: {r}\n" for r in requires)])
    content = {**(files or {}), f"{dist}.dist-info/METADATA": meta.encode(),
               f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: forkspawn\n"
                                          b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{p},sha256={_b64(hashlib.sha256(d).digest())},{len(d)}\n" for p, d in content.items())
    path = where / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for p, d in content.items():
            z.writestr(p, d)
        z.writestr(f"{dist}.dist-info/RECORD", record + f"{dist}.dist-info/RECORD,,\n")
    return path


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# --- writing parts ---------------------------------------------------------------------------

class _PartWriter(io.RawIOBase):
    """A write-only stream cut into files of `size` bytes: ARCHIVE.000, ARCHIVE.001, ..."""

    def __init__(self, out: Path, size: int) -> None:
        self.out, self.size, self.parts = out, size, []
        self._f = None
        self._left = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        view = memoryview(b)
        while view:
            if self._left == 0:
                if self._f:
                    self._f.close()
                path = self.out / f"{ARCHIVE}.{len(self.parts):03d}"
                self.parts.append(path)
                self._f, self._left = open(path, "wb"), self.size
            n = min(self._left, len(view))
            self._f.write(view[:n])
            self._left -= n
            view = view[n:]
        return len(b)

    def close(self) -> None:
        if self._f:
            self._f.close()
            self._f = None
        super().close()


class _PartReader(io.RawIOBase):
    """The parts read back as one stream, in order."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths, self._f = list(paths), None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while True:
            if self._f is None:
                if not self._paths:
                    return 0
                self._f = open(self._paths.pop(0), "rb")
            n = self._f.readinto(b)
            if n:
                return n
            self._f.close()
            self._f = None

    def close(self) -> None:
        if self._f:
            self._f.close()
        super().close()


# --- build -----------------------------------------------------------------------------------

def build(out: Path, *, python_version: str, platform: str, engine: str, requires: list[str],
          box: dict[str, str | None], part_mb: float, find_links: list[str], no_index: bool,
          trim: list[tuple[str, str, str]], leave_out: dict[str, str], driver: str | None = None,
          choice: str = "", log=print) -> dict:
    """Resolve, download, trim and pack; `out` is replaced only once everything is written.
    `box`: the box's packages; `driver`: its NVIDIA driver, if known; `choice`: why this engine."""
    py = python_version.replace(".", "")  # 312: deep_gemm names its builds cpython-312-...
    plat_args = [a for p in platforms(platform) for a in ("--platform", p)]
    index_args = [a for d in find_links for a in ("--find-links", d)] + (["--no-index"] if no_index else [])
    target = ["--only-binary=:all:", "--python-version", python_version, *plat_args, *index_args]
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="forkspawn-bundle-"))  # downloads: big, never in `out`
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))  # renamed to `out`
    try:
        # 0. The engine's torch pin against the box's torch: where they differ (or the box has no
        # torch), the bundle carries the pinned torch and what comes with it, the box's set aside.
        _pip(sys.executable, ["install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet", "--report",
                              str(work / "engine.json"), "--target", str(work / "target"), *target, engine],
             f"looking up {engine}")
        pin = torch_pin(json.loads((work / "engine.json").read_text())["install"][0]["metadata"].get("requires_dist", []))
        carry_torch = bool(pin) and ("torch" not in box or (box["torch"] is not None and strip_local(box["torch"]) != pin))
        if carry_torch:
            choice = (choice + "; " if choice else "") + (
                f"the box's torch {box.get('torch') or '(none)'} is not the torch=={pin} that {engine} pins: "
                f"the bundle carries torch {pin} and its CUDA libraries (GBs)")
            if driver:
                try:
                    choice += "; " + engineset.check_driver(driver, pin)
                except engineset.Refusal as e:
                    raise BundleError(f"{e} (the box's driver, in its description)") from None
            box = {n: v for n, v in box.items() if not torch_family(n)}
        if choice:
            log(f"bundle: {choice}")

        # 1. Resolve engine + requirements together: on the box they share one venv.
        # The box's packages of known version enter the resolution as stub wheels without
        # dependencies (`VERSION+box`, pinned by constraint): the resolver must not walk into
        # torch's CUDA wheels (GBs, and not all on every index), which the box has anyway.
        # A box version pip cannot read (a describe of a hand-built package) constrains nothing.
        stubs, constraints = work / "box-stubs", work / "box-constraints.txt"
        pinned = {n: strip_local(v) for n, v in sorted(box.items())
                  if v and n not in UNCONSTRAINED and re.fullmatch(r"\d+(\.\d+)*((a|b|rc|\.post|\.dev)\d+)*", strip_local(v))}
        for n, v in pinned.items():
            stub_wheel(stubs, n, f"{v}+box")
        report = work / "report.json"
        roots = [engine, *dict.fromkeys([*HARNESS, *requires])]
        built = work / "built"
        built.mkdir()
        from_sdist: list[str] = []
        conflicts: list[dict] = []
        while True:
            log(f"bundle: resolving {' '.join(roots)} for Python {python_version}, {platform}")
            constraints.write_text("".join(f"{n}=={v}+box\n" for n, v in pinned.items()))
            try:
                # Not --quiet: pip names the packages of a conflict only when it may talk.
                _pip(sys.executable, ["install", "--dry-run", "--ignore-installed", "--report",
                                      str(report), "--target", str(work / "target"), *target,
                                      "--find-links", str(stubs), "--find-links", str(built),
                                      "-c", str(constraints), *roots], "resolving " + " ".join(roots))
                break
            except BundleError as e:
                # A box version the engines do not accept: the bundle carries one that fits (the
                # venv's copy shadows the box's), as pip names it in the conflict.
                clash = sorted({norm(n) for n in re.findall(r"The user requested \(constraint\) ([\w.-]+)==",
                                                         getattr(e, "output", "")) if norm(n) in pinned})
                if clash:  # each round unpins one at least: the loop ends
                    why = [line.strip() for line in e.output.splitlines() if " depends on " in line]
                    for n in clash:
                        log(f"bundle: the box's {n} {box[n]} conflicts: carrying one that fits")
                        conflicts.append({"what": n, "why": f"the box's {n} {box[n]} conflicts ({'; '.join(why)})"})
                        del pinned[n]
                        box = {k: v for k, v in box.items() if k != n}
                    continue
                # A dependency published as an sdist only (quantile-python, of aioprometheus):
                # build it here, once; only a pure-Python wheel runs on any target.
                m = re.search(r"satisfies the requirement (\S+) .*\(from versions: none\)", str(e))
                if not m or len(from_sdist) > 5 or m.group(1) in from_sdist:
                    raise
                req = m.group(1)
                log(f"bundle: {req} has no wheel: building one from its sdist")
                _pip(sys.executable, ["wheel", "--no-deps", "--quiet", "-w", str(built), *index_args, req],
                     f"building a wheel of {req}")
                if not all(w.name.endswith("-none-any.whl") for w in built.glob("*.whl")):
                    raise BundleError(f"{req}: no wheel for the target and its sdist is not pure Python") from None
                from_sdist.append(req)
        resolved = {norm(i["metadata"]["name"]): i for i in json.loads(report.read_text())["install"]}

        # 2. What to carry: what the roots need, except the box's and the left-out packages and
        #    whatever only those need.
        stop = {n for n in resolved if left_out_reason(n, box, leave_out, carry_torch)}
        needed = reachable(roots, resolved, stop)
        left_out = []
        for n in sorted(resolved):
            if n in stop:
                left_out.append({"what": f"{n}=={resolved[n]['metadata']['version']}",
                                 "why": left_out_reason(n, box, leave_out, carry_torch)})
            elif n not in needed:
                by = sorted(p for p, i in resolved.items() if any(
                    parse_req(r)[0] == n for r in i["metadata"].get("requires_dist", [])))
                left_out.append({"what": f"{n}=={resolved[n]['metadata']['version']}",
                                 "why": "needed only by packages left out: " + ", ".join(by)})
        carry = sorted(n for n in needed if n not in stop)

        # 3. Download exactly the resolved files, no resolution again.
        wheels = work / "wheels"
        pins = [f"{resolved[n]['metadata']['name']}=={resolved[n]['metadata']['version']}" for n in carry]
        log(f"bundle: downloading {len(pins)} wheels ({len(left_out)} packages left out)")
        _pip(sys.executable, ["download", "--no-deps", "--quiet", "-d", str(wheels), *target,
                              "--find-links", str(built), *pins],
             "downloading wheels")
        files = sorted(wheels.glob("*.whl"))
        by_name = {norm(f.name.split("-")[0]): f for f in files}
        if missing := [n for n in carry if n not in by_name]:
            raise BundleError(f"pip download did not give wheels for: {', '.join(missing)}")
        for n in carry:  # the file pip downloaded is the one it resolved
            want = resolved[n].get("download_info", {}).get("archive_info", {}).get("hashes", {}).get("sha256")
            if want and sha256(by_name[n]) != want:
                raise BundleError(f"{by_name[n].name}: sha256 differs from the resolved file")

        # 4. Trim.
        if parse_req(engine)[0] not in by_name:
            raise BundleError(f"the engine {engine} is not among the wheels carried")
        for n in carry:
            src = by_name[n]
            trimmed = work / "trimmed" / src.name
            trimmed.parent.mkdir(exist_ok=True)
            per_rule: dict[str, list[tuple[str, int]]] = {}
            for path, size, why in trim_wheel(src, trimmed, py, trim):
                per_rule.setdefault(why, []).append((path, size))
            for why, paths in per_rule.items():  # one entry per rule, not per file
                size = sum(s for _, s in paths) / MIB
                what = paths[0][0] if len(paths) == 1 else f"{os.path.commonpath([p for p, _ in paths])}/ ({len(paths)} files)"
                left_out.append({"what": f"{src.name}: {what}, {size:.1f} MiB", "why": why})
            if trimmed.exists():
                os.replace(trimmed, src)

        # 5. Manifest, tar | xz, parts.
        manifest = {
            "schema": SCHEMA,
            "python": python_version,
            "platform": platforms(platform),
            "engine": engine,
            "requires": requires,
            "torch": f"torch=={pin}" if pin else None,
            "torch_carried": carry_torch,
            "engine_choice": choice,
            "files": [{"name": by_name[n].name, "project": resolved[n]["metadata"]["name"],
                       "version": resolved[n]["metadata"]["version"],
                       "size": by_name[n].stat().st_size, "sha256": sha256(by_name[n])} for n in carry],
            "left_out": left_out,
            "env": [{"name": k, "value": v, "why": why} for k, (v, why) in ENV.items()],
            "built_from_sdist": from_sdist,
            "box_carried": [{"what": n, "why": CARRY[n]} for n in carry if n in CARRY] + conflicts,
            "box_unverified": box_unverified(carry, resolved, box),
            "box_unconstrained": [{"what": n, "why": why} for n, why in UNCONSTRAINED.items() if n in box],
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        total = sum(f["size"] for f in manifest["files"])
        log(f"bundle: packing {len(files)} wheels ({total / MIB:.0f} MiB) as xz parts of {part_mb:g} MiB")
        parts = _PartWriter(stage, max(1, int(part_mb * MIB)))
        with lzma.open(parts, "wb", preset=6) as xz, tarfile.open(fileobj=xz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.add(work / MANIFEST, arcname=MANIFEST)
            for f in manifest["files"]:
                tar.add(wheels / f["name"], arcname=f"wheels/{f['name']}")
        parts.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)  # mkdtemp's 0700 would hide the bundle from others
        manifest["parts"] = [{"name": p.name, "size": p.stat().st_size, "sha256": sha256(p)} for p in parts.parts]
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")

        # 6. Into place: the old bundle goes only once the new one is complete.
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(stage, out)
        if old:
            shutil.rmtree(old)
        for p in manifest["parts"]:
            log(f"bundle: {out / p['name']}  {p['size'] / MIB:.1f} MiB")
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(stage, ignore_errors=True)


# --- verify / install ------------------------------------------------------------------------

def load_manifest(bundle: Path) -> dict:
    try:
        manifest = json.loads((bundle / MANIFEST).read_text())
    except FileNotFoundError:
        raise BundleError(f"{bundle / MANIFEST}: missing (not a bundle directory)") from None
    except (OSError, ValueError) as e:
        raise BundleError(f"{bundle / MANIFEST}: unreadable ({e})") from None
    if manifest.get("schema") != SCHEMA:
        raise BundleError(f"{bundle / MANIFEST}: schema {manifest.get('schema')!r}, expected {SCHEMA!r}")
    return manifest


def check_parts(bundle: Path, manifest: dict) -> list[Path]:
    paths = []
    for p in manifest["parts"]:
        path = bundle / p["name"]
        if not path.is_file():
            raise BundleError(f"{path}: part missing ({len(manifest['parts'])} parts expected)")
        if path.stat().st_size != p["size"] or sha256(path) != p["sha256"]:
            raise BundleError(f"{path}: part corrupt (size or sha256 differs from {MANIFEST})")
        paths.append(path)
    return paths


def unpack(parts: list[Path], manifest: dict, dest: Path) -> list[Path]:
    """Reassemble the parts into `dest`, checking every file against the manifest."""
    try:
        with lzma.open(_PartReader(parts)) as xz, tarfile.open(fileobj=xz, mode="r|") as tar:
            tar.extractall(dest, filter="data")
    except (lzma.LZMAError, tarfile.TarError, EOFError, OSError) as e:
        raise BundleError(f"the parts do not unpack ({e})") from None
    wheels = []
    for f in manifest["files"]:
        path = dest / "wheels" / f["name"]
        if not path.is_file() or path.stat().st_size != f["size"] or sha256(path) != f["sha256"]:
            raise BundleError(f"{f['name']}: missing or sha256 differs from {MANIFEST}")
        wheels.append(path)
    return wheels


def venv_torch(python: str) -> str | None:
    out = subprocess.run([python, "-c", "import importlib.metadata as m\ntry: print(m.version('torch'))\n"
                          "except m.PackageNotFoundError: pass"], capture_output=True, text=True)
    if out.returncode != 0:
        raise BundleError(f"{python}: cannot run it ({(out.stderr.strip().splitlines() or ['?'])[-1]})")
    return out.stdout.strip() or None


def check_torch(python: str, manifest: dict) -> None:
    pin = manifest.get("torch")
    if not pin or manifest.get("torch_carried"):  # a carried torch is installed with the rest
        return
    have = venv_torch(python)
    want = pin.split("==", 1)[1]
    if have is None or strip_local(have) != want:
        raise BundleError(f"{python} has torch {have or '(none)'}, the bundle needs {pin} "
                          f"({manifest['engine']} pins it): use a venv of that torch")


def summary(manifest: dict) -> dict:
    versions = {f["project"].lower(): f["version"] for f in manifest["files"]}
    return {
        "name": "forkspawn-bundle",
        "schema": manifest["schema"],
        "engine": manifest["engine"],
        "versions": {k: versions[k] for k in dict.fromkeys((parse_req(manifest["engine"])[0], "vllm", "xinference",
                                                             "asv", "asv_runner")) if k in versions},
        "torch": manifest.get("torch"),
        "torch_carried": manifest.get("torch_carried", False),
        "files": len(manifest["files"]),
        "left_out": manifest["left_out"],
        "env": manifest["env"],
    }


def install(bundle: Path, venv: Path, log=print) -> dict:
    manifest = load_manifest(bundle)
    parts = check_parts(bundle, manifest)
    python = str(venv / "bin" / "python")
    if not Path(python).exists():
        raise BundleError(f"{python}: no such interpreter (make the venv first)")
    check_torch(python, manifest)
    with tempfile.TemporaryDirectory(prefix="forkspawn-bundle-") as tmp:
        wheels = unpack(parts, manifest, Path(tmp))
        log(f"bundle: installing {len(wheels)} wheels into {venv}")
        _pip(python, ["install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                      *map(str, wheels)], "installing the bundle's wheels")
        roots = sorted({top for w in wheels for top in wheel_roots(w)})
    info = summary(manifest)
    info["bytecode"] = compile_bytecode(python, roots)
    log(f"bundle: compiled the bytecode of {info['bytecode']['compiled']} of {info['bytecode']['sources']} "
        f"installed .py files")
    # What pip finds inconsistent (the box's own packages included): recorded, not fatal, since
    # the box's versions are only partly known when the bundle is made.
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    info["pip_check"] = [line for line in check.stdout.splitlines() if line.strip() and "No broken" not in line]
    write_text_atomic(venv / SUMMARY, json.dumps(info, indent=1) + "\n", mode=0o644)
    for line in info["pip_check"]:
        log(f"bundle: pip check: {line}")
    log(f"bundle: installed; set {' '.join(e['name'] + '=' + e['value'] for e in manifest['env'])}")
    return info


def wheel_roots(wheel: Path) -> set[str]:
    """What a wheel installs at the top of site-packages: its packages and single modules."""
    with zipfile.ZipFile(wheel) as z:
        tops = {n.split("/", 1)[0] for n in z.namelist() if n.endswith(".py")}
    return {t for t in tops if not t.endswith((".dist-info", ".data"))}


# Run by the venv's interpreter (its own bytecode tag): the installed .py files under the roots
# given on stdin, and how many have a current .pyc.
_COUNT_PYC = """
import importlib.util, json, os, sys
sources = compiled = 0
for root in json.load(sys.stdin):
    files = [root] if root.endswith(".py") else [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".py")]
    for f in files:
        sources += 1
        compiled += os.path.exists(importlib.util.cache_from_source(f))
print(json.dumps({"sources": sources, "compiled": compiled}))
"""


def compile_bytecode(python: str, roots: list[str]) -> dict:
    """Compile the installed packages' bytecode, as pip does by default: without it every process
    that imports vLLM compiles its source again (17-26 s a fresh `import vllm` on the H100 box,
    whose environment sets PYTHONDONTWRITEBYTECODE=1, so imports never write it). compileall writes
    .pyc files whatever PYTHONDONTWRITEBYTECODE says, on every core (pip's compile uses one). A
    file that does not compile (some packages ship templates named .py) is left as pip leaves it."""
    site = subprocess.run([python, "-c", "import sysconfig; p = sysconfig.get_paths(); print(p['purelib']); print(p['platlib'])"],
                          capture_output=True, text=True, check=True).stdout.split()
    paths = sorted({str(Path(d, r)) for r in roots for d in site if Path(d, r).exists()})
    if paths:
        subprocess.run([python, "-m", "compileall", "-qq", "-j", "0", *paths], capture_output=True)
    counted = subprocess.run([python, "-c", _COUNT_PYC], input=json.dumps(paths), capture_output=True,
                             text=True, check=True)
    return {**json.loads(counted.stdout), "how": "python -m compileall -j 0 after pip install --no-compile"}


# --- command line ----------------------------------------------------------------------------

def _rule(text: str) -> tuple[str, str]:
    glob, sep, why = text.partition("=")
    if not sep or not glob:
        raise argparse.ArgumentTypeError(f"expected GLOB=REASON, got {text!r}")
    return glob, why


def split(bundle: Path, part_mb: float) -> list[Path]:
    """Cut an existing bundle's parts again at `part_mb` MiB (for another per-call limit, e.g.
    after the working tree that travels beside each part grew), without building it again. The
    parts are checked first; the new bundle is written beside the old one and swapped in whole."""
    if part_mb <= 0:
        raise BundleError(f"--part-mb {part_mb}: must be > 0")
    bundle = bundle.resolve()
    manifest = load_manifest(bundle)
    old = check_parts(bundle, manifest)
    new_dir = Path(tempfile.mkdtemp(prefix=f".{bundle.name}-split-", dir=bundle.parent))
    new_dir.chmod(bundle.stat().st_mode & 0o777)
    try:
        writer = _PartWriter(new_dir, max(1, int(part_mb * MIB)))
        with _PartReader(old) as reader:
            shutil.copyfileobj(reader, writer, MIB)
        writer.close()
        manifest["parts"] = [{"name": p.name, "size": p.stat().st_size, "sha256": sha256(p)} for p in writer.parts]
        (new_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        gone = bundle.with_name(new_dir.name + "-old")
        bundle.rename(gone)
        new_dir.rename(bundle)
        shutil.rmtree(gone)
    finally:
        shutil.rmtree(new_dir, ignore_errors=True)
    return [bundle / p.name for p in writer.parts]


def plan(box: dict, path: Path, python_version: str | None, platform: str | None,
         engine: str | None) -> tuple[str, str, str, str]:
    """(Python major.minor, platform, engine, why that engine) for the box: the flags given,
    else what its description says; a vLLM of the table is checked against its Python."""
    python_version = python_version or box.get("python")
    platform = platform or box.get("platform")
    for value, flag, var in ((python_version, "--python-version", "PY_TARGET"), (platform, "--platform", "PLATFORM")):
        if not value:
            raise BundleError(f"{path} does not say the box's {flag[2:]} (a package list; "
                              f"`describe` writes one that does): pass {flag} ({var}=...)")
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", python_version):
        raise BundleError(f"--python-version {python_version}: expected MAJOR.MINOR")
    python_version = ".".join(python_version.split(".")[:2])
    choice = ""
    if engine is None:
        version, choice = engineset.vllm_for_torch(box["packages"].get("torch"))
        engine = f"vllm=={version}"
    name, _, spec, _ = parse_req(engine)
    release = engineset.VLLM_RELEASES.get(spec.removeprefix("==")) if name == "vllm" else None
    if release and not release[1] <= engineset.version_tuple(python_version)[:2] < release[2]:
        lo, hi = release[1], release[2]
        raise BundleError(f"the box's Python {python_version} is outside {engine}'s >={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}")
    return python_version, platform, engine, choice


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m forkspawn.tools.bundle", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("describe", help="describe this machine as a bundle's target (run it on the box)")
    d.add_argument("-o", "--out", type=Path, required=True, help="the JSON file to write")
    b = sub.add_parser("build", help="resolve, download, trim and pack (a connected machine)")
    b.add_argument("--out", type=Path, default=Path(".bundle"))
    b.add_argument("--box", type=Path, required=True,
                   help="the box: `describe`'s JSON, or a list of the packages it already has")
    b.add_argument("--python-version", help="the box's Python (default: the box description's)")
    b.add_argument("--platform", help="the newest manylinux tag of the box; the older ones are implied "
                                      "(default: the box description's)")
    b.add_argument("--engine", help="the engine wheel (default: the vLLM that fits the box's torch, "
                                    "forkspawn/tools/engineset.py)")
    b.add_argument("--require", action="append", default=[], help="more requirements (repeatable)")
    b.add_argument("--part-mb", type=float, default=PART_MB,
                   help="MiB per part: a device call carries 64 MiB, the working tree included")
    b.add_argument("--find-links", action="append", default=[])
    b.add_argument("--no-index", action="store_true")
    b.add_argument("--trim", action="append", type=_rule, default=[], metavar="GLOB=REASON",
                   help="also remove these paths from the wheels")
    b.add_argument("--leave-out", action="append", type=_rule, default=[], metavar="NAME=REASON",
                   help="also leave out this package")
    for name, help_ in (("install", "reassemble, verify and install into a venv (the box)"),
                        ("verify", "reassemble and verify, install nothing")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--bundle", type=Path, default=Path(".bundle"))
        p.add_argument("--venv", type=Path, required=name == "install",
                       help="the target venv" + ("" if name == "install" else ": also check its torch"))
    p = sub.add_parser("split", help="cut the parts of an existing bundle again at another size")
    p.add_argument("--bundle", type=Path, default=Path(".bundle"))
    p.add_argument("--part-mb", type=float, default=PART_MB)
    args = ap.parse_args(None if argv is None else list(argv))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.cmd == "describe":
            box = describe()
            write_text_atomic(args.out, json.dumps(box, indent=1) + "\n", mode=0o644)
            log(f"bundle: {args.out}: Python {box['python']}, {box['platform']}, torch {box['torch']} "
                f"(CUDA {box['torch_cuda']}), driver {box['driver']}, {len(box['packages'])} packages")
        elif args.cmd == "build":
            if args.part_mb <= 0:
                raise BundleError(f"--part-mb {args.part_mb}: must be > 0")
            box = read_box(args.box)
            python_version, platform, engine, choice = plan(box, args.box, args.python_version, args.platform,
                                                            args.engine)
            build(args.out, python_version=python_version, platform=platform,
                  engine=engine, requires=args.require, box=box["packages"],
                  part_mb=args.part_mb, find_links=args.find_links, no_index=args.no_index,
                  trim=TRIM + [(g, "", why) for g, why in args.trim],
                  leave_out={norm(n): why for n, why in args.leave_out}, driver=box.get("driver"),
                  choice=choice, log=log)
        elif args.cmd == "split":
            parts = split(args.bundle, args.part_mb)
            log(f"bundle: {args.bundle}: {len(parts)} parts of at most {args.part_mb:g} MiB")
        elif args.cmd == "install":
            install(args.bundle, args.venv, log=log)
        else:
            manifest = load_manifest(args.bundle)
            parts = check_parts(args.bundle, manifest)
            if args.venv:
                check_torch(str(args.venv / "bin" / "python"), manifest)
            with tempfile.TemporaryDirectory(prefix="forkspawn-bundle-") as tmp:
                n = len(unpack(parts, manifest, Path(tmp)))
            log(f"bundle: {args.bundle}: {len(parts)} parts, {n} wheels, all sha256 match")
    except BundleError as e:
        print(f"forkspawn.tools.bundle {args.cmd}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
