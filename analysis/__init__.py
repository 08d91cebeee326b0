"""Analysis of forkspawn-bench results: asv's result files -> tidy table, charts, capacity plan,
report (the map: docs/ARCHITECTURE.md).

    from analysis import load
    res = load("reports/sample-cpu")      # or .asv/results
    res.table                             # one row per measured value (docs/formats.md)
"""

try:
    from .load import BadInput, Results, load, table
except ModuleNotFoundError as e:  # without pandas only `analysis.precision` (asv only) is usable
    if e.name != "pandas":
        raise

__all__ = ["BadInput", "Results", "load", "table"]
