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
    out = subprocess.run([sys.executable, "-m", "forkspawn", "quality", "precision", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "other/1" in out.stderr


def test_a_record_names_its_models_size_from_the_config(tmp_path: Path) -> None:
    """`model_params` comes from the checkpoint's config (no weights read): the presets' counts are
    their namesakes', equal to the tensors a generated checkpoint holds, and a record carries it."""
    from forkspawn.checkpoint import PRESETS, SEED, spec_of, write_checkpoint
    from forkspawn.config import Config
    from forkspawn.record import Run, build_record

    assert PRESETS["1b"].param_count() == 1_235_814_400  # Llama-3.2-1B
    assert PRESETS["8b"].param_count() == 8_030_261_248  # Llama-3.1-8B
    write_checkpoint(tmp_path, PRESETS["tiny"], SEED)
    header = json.loads((f := tmp_path / "model.safetensors").read_bytes()[8:8 + int.from_bytes(f.read_bytes()[:8], "little")])
    held = sum(int(__import__("math").prod(t["shape"])) for k, t in header.items() if k != "__metadata__")
    assert held == spec_of(str(tmp_path), tmp_path).param_count() == spec_of("tiny", tmp_path).param_count()
    assert spec_of(str(tmp_path / "nowhere"), tmp_path) is None
    rec = build_record(Config(), [Run()], machine={}, versions={}, model_params=held)
    assert rec.to_dict()["model_params"] == held and list(rec.to_dict()).index("model_params") == list(rec.to_dict()).index("model") + 1
    old = {k: v for k, v in rec.to_dict().items() if k != "model_params"}  # a record written before the field
    assert Record.from_dict(old).to_dict() == old
