"""Page-cache state of files: how much of a checkpoint (or torch's libraries) the kernel holds.

The memory side of a cold start, beside `memory.py` (processes): `measure` records the
checkpoint's residency before each start (record: `page_cache`), and the quality checks
evict and warm files with it. Standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


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
    """Every file below `directory`, sorted."""
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
