"""forkspawn: what the start method of tensor-parallel inference workers costs.

measure (this harness) -> record (asv results) -> analyse (`analysis`) -> report.
"""

__version__ = "0.1.0"
