"""The one clock every process stamps phases on.

`time.monotonic()` is CLOCK_MONOTONIC on Linux: system-wide, so stamps taken in the parent and
in every worker share one time axis, and immune to wall-clock adjustments.
"""

from time import monotonic as now

__all__ = ["now"]
