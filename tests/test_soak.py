"""The soak's short form: a parent that starts and tears down groups again and again keeps its
descriptors and leaves no child behind, under every start method."""

from __future__ import annotations

import pytest

from forkspawn.config import METHODS
from forkspawn.soak import soak_in_fresh_parent


@pytest.mark.parametrize("method", METHODS)
def test_repeated_start_and_teardown_leaks_no_descriptor_or_process(method: str) -> None:
    result = soak_in_fresh_parent(method, cycles=4)
    assert result["failures"] == []
    assert len(result["per_cycle"]) == 4
    # what stays is the parent's own helpers (resource tracker, forkserver), never a rank
    assert len({row["children"] for row in result["per_cycle"]}) == 1, "ranks outlived their teardown"
    assert result["last"]["fds"] == result["first"]["fds"]
    assert set(result["growth_per_100_cycles"]) >= {"rss_mib", "fds", "shm_entries", "threads"}
