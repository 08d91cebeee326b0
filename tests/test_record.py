"""The record as a typed object: `Record` reads and writes the JSON unchanged, and refuses
a record of another schema."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from forkspawn.record import SCHEMA, Record, SchemaError, read_records

REPORTS = Path(__file__).resolve().parents[1] / "reports"


def test_every_stored_record_round_trips() -> None:
    lines = [line for p in sorted(REPORTS.rglob("records/*.jsonl")) for line in p.read_text().splitlines() if line]
    assert lines
    for line in lines:
        d = json.loads(line)
        assert json.dumps(Record.from_dict(d).to_dict()) == json.dumps(d)


def test_another_schema_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="forkspawn.record/9"):
        Record.from_dict({"schema": "forkspawn.record/9", "status": "ok"})
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"schema": SCHEMA, "status": "ok"}) + "\n"
                    + json.dumps({"schema": "other/1", "status": "ok"}) + "\n")
    with pytest.raises(SchemaError, match=f"{path}:2:"):
        read_records(path)
    out = subprocess.run([sys.executable, "-m", "forkspawn.quality", "precision", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "other/1" in out.stderr
