"""Engine adapters, one module each, imported only when used (engines live in separate environments).

An adapter module provides:
- `run_once(config, parent_state) -> Run`: start the engine's worker group once inside the
  fresh parent, measure it, tear it down (nothing may be left running);
- `unavailable() -> str | None`: why the engine cannot run in this environment, or None.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..config import ENGINES

_MODULES = {"torch-tp": "torch_tp", "vllm": "vllm", "vllm-serve": "vllm_serve", "xinference": "xinference"}
assert set(_MODULES) == set(ENGINES)


def adapter(engine: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{_MODULES[engine]}")
