"""Start methods, the one concept the suite exists for: their names, what each means, how each is
applied to a worker group of every engine (`apply`), and how what really happened is read back
from the processes (`verify`).

- `fork`, `spawn`, `forkserver`: CPython's multiprocessing start methods, as named there.
- `forkserver-preload`: a forkserver that imported torch (never touching a device) before it
  forks anyone.
- `ray`: each rank a Ray actor, in a worker process its raylet exec'd (ray_cluster.py).

An engine adapter declares the names it can start with (`Adapter.METHODS`, a subset of
`METHODS`) and calls `apply` for the rest: a multiprocessing context for our own workload, vLLM's
variable and executor (and the labelled CPU override), the launch environment of an engine that
runs vLLM inside a server. asv method labels of variants (`fork-eager`, `fork-override`, ...) name
a method and an option of the engine: the vocabulary's label codec reads them
(`vocabulary.split_method`).

This module is standard library only (the analysis and the configuration import it); `apply`
and `verify` import multiprocessing, psutil and the engines' own packages when used.
"""

from __future__ import annotations

METHODS = ("fork", "spawn", "forkserver", "forkserver-preload", "ray")
FORK, SPAWN, FORKSERVER, FORKSERVER_PRELOAD, RAY = METHODS
# The multiprocessing start method each runs its processes with (None: not multiprocessing's)
MULTIPROCESSING = {FORK: "fork", SPAWN: "spawn", FORKSERVER: "forkserver", FORKSERVER_PRELOAD: "forkserver", RAY: None}
PRELOAD = {FORKSERVER_PRELOAD: ("torch",)}  # modules a forkserver imports before it forks anyone

