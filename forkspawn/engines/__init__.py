"""Engine adapters, one module each, imported only when used (engines live in separate environments).

Every adapter module is an `Adapter` (contract.py): `adapter(engine)` imports the one asked for.
"""

from __future__ import annotations

import importlib
from typing import cast

from ..config import ENGINES
from .contract import Adapter

__all__ = ["Adapter", "adapter"]

_MODULES = {"torch-tp": "torch_tp", "vllm": "vllm", "vllm-serve": "vllm_serve", "xinference": "xinference"}
assert set(_MODULES) == set(ENGINES)


def adapter(engine: str) -> Adapter:
    return cast(Adapter, importlib.import_module(f"{__name__}.{_MODULES[engine]}"))
