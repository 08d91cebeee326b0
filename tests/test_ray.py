"""Ray as a launch path, for real on this CPU machine: a local head on 127.0.0.1, ranks as Ray
actors, verified from /proc, Ray's own processes measured, and nothing of Ray left running."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest
from conftest import measure

pytest.importorskip("ray")

RAY_NAMES = ("raylet", "gcs_server")


def ray_processes_since(t0: float) -> list[str]:
    """Ray processes started after `t0` (other Ray clusters on the machine are not ours)."""
    found = []
    for p in psutil.process_iter(["name", "cmdline", "create_time"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if p.info["create_time"] >= t0 and (p.info["name"] in RAY_NAMES or cmd.startswith("ray::")
                                                or "ray/dashboard" in cmd or "ray/_private" in cmd):
                found.append(f"{p.info['name']}[{p.pid}]")
        except psutil.Error:
            pass
    return found


def test_ranks_as_ray_actors_are_verified_measured_and_torn_down() -> None:
    t0 = time.time()
    # TMPDIR=/tmp as under `make bench`: the measurement's own temp dir is then as long as it gets
    # there, and the head's socket paths must still fit Ray's 107 bytes
    rec = measure("--method", "ray", "--parent-state", "bare", "--tp", "2", env={"TMPDIR": "/tmp"})
    assert rec["status"] == "ok", rec["error"]
    assert rec["method_used"] == "ray", "each rank's parent in /proc is a raylet"
    ranks = [p for p in rec["processes"] if p["role"] == "rank"]
    assert [p["started_by"] for p in ranks] == ["ray", "ray"]

    # joining the cluster is a phase of its own, before the actors' processes run our code
    for rank in (0, 1):
        names = [p["name"] for p in rec["phases"] if p["rank"] == rank]
        assert names[:2] == ["start_requested", "cluster_joined"] and names[-1] == "ready"

    # Ray's own processes are part of the group's memory, each named after its role
    roles = {p["role"] for p in rec["processes"]}
    assert {"ray-gcs", "ray-raylet"} <= roles, roles
    ray_uss = sum(p["uss_mib"] for p in rec["processes"] if p["role"].startswith("ray-"))
    assert rec["samples"]["mem.ray.uss_mib"] == [pytest.approx(ray_uss)]
    assert all(v > 0 for v in rec["tokens_per_s"].values())
    assert any("local Ray head started" in n for n in rec["notes"])
    assert not any("left behind" in n for n in rec["notes"]), rec["notes"]  # the head stopped itself

    assert ray_processes_since(t0) == []
    ours = [d for d in Path("/tmp").glob("forkspawn-*") if d.stat().st_mtime >= t0 and str(d) != os.environ["TMPDIR"]]
    assert ours == [], "temp dirs left behind"


def test_a_cluster_given_by_ray_address_that_does_not_answer_is_a_clear_error() -> None:
    rec = measure("--method", "ray", "--tp", "1", env={"RAY_ADDRESS": "127.0.0.1:9"})
    assert rec["status"] in ("error", "timeout")
    assert "ray" in rec["error"].lower()


def test_engines_without_a_ray_path_are_skipped_with_the_reason() -> None:
    rec = measure("--engine", "xinference", "--method", "ray")
    assert rec["status"] == "skipped" and "no Ray launch path" in rec["error"]
