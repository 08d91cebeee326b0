"""Generated checkpoints: a preset larger than a shard is written a shard at a time, with Hugging
Face's index, and reads back as one model; `forkspawn model PRESET --dry-run` describes one
without generating it (the `8b` preset is 16 GB: generated on the GPU box only)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import forkspawn

from forkspawn import checkpoint
from forkspawn.checkpoint import PRESETS, SEED, ModelSpec, resolve_checkpoint, write_checkpoint


def test_a_model_larger_than_a_shard_is_written_in_shards_with_an_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = PRESETS["tiny"]
    one = tmp_path / "one"
    one.mkdir()
    write_checkpoint(one, spec, SEED)
    monkeypatch.setattr(checkpoint, "SHARD_BYTES", 300_000)  # about a layer of the tiny model
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    write_checkpoint(sharded, spec, SEED)
    files = sorted(p.name for p in sharded.glob("*.safetensors"))
    assert len(files) > 2 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(files)
    assert index["metadata"]["total_size"] == spec.param_count() * spec.itemsize
    assert resolve_checkpoint(str(sharded), tmp_path) == sharded  # every shard's header checks out

    from safetensors.torch import load_file  # the same tensors, drawn in the same order, as one file holds
    whole = load_file(one / "model.safetensors")
    parts = {k: v for f in files for k, v in load_file(sharded / f).items()}
    assert whole.keys() == parts.keys() and all((whole[k] == parts[k]).all() for k in whole)


def test_the_8b_preset_is_described_without_generating_it(tmp_path: Path) -> None:
    out = forkspawn("model", "8b", "--dry-run", env={"FORKSPAWN_CACHE": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert not any(tmp_path.iterdir()), "a dry run writes nothing"
    cfg = plan["config"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["intermediate_size"], cfg["vocab_size"], cfg["torch_dtype"]) == (4096, 32, 32, 8, 14336, 128256, "bfloat16")
    assert plan["params"] == ModelSpec(**{k: cfg[k] for k in ModelSpec.__dataclass_fields__}).param_count() == 8_030_261_248
    assert plan["weight_bytes"] == 2 * plan["params"] == sum(s["bytes"] for s in plan["shards"])
    assert len(plan["shards"]) == 4 and max(s["bytes"] for s in plan["shards"]) <= checkpoint.SHARD_BYTES
    # generation holds a shard, safetensors' copy of it and one float32 draw, never the model twice
    assert plan["peak_generation_bytes"] < plan["weight_bytes"]
    assert math.isclose(plan["weight_bytes"] / 1e9, 16.06, abs_tol=0.01)
    bad = forkspawn("model", "9b", "--dry-run")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "forkspawn: error: unknown preset '9b'; valid: tiny, small, 1b, 8b"]
