"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

The new content goes to a temporary file in the same directory, is flushed to disk, and is
renamed over the target (a rename within one file system is atomic). Standard library only.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Write `data` to `path` atomically. `mode`: the new file's permission bits (mkstemp's
    0600 unless given; 0o644 for a file that someone else, e.g. a web server, must read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, mode: int | None = None) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes_atomic(path, text.encode(), mode)


def write_json_atomic(path: str | os.PathLike, obj: Any, mode: int | None = None) -> None:
    """Write `obj` as JSON (indent 1; NaN refused: it is no JSON) to `path` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=1, allow_nan=False), mode)
