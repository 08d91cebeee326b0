"""The asv suite: `common.py` is its glue (settings resolved once into `SUITE`, the grid classes,
one measurement per point per asv run, `prefill`); `torch_tp`, `engines`, `soak` and `quality`
are thin classes over it. The map: docs/ARCHITECTURE.md."""
