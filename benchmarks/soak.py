"""Leaks under repetition: a parent starts and tears down a worker group many times."""

from forkspawn.methods import METHODS
from forkspawn.soak import soak_in_fresh_parent

from .common import SUITE


class Soak:
    """Growth of the parent's resources per 100 start/teardown cycles (tiny model, TP=1)."""

    params = [list(METHODS)]
    param_names = ["method"]
    processes = 1
    timeout = 3600

    def setup_cache(self) -> dict:
        if not SUITE.soak_cycles:
            return {}  # not in this profile: setup skips every method
        results = {}
        for m in METHODS:
            SUITE.say(f"soak {m}: {SUITE.soak_cycles} start/teardown cycles")
            results[m] = soak_in_fresh_parent(m, SUITE.soak_cycles)
        return results

    setup_cache.timeout = 7200

    def setup(self, results: dict, method: str) -> None:
        if not results:
            raise NotImplementedError("the soak is not in this profile (FORKSPAWN_PROFILE=full or brief runs it)")

    def track_rss_growth(self, results: dict, method: str) -> float:
        return results[method]["growth_per_100_cycles"]["rss_mib"]

    track_rss_growth.unit = "MiB per 100 cycles"

    def track_fd_growth(self, results: dict, method: str) -> float:
        return results[method]["growth_per_100_cycles"]["fds"]

    track_fd_growth.unit = "descriptors per 100 cycles"

    def track_shm_growth(self, results: dict, method: str) -> float:
        return results[method]["growth_per_100_cycles"]["shm_entries"]

    track_shm_growth.unit = "/dev/shm entries per 100 cycles"

    if SUITE.on_gpu:
        def track_gpu_growth(self, results: dict, method: str) -> float:
            return results[method]["growth_per_100_cycles"]["gpu_mib"]

        track_gpu_growth.unit = "MiB per 100 cycles"
