"""The asv sidecar: the full `forkspawn measure` records of one asv run, next to asv's results.

    <asv results_dir>/<machine>/records/<commit[:8]>-<env>.jsonl

One record a line (asv ignores files not ending in .json), tagged with asv's run token
(`asv_token`), the configuration's key (`asv_key`, vocabulary.config_key), asv's own parameter
values (`asv_params`), commit (`asv_commit`) and environment (`asv_env`): an `Entry`, the
`Record` and its tags, the tags after the record's keys. The asv suite writes it
(the asv suite, benchmarks/common.py) and the analysis reads it (analysis.load); both go through this module.
Standard library only.

Beside it, `<commit[:8]>-<env>.runs` is the journal of cold starts whose configuration has no
record yet: an interrupted run (a lease ending) resumed with the same token continues from
them (the stopping rule sees every cold start), instead of starting the configuration again.
Nothing else reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .record import Record, SchemaError

FOLDER = "records"
SUFFIX = ".jsonl"
JOURNAL_SUFFIX = ".runs"


class BadLine(ValueError):
    """An unreadable sidecar line; the message is one line, `path:line: why`."""


@dataclass(frozen=True)
class Entry:
    """One sidecar line: a record and the tags that join it to asv's results. `asv_key` and
    `asv_commit` are on every line; the others are left out of a line where they are None
    (early sidecars have no `asv_params`)."""

    record: Record
    asv_key: str
    asv_commit: str
    asv_token: str | None = None
    asv_params: str | None = None
    asv_env: str | None = None

    def keys(self) -> list[str]:
        """What finds the record: its `asv_key`, then `asv_params` if the suite wrote it (that
        is what tells a labelled method variant, e.g. vLLM's "fork-override", apart)."""
        return [self.asv_key] + ([self.asv_params] if self.asv_params else [])

    def to_dict(self) -> dict[str, Any]:
        """The line's JSON object: the record's keys, then the tags in `TAGS` order."""
        tags = {name: getattr(self, name) for name in TAGS}
        return {**self.record.to_dict(), **{k: v for k, v in tags.items() if v is not None}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Entry":
        """The entry of a line's JSON object; SchemaError for a record of another schema,
        KeyError for a line without its join keys."""
        if not isinstance(d, dict):
            raise TypeError("a sidecar line is a JSON object")
        tags = {k: d[k] for k in TAGS if k in d}
        record = Record.from_dict({k: v for k, v in d.items() if k not in TAGS})
        return cls(record, tags.pop("asv_key"), tags.pop("asv_commit"), **tags)


TAGS = ("asv_token", "asv_key", "asv_params", "asv_commit", "asv_env")  # their order on a line


def path(results: Path, machine: str, commit: str, env: str) -> Path:
    """The sidecar of one commit and asv environment on one machine."""
    return Path(results) / machine / FOLDER / f"{commit[:8]}-{env}{SUFFIX}"


def files(machine_dir: Path) -> list[Path]:
    """The sidecars of one asv machine folder, in name order."""
    folder = Path(machine_dir) / FOLDER
    return sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []


def all_files(results: Path) -> list[Path]:
    """The sidecars of every machine below asv's results folder."""
    return sorted(Path(results).glob(f"*/{FOLDER}/*{SUFFIX}"))


def append(sidecar: Path, entry: Entry) -> None:
    _append_line(sidecar, entry.to_dict())


def _append_line(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write() of one line to an O_APPEND file: readers see the whole line or none of it.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(obj, allow_nan=False) + "\n").encode())
    finally:
        os.close(fd)


def journal(sidecar: Path) -> Path:
    """The journal of unfinished configurations' cold starts beside `sidecar`."""
    return sidecar.with_suffix(JOURNAL_SUFFIX)


def append_run(journal: Path, token: str, key: str, run: dict[str, Any]) -> None:
    """Journal one cold start (a Run's dict) of configuration `key` in run `token`."""
    _append_line(journal, {"asv_token": token, "asv_key": key, "run": run})


def runs(journal: Path, token: str, key: str) -> list[dict[str, Any]]:
    """The journalled cold starts of `key` in run `token`, in order; BadLine names a bad line."""
    if not journal.exists():
        return []
    out = []
    for n, line in enumerate(journal.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if entry["asv_token"] == token and entry["asv_key"] == key:
                out.append(entry["run"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise BadLine(f"{journal}:{n}: corrupt or truncated journal line") from None
    return out


def records(path: str | os.PathLike) -> list[Record]:
    """The records of a JSON Lines file, a sidecar's (their asv tags set aside) or `forkspawn
    measure` records one a line; SchemaError names the line of a record of another schema."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            out.append(Entry.from_dict(d).record if isinstance(d, dict) and "asv_key" in d else Record.from_dict(d))
        except SchemaError as e:
            raise SchemaError(f"{path}:{n}: {e}") from None
    return out


def read(sidecar: Path) -> Iterator[Entry]:
    """The entries of a sidecar, in order (blank lines skipped); BadLine names a bad line."""
    if not sidecar.exists():
        return
    for n, line in enumerate(sidecar.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = Entry.from_dict(json.loads(line))
        except SchemaError as e:
            raise BadLine(f"{sidecar}:{n}: {e}") from None
        except (json.JSONDecodeError, KeyError, TypeError):
            raise BadLine(f"{sidecar}:{n}: corrupt or truncated record line") from None
        yield entry


def find(sidecar: Path, token: str, key: str) -> Entry | None:
    """The entry of `key` (an `asv_key`) in run `token`, if there is one."""
    return next((e for e in read(sidecar) if e.asv_token == token and e.asv_key == key), None)
