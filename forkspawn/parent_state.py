"""Put the fresh parent interpreter into the requested state, then verify what state it is in.

`device-queried` is the incident's likely path: `torch.cuda.is_available()` initialises the
CUDA driver API in the parent (so a later fork is poisoned), yet `torch.cuda.is_initialized()`
stays False, so a tool that checks only that flag keeps fork. With
PYTORCH_NVML_BASED_CUDA_CHECK=1 (`cuda_check="nvml"`) torch asks NVML instead and fork stays safe.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .config import Config

NVML_CHECK_ENV = "PYTORCH_NVML_BASED_CUDA_CHECK"


def environment(config: Config) -> dict[str, str]:
    """Environment changes the parent interpreter must start with (torch reads them at call time)."""
    return {NVML_CHECK_ENV: "1"} if config.cuda_check == "nvml" else {}


def prepare(config: Config) -> dict[str, Any]:
    """Enter `config.parent_state`; return the verified facts (see `verify`)."""
    queried = None
    if config.parent_state != "bare":
        import torch
    if config.parent_state == "device-queried":
        queried = torch.cuda.is_available()
    elif config.parent_state == "device-initialized":
        torch.cuda.init()
        torch.zeros(1, device="cuda")  # a real context, as an engine that touched the GPU would hold
    return verify(queried)


def verify(queried: bool | None = None) -> dict[str, Any]:
    """What the parent is, read from the interpreter right before it starts workers."""
    torch_imported = "torch" in sys.modules
    initialized = bool(torch_imported and sys.modules["torch"].cuda.is_initialized())
    if initialized:
        state = "device-initialized"
    elif queried is not None:
        state = "device-queried"
    else:
        state = "torch" if torch_imported else "bare"
    return {
        "verified": state,
        "torch_imported": torch_imported,
        "cuda_initialized": initialized,
        "cuda_available_called": queried is not None,
        "cuda_available": queried,
        "nvml_based_cuda_check": os.environ.get(NVML_CHECK_ENV) == "1",
    }
