"""Cold vs warm page cache: real cold starts with the checkpoint evicted, alternating with warm ones."""

from __future__ import annotations

from typing import Any

from ..pagecache import drop_from_cache, files_of, page_cache_state, torch_library_files


def cold_vs_warm(model: str = "tiny", repeat: int = 3, method: str = "spawn", drop_torch: bool = False) -> dict[str, Any]:
    """Time to ready of real cold starts (`measure.run_in_fresh_parent`) with the checkpoint
    (and optionally torch's libraries) evicted before each start, alternating with warm starts."""
    from ..checkpoint import resolve_checkpoint
    from ..config import Config
    from ..measure import resolve, run_in_fresh_parent
    from ..stats import summarize

    config = resolve(Config(model=model, method=method, parent_state="bare", repeat=1, decode_steps=1, batches=(1,)))
    checkpoint = resolve_checkpoint(config.model, config.cache_path())
    files = files_of(checkpoint) + (torch_library_files() if drop_torch else [])
    runs: dict[str, list[float]] = {"cold": [], "warm": []}
    states: dict[str, list[float]] = {"cold": [], "warm": []}
    for i in range(repeat):
        for kind in (("cold", "warm") if i % 2 == 0 else ("warm", "cold")):
            if kind == "cold":
                for f in files:
                    drop_from_cache(f)
            else:
                for f in files:
                    f.read_bytes()  # make sure: warm means every byte was just read
            states[kind].append(page_cache_state(files)["resident_fraction"])
            run = run_in_fresh_parent(config)
            if run.status != "ok":
                raise RuntimeError(f"{kind} start failed: {run.error}")
            runs[kind].append(run.time_to_ready_s)
    return {"model": model, "method": method, "dropped": "checkpoint" + (" + torch libraries" if drop_torch else ""),
            "bytes": sum(f.stat().st_size for f in files), "resident_before": states,
            "cold_s": summarize(runs["cold"]), "warm_s": summarize(runs["warm"]), "samples": runs}
