"""Measuring the measurement (issue 9): harness overhead, probe cost, validity, page cache, precision.

Every function reuses the harness itself (launcher.WorkerGroup, methods.context, memory.probe,
stats.summarize) and compares it with something that does not share its code: a stdlib-only
script, a direct parse of /proc, `python -X importtime`, `nvidia-smi`, the kernel's mincore().

By concern: `harness.py` (harness overhead, import tax, -X importtime), `probing.py` (probe
cost, perturbation and validity), `coldstart.py` (cold vs warm page cache; the page-cache state
itself is `forkspawn.pagecache`'s), `cli.py` (`forkspawn quality`'s options and tables); the precision analysis of a
records file is `analysis.precision`'s (its names are found here too). The trivial rank and the
harness's cold start live in `trivial.py`, which spawned children import. Everything heavier
than the standard library is imported inside the functions.

CLI: forkspawn quality {overhead,probes,validity,pagecache,precision RECORDS.jsonl}
     [--repeat N] [--methods ...] [--json]
"""

from __future__ import annotations

from typing import Any

from ..pagecache import (
    drop_from_cache,
    files_of,
    page_cache_state,
    resident_fraction,
    torch_library_files,
    warm_page_cache,
)
from .coldstart import cold_vs_warm
from .harness import (
    BARE_SCRIPT,
    CHEAP_METHODS,
    HARNESS_PARENT_IMPORTS,
    METHODS,
    PHASE_IMPORTS,
    import_tax,
    import_validity,
    importtime,
    overhead,
)
from .probing import (
    MIB,
    compare_readers,
    gpu_validity,
    gpu_validity_with_holders,
    nvidia_smi_by_pid,
    probe_cost,
    probes,
    sampler_perturbation,
    smaps_rollup_mib,
    smaps_sum_mib,
)

__all__ = ["BARE_SCRIPT", "CHEAP_METHODS", "HARNESS_PARENT_IMPORTS", "METHODS", "MIB", "PHASE_IMPORTS", "cold_vs_warm",
           "compare_readers", "drop_from_cache", "files_of", "gpu_validity", "gpu_validity_with_holders",
           "import_tax", "import_validity", "importtime", "nvidia_smi_by_pid", "overhead",
           "page_cache_state", "precision", "probe_cost", "probes", "resident_fraction", "sampler_perturbation",
           "smaps_rollup_mib", "smaps_sum_mib", "torch_library_files", "warm_page_cache"]
_PRECISION = ("precision", "resolved", "asv_is_different", "repeats_needed", "HEADLINE_PAIRS", "HEADLINE_METRICS")


def __getattr__(name: str) -> Any:
    """The precision analysis lives in `analysis.precision` (it analyses records); its names are
    found here too, imported only when asked for."""
    if name in _PRECISION:
        from analysis import precision

        return getattr(precision, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
