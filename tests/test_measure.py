"""The measuring spine on real processes: the `forkspawn measure --json` contract, verified
start methods and parent states, memory probes, and TP=N computing what TP=1 computes."""

from __future__ import annotations

import functools
import statistics

import pytest
from conftest import measure

from forkspawn.worker import PHASES

RECORD_KEYS = {"status", "error", "traceback", "engine", "method", "method_used", "parent_state", "tp", "time_to_ready_s",
               "phases", "processes", "group", "tokens_per_s", "machine", "versions"}
PROCESS_KEYS = {"role", "rank", "pid", "rss_mib", "uss_mib", "pss_mib", "peak_rss_mib", "gpu_mib"}

# (method, parent state): each method from the parent state it is typically used from.
CASES = [("fork", "torch"), ("spawn", "bare"), ("forkserver", "bare"), ("forkserver-preload", "bare")]


@functools.cache
def record(method: str, parent_state: str, tp: int = 2) -> dict:
    return measure("--method", method, "--parent-state", parent_state, "--tp", str(tp))


@pytest.mark.parametrize("method,parent_state", CASES)
def test_record_honours_the_contract(method: str, parent_state: str) -> None:
    rec = record(method, parent_state)
    assert RECORD_KEYS <= rec.keys()
    assert rec["status"] == "ok" and rec["error"] is None and rec["traceback"] is None
    assert (rec["engine"], rec["method"], rec["tp"]) == ("torch-tp", method, 2)
    assert rec["method_used"] == method, "the start method read back from /proc"
    assert rec["parent_state"] == parent_state

    # every rank stamps every phase, in order, on the shared clock; ready is the slowest rank's
    for rank in (0, 1):
        stamps = [p for p in rec["phases"] if p["rank"] == rank]
        assert [p["name"] for p in stamps] == list(PHASES)
        assert [p["t_s"] for p in stamps] == sorted(p["t_s"] for p in stamps)
    assert rec["time_to_ready_s"] == pytest.approx(max(p["t_s"] for p in rec["phases"] if p["name"] == "ready"))

    roles = [(p["role"], p["rank"]) for p in rec["processes"]]
    assert ("parent", None) in roles and ("rank", 0) in roles and ("rank", 1) in roles
    for proc in rec["processes"]:
        assert PROCESS_KEYS <= proc.keys()
        assert 0 < proc["uss_mib"] <= proc["pss_mib"] <= proc["rss_mib"] <= proc["peak_rss_mib"] + 1e-6
        assert proc["gpu_mib"] is None and proc["gpu_note"]  # a CPU run says why there is no GPU figure
    assert rec["group"]["pss_mib"] == pytest.approx(sum(p["pss_mib"] for p in rec["processes"]))
    assert set(rec["tokens_per_s"]) == {"1", "4"} and all(v > 0 for v in rec["tokens_per_s"].values())
    assert rec["versions"]["torch"] and rec["machine"]["cpus"] >= 1


def test_tensor_parallel_ranks_compute_what_one_rank_computes() -> None:
    one = record("spawn", "bare", tp=1)
    assert one["output_digest"]
    for method, state in CASES:
        assert record(method, state)["output_digest"] == one["output_digest"], method


def test_parent_state_is_verified_in_parent_and_children() -> None:
    bare = record("spawn", "bare")["parent_state_detail"]
    assert bare["torch_imported"] is False
    assert bare["child_torch_at_entry"] == [False, False]  # a spawned child starts empty
    torch = record("fork", "torch")["parent_state_detail"]
    assert torch["torch_imported"] is True and torch["cuda_initialized"] is False
    assert torch["child_torch_at_entry"] == [True, True]  # a forked child inherits the import
    assert torch["child_bad_fork"] == [False, False]


def test_forkserver_preload_is_verified_in_the_server() -> None:
    plain, preload = record("forkserver", "bare"), record("forkserver-preload", "bare")
    assert plain["forkserver"]["torch_loaded"] is False
    assert preload["forkserver"]["torch_loaded"] is True and preload["forkserver"]["preload"] == ["torch"]
    assert {p["role"] for p in preload["processes"]} >= {"forkserver"}
    warm = measure("--method", "forkserver", "--forkserver", "warm", "--tp", "1")
    assert warm["status"] == "ok" and warm["forkserver"]["state"] == "warm"


def test_forked_ranks_share_pages_that_spawned_ranks_own() -> None:
    """Why PSS and USS, not RSS: a forked rank's RSS counts the parent's torch pages it shares."""
    fork = [p for p in record("fork", "torch")["processes"] if p["role"] == "rank"]
    spawn = [p for p in record("spawn", "bare")["processes"] if p["role"] == "rank"]
    for f, s in zip(fork, spawn):
        assert f["uss_mib"] < 0.5 * s["uss_mib"]
        assert f["uss_mib"] < 0.5 * f["rss_mib"]


def test_device_states_are_not_applicable_without_a_gpu() -> None:
    rec = measure("--method", "fork", "--parent-state", "device-initialized", "--device", "cpu")
    assert rec["status"] == "skipped" and rec["parent_state"] == "not-applicable"
    assert "CUDA" in rec["error"]


def test_repeats_give_samples_and_spread() -> None:
    rec = measure("--method", "fork", "--parent-state", "torch", "--tp", "1", "--repeat", "3")
    assert rec["runs_ok"] == 3 and len(rec["samples"]["time_to_ready_s"]) == 3
    st = rec["stats"]["time_to_ready_s"]
    assert st["n"] == 3 and st["median"] == pytest.approx(rec["time_to_ready_s"])


def test_a_restart_as_a_user_pays_it_and_where_each_cold_start_ran() -> None:
    """Exec to ready holds the parent's own interpreter start and imports (the start request comes
    after them); every cold start says when and on which boot it ran; host memory is read again
    after decoding and after the parent's gc.collect()."""
    rec = record("spawn", "bare")
    for cold in rec["cold_starts"]:
        assert cold["exec_to_ready_s"] > cold["time_to_ready_s"] > 0
        assert cold["started_at"].endswith("+00:00")
        assert cold["host"]["boot_id"] and cold["host"]["gpu_uuids"] == []
        assert cold["phases"]["phase.ready.rank1"] <= cold["time_to_ready_s"] + 1e-9
    assert rec["exec_to_ready_s"] == pytest.approx(statistics.median(rec["samples"]["exec_to_ready_s"]))
    for proc in rec["processes"]:
        for when in ("after_decode", "after_gc"):
            assert 0 < proc[f"uss_{when}_mib"] <= proc[f"pss_{when}_mib"] <= proc[f"rss_{when}_mib"]
    assert rec["group"]["pss_after_gc_mib"] == pytest.approx(sum(p["pss_after_gc_mib"] for p in rec["processes"]))


def test_warmup_starts_are_made_first_and_kept_apart() -> None:
    rec = measure("--method", "fork", "--parent-state", "torch", "--tp", "1", "--repeat", "2", "--warmup-starts", "1")
    assert rec["runs"] == 2 and len(rec["cold_starts"]) == 2 and len(rec["samples"]["time_to_ready_s"]) == 2
    assert len(rec["warmups"]) == 1 and rec["warmups"][0]["status"] == "ok"
    assert rec["warmups"][0]["started_at"] < rec["cold_starts"][0]["started_at"]
    assert rec["warmups"][0]["time_to_ready_s"] not in rec["samples"]["time_to_ready_s"]
