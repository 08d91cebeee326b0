"""The contract of an engine adapter module (`Adapter`), apart from the table of adapters in
`__init__.py`, so that an adapter imports what it shares without importing the package that
imports every adapter.

A module cannot declare that it implements a Protocol, so tests/test_imports.py checks that
each adapter binds every member.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..config import Config
    from ..record import Run


class Adapter(Protocol):
    """What an engine adapter module provides."""

    # The start methods (config.METHODS) its workers can be started with: `measure` records any
    # other as skipped before a parent interpreter starts, and asv's grids list these.
    METHODS: tuple[str, ...]

    def run_once(self, config: Config, parent_state: dict[str, Any]) -> Run:
        """Start the engine's worker group once inside the fresh parent, measure it, tear it down
        (nothing may be left running)."""

    def unavailable(self) -> str | None:
        """Why the engine cannot run in this environment, or None."""

    def engine_version(self) -> str | None:
        """The engine's version, as the record's `engine_version` carries it."""

    def ray_head(self, config: Config) -> dict[str, Any]:
        """What a local Ray head started for `config` needs (ray_cluster.cluster's env, resources);
        `no_ray_head` for an engine that asks nothing."""


def no_ray_head(config: Config) -> dict[str, Any]:
    """The `ray_head` of an adapter that asks nothing of a Ray head."""
    return {}
