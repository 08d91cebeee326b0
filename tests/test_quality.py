"""The self-measurements of forkspawn.quality on real processes; no timing thresholds here
(speed goals live in benchmarks/quality.py and docs/measurement-quality.md)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forkspawn import quality
from forkspawn.record import SCHEMA


def test_psutil_and_direct_smaps_rollup_agree_for_a_live_child():
    result = quality.probes(repeat=2, tp=1, import_torch=False)
    rows = result["readers"]
    assert len(rows) == 2  # the fresh parent and its rank
    for row in rows:
        for kind in ("rss_mib", "pss_mib", "uss_mib"):
            v = row[kind]
            assert v["probe"] > 0 and v["rollup"] > 0
            assert abs(v["probe_minus_rollup"]) < 1.0, (row["pid"], kind, v)
        assert abs(row["uss_mib"]["smaps_minus_rollup"]) < 1.0  # the per-mapping reader agrees too
    assert math.isfinite(result["probe"]["probe_s"]["median"]) and result["probe"]["probe_s"]["median"] > 0
    assert result["probe"]["rank_rss_delta_mib"] == [pytest.approx(0.0, abs=1.0)]  # reading a process leaves it alone


@pytest.mark.parametrize("method", quality.METHODS)
def test_overhead_is_measured_for_each_method(method):
    r = quality.overhead(method, repeat=1 if method == "forkserver-preload" else 2)
    for key in ("harness_s", "bare_s", "minimal_s"):
        assert r[key]["n"] == r["n"] and math.isfinite(r[key]["median"]) and r[key]["median"] > 0, (key, r[key])
    assert math.isfinite(r["overhead_s"]["median"]) and r["limit_s"] >= 1e-3


def _record(method: str, state: str, ttr: list[float], uss: list[float], tp: int = 1) -> dict:
    return {"schema": SCHEMA, "status": "ok", "engine": "torch-tp", "method": method, "parent_state": state, "tp": tp,
            "cuda_check": "runtime", "config": {"parent_state": state, "extra": {}},
            "samples": {"time_to_ready_s": ttr, "mem.rank0.uss_mib": uss}}


def test_precision_verdicts_on_synthetic_records(tmp_path: Path):
    wobble = [1.0, 1.02, 0.97, 1.05, 0.99, 1.01, 0.98, 1.03, 1.0, 0.96]
    recs = [
        _record("fork", "torch", [0.1 * w for w in wobble], [34 * w for w in wobble]),
        _record("spawn", "bare", [2.5 * w for w in wobble], [230 * w for w in wobble]),
        _record("fork", "bare", [2.5 * w for w in reversed(wobble)], [230 * w for w in reversed(wobble)]),
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    result = quality.precision(path)
    by = {(c["a"], c["b"], c["metric"]): c for c in result["comparisons"]}
    far = by[("fork/torch", "spawn/bare", "time_to_ready_s")]
    assert far["resolved_99"] and far["asv_is_different"] and far["repeats_needed"] <= 3
    same = by[("fork/bare", "spawn/bare", "time_to_ready_s")]  # the same distribution: never resolved
    assert not same["resolved_99"] and not same["asv_is_different"] and same["repeats_needed"] is None
    cvs = {(c["method"], c["parent_state"]): c["stats"]["time_to_ready_s"]["cv"] for c in result["configs"]}
    assert cvs[("fork", "torch")] == pytest.approx(cvs[("spawn", "bare")])  # CV is scale-free

    out = subprocess.run([sys.executable, "-m", "forkspawn", "quality", "precision", str(path), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["comparisons"]) == len(result["comparisons"])


def test_page_cache_residency_follows_eviction_and_reading(tmp_path: Path):
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(4 * 2**20))
    quality.drop_from_cache(path)
    cold = quality.resident_fraction(path)
    path.read_bytes()
    warm = quality.page_cache_state([path])
    if cold > 0.5:
        pytest.skip(f"this filesystem keeps evicted pages ({cold:.0%} resident after DONTNEED), e.g. tmpfs")
    assert warm["resident_fraction"] == 1.0 and warm["warm"]


def test_importtime_reads_cumulative_module_times():
    t = quality.importtime("import json")
    assert t["json"] > 0 and t["json"] >= t.get("json.decoder", 0.0)
