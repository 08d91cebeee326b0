"""The one clock every process stamps phases on.

`time.monotonic()` is CLOCK_MONOTONIC on Linux: system-wide, so stamps taken in the parent and
in every worker share one time axis, and immune to wall-clock adjustments.

The process that starts a fresh parent interpreter (measure.run_in_fresh_parent) stamps the
moment right before its exec into `EXEC_AT_ENV`: `since_exec` is then how long a user's restart
has taken, interpreter start and imports included.
"""

import os
from time import monotonic as now

__all__ = ["EXEC_AT_ENV", "now", "since_exec"]
EXEC_AT_ENV = "FORKSPAWN_EXEC_AT"


def since_exec(at: float | None = None) -> float | None:
    """Seconds from the fresh parent's exec to `at` (default: now), or None where no exec was
    stamped (a parent not started by measure.run_in_fresh_parent)."""
    try:
        start = float(os.environ[EXEC_AT_ENV])
    except (KeyError, ValueError):
        return None
    return (now() if at is None else at) - start
