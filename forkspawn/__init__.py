"""forkspawn: what the start method of tensor-parallel inference workers costs.

measure (this harness) -> record (asv results, the suite in `benchmarks/`) -> analyse
(`analysis`) -> report. The harness knows nothing of asv: one cold start in a fresh parent
(`parent`, `measure`), the start methods (`methods`), the engines (`engines`), the probes
(`memory`, `activity`), and the record it writes (`record`, `sidecar`). The map:
docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"
