"""Self-benchmarks of the harness (issue 9, docs/measurement-quality.md): cheap, each class
measured once per asv run in `setup_cache`, every track returning its samples so that asv stores
a median and a 99% CI.

- HarnessOverhead: harness time-to-ready of a trivial rank minus a stdlib-only script's started
  from a parent of the same size, per method (ms; goal: at most max(1 ms, 1% of the bare
  start)), and what that parent's size adds to the script's start from a minimal parent.
  forkserver-preload is left out here: its server imports torch, seconds per start
  (`forkspawn quality overhead`).
- MemoryProbes: the cost of one memory.probe over a parent and two torch-importing ranks (ms),
  and its disagreement with a direct parse of /proc/PID/smaps_rollup (MiB, worst process).
"""

from forkspawn import quality

from .common import SUITE

# rounds of 3 fresh interpreters per method, as many as the profile's least cold starts (2 at least):
# 1 to 3 s per method here
OVERHEAD_REPEAT = max(2, SUITE.profile.cold_starts["torch-tp"][0])


class HarnessOverhead:
    params = [list(quality.CHEAP_METHODS)]
    param_names = ["method"]
    timeout = 600

    def setup_cache(self):
        SUITE.say(f"quality: harness overhead, {OVERHEAD_REPEAT} rounds per method")
        return {m: quality.overhead(m, repeat=OVERHEAD_REPEAT) for m in quality.CHEAP_METHODS}

    setup_cache.timeout = 600

    def track_overhead(self, cache, method):
        r = cache[method]
        return {"samples": [h * 1e3 - b * 1e3 for h, b in zip(r["samples"]["harness_s"], r["samples"]["bare_s"])], "number": 1}

    track_overhead.unit = "ms"

    def track_parent_size(self, cache, method):
        r = cache[method]
        return {"samples": [b * 1e3 - m * 1e3 for b, m in zip(r["samples"]["bare_s"], r["samples"]["minimal_s"])], "number": 1}

    track_parent_size.unit = "ms"

    def track_bare_time_to_ready(self, cache, method):
        return {"samples": [b * 1e3 for b in cache[method]["samples"]["bare_s"]], "number": 1}

    track_bare_time_to_ready.unit = "ms"


class MemoryProbes:
    timeout = 600

    def setup_cache(self):
        SUITE.say("quality: memory probe cost and readers")
        return quality.probes(repeat=20, tp=2, import_torch=True)

    setup_cache.timeout = 600

    def track_probe_cost(self, cache):
        return {"samples": [t * 1e3 for t in cache["probe"]["samples"]["probe_s"]], "number": 1}

    track_probe_cost.unit = "ms"

    def track_probe_vs_rollup(self, cache, kind):
        return max(abs(r[f"{kind}_mib"]["probe_minus_rollup"]) for r in cache["readers"])

    track_probe_vs_rollup.params = ["rss", "pss", "uss"]
    track_probe_vs_rollup.param_names = ["kind"]
    track_probe_vs_rollup.unit = "MiB"

    def track_parent_rss_growth(self, cache):
        return cache["probe"]["parent_rss_delta_mib"]

    track_parent_rss_growth.unit = "MiB"
