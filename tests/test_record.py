"""The record as a typed object: `Record` reads and writes the JSON unchanged, the sidecar's
`Entry` keeps the record and its asv tags apart and writes the line unchanged, and a record of
another schema, or of none, is refused."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from forkspawn import sidecar
from forkspawn.record import SCHEMA, Record, SchemaError

REPORTS = Path(__file__).resolve().parents[1] / "reports"
STORED = sorted(REPORTS.rglob("records/*.jsonl"))


def test_every_stored_record_round_trips() -> None:
    """Every stored sidecar line, read as an Entry (a Record and its tags) and written again, is
    the same JSON, key order included; the record alone is the line less its tags."""
    lines = [line for p in STORED for line in p.read_text().splitlines() if line]
    assert lines
    for line in lines:
        d = json.loads(line)
        entry = sidecar.Entry.from_dict(d)
        assert json.dumps(entry.to_dict()) == json.dumps(d)
        bare = {k: v for k, v in d.items() if k not in sidecar.TAGS}
        assert json.dumps(Record.from_dict(bare).to_dict()) == json.dumps(bare)


def test_the_sidecar_reads_frozen_records_with_their_tags() -> None:
    entries = [e for p in STORED for e in sidecar.read(p)]
    assert len(entries) == sum(1 for p in STORED for line in p.read_text().splitlines() if line)
    entry = entries[0]
    assert isinstance(entry.record, Record) and entry.asv_key and entry.asv_commit
    assert entry.keys()[0] == entry.asv_key
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.record.status = "error"  # type: ignore[misc]


def test_a_record_without_a_schema_or_with_foreign_keys_is_refused() -> None:
    with pytest.raises(SchemaError, match="without a schema"):
        Record.from_dict({"status": "ok"})
    with pytest.raises(SchemaError, match="asv_key"):  # the tags are the sidecar's, not the record's
        Record.from_dict({"schema": SCHEMA, "status": "ok", "asv_key": "k"})


def test_another_schema_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="forkspawn.record/9"):
        Record.from_dict({"schema": "forkspawn.record/9", "status": "ok"})
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"schema": SCHEMA, "status": "ok"}) + "\n"
                    + json.dumps({"schema": "other/1", "status": "ok"}) + "\n")
    with pytest.raises(SchemaError, match=f"{path}:2:"):
        sidecar.records(path)
    out = subprocess.run([sys.executable, "-m", "forkspawn.quality", "precision", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "other/1" in out.stderr
