"""How a start method is applied to a worker group, per kind of engine.

- Our own workload (engines/torch_tp.py, the quality and soak tools): `context()` turns a method
  into a multiprocessing context, or for `ray` an equivalent whose processes are Ray actors
  (ray_cluster.py, which also starts the run's cluster: `ray_cluster.for_run`). The forkserver is
  process-global in CPython, which is one reason every measurement runs in a fresh parent
  interpreter: its forkserver is always the one this measurement configured.
- vLLM (the offline engine, `vllm serve`, and vLLM inside Xinference): the variable vLLM reads,
  `vllm_environment()`, and its executor, `vllm_backend()`; vLLM may replace the method on its own,
  which `VllmPlatformWatch` sees happen in the platform's config hook (and, as the labelled CPU
  override, undoes).

What really happened is read from the processes afterwards: verify.py.
"""

from __future__ import annotations

import inspect
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
from typing import Any

from . import METHODS, MULTIPROCESSING, PRELOAD, RAY, SPAWN
from .verify import maps_torch

VLLM_METHOD_ENV = "VLLM_WORKER_MULTIPROC_METHOD"


def context(method: str, forkserver_state: str = "fresh") -> tuple[Any, dict | None]:
    """The context for `method`, and for forkserver methods a description of the server."""
    if method not in METHODS:
        raise ValueError(f"unknown start method {method!r}; valid: {', '.join(METHODS)}")
    if method == RAY:
        from ..ray_cluster import RayContext

        return RayContext(), None
    if MULTIPROCESSING[method] != "forkserver":
        return multiprocessing.get_context(MULTIPROCESSING[method]), None
    ctx = multiprocessing.get_context("forkserver")
    # The server imports these before it forks anyone; CPython silently ignores an ImportError
    # here, which is why the preload is verified afterwards (forkserver_info).
    preload = list(PRELOAD.get(method, ()))
    server = multiprocessing.forkserver._forkserver
    if server._forkserver_pid is not None:  # a parent that starts groups again (soak) reuses it
        if server._preload_modules != preload:
            raise RuntimeError(f"a forkserver preloading {server._preload_modules} already runs in this parent")
        return ctx, {"state": "warm", "preload": preload}
    ctx.set_forkserver_preload(preload)
    if forkserver_state == "warm":
        multiprocessing.forkserver.ensure_running()
    return ctx, {"state": forkserver_state, "preload": preload}


def forkserver_info(info: dict | None) -> dict | None:
    """Complete a forkserver description with its PID and whether torch is really loaded there."""
    if info is None:
        return None
    pid = multiprocessing.forkserver._forkserver._forkserver_pid
    return {**info, "pid": pid, "torch_loaded": pid is not None and maps_torch(pid)}


def vllm_method(method: str) -> str:
    """What vLLM's multiprocessing (its engine core and mp workers) is asked for: the method's own
    multiprocessing start method; with Ray, spawn, which vLLM forces there anyway."""
    return MULTIPROCESSING[method] or SPAWN


def vllm_environment(method: str) -> dict[str, str]:
    """The environment a vLLM engine (and an engine that runs vLLM) is started with for `method`."""
    return {VLLM_METHOD_ENV: vllm_method(method)}


def vllm_backend(method: str, executor: str | None = None) -> str | None:
    """vLLM's `distributed_executor_backend` for `method`: its Ray executor for `ray`, else
    `executor` where a labelled variant asks for one (`mp`: a worker process even at TP 1, the
    process layout of TP > 1), else None: vLLM's own default (`uni` at TP 1, `mp` above)."""
    return "ray" if method == RAY else executor


class VllmPlatformWatch:
    """Watch (and with `override`, undo) what vLLM's platform does to the start method in its
    config hook (`check_and_update_config`): its CPU platform always sets spawn. Install before
    `LLM(...)`, uninstall after; `notes()` says what happened."""

    def __init__(self, method: str, override: bool):
        self.method, self.override = vllm_method(method), override
        self.forced: str | None = None
        self.cls = self.original = None

    def install(self) -> None:
        from vllm.platforms import current_platform

        self.cls = type(current_platform)
        self.own = "check_and_update_config" in self.cls.__dict__  # else inherited: uninstall deletes ours
        self.original = inspect.getattr_static(self.cls, "check_and_update_config")
        original, watch = self.original.__func__, self

        def check_and_update_config(cls, vllm_config) -> None:
            original(cls, vllm_config)
            after = os.environ.get(VLLM_METHOD_ENV)
            if after != watch.method:
                watch.forced = after
                if watch.override:
                    os.environ[VLLM_METHOD_ENV] = watch.method

        self.cls.check_and_update_config = classmethod(check_and_update_config)

    def uninstall(self) -> None:
        if self.cls is None:
            return
        if self.own:
            self.cls.check_and_update_config = self.original
        else:
            del self.cls.check_and_update_config

    def notes(self) -> list[str]:
        where = f"{self.cls.__name__}.check_and_update_config"
        if self.forced is None:
            return [f"{where} kept {VLLM_METHOD_ENV}={self.method}"] + (["override requested: nothing to undo"] * self.override)
        if self.override:
            return [f"override: {self.method} restored after {where} set {VLLM_METHOD_ENV}={self.forced}"]
        return [f"{where} set {VLLM_METHOD_ENV}={self.forced} (asked: {self.method})"]
