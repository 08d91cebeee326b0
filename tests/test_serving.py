"""Engine servers that never become ready: a clear error, and the whole server stopped
(forkspawn/engines/serving.py, shared by the Xinference and `vllm serve` adapters)."""

from __future__ import annotations

import socket
import sys

import psutil
import pytest

from forkspawn import machine
from forkspawn.engines import serving

# A "server" that forks a worker and never answers, like an engine stuck loading its model.
SILENT = "import os, time; os.fork(); time.sleep(600)"


def test_a_server_that_never_answers_times_out_and_is_stopped() -> None:
    port = machine.free_port()
    proc = serving.start_group([sys.executable, "-c", SILENT], env={})
    try:
        with pytest.raises(TimeoutError, match="test server did not answer within 1 s"):
            serving.wait_answering(proc, f"http://127.0.0.1:{port}/health", timeout=1, what="test server")
        members = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    finally:
        serving.stop_group(proc)
    assert len(members) == 2 and not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                                         for pid in members)


def test_a_server_that_cannot_bind_its_port_is_reported() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        bind = f"import socket; socket.socket().bind(('127.0.0.1', {port}))"
        proc = serving.start_group([sys.executable, "-c", bind], env={})
        try:
            with pytest.raises(RuntimeError, match="test server exited with status 1"):
                serving.wait_answering(proc, f"http://127.0.0.1:{port}/nothing", timeout=30, what="test server")
        finally:
            serving.stop_group(proc)


def test_vllm_serve_says_which_method_ran_and_why_it_differs() -> None:
    """`vllm serve` asked for fork: the record's note gives the method /proc showed and, where it
    is not the one asked, the reason (vLLM's CPU platform; elsewhere vLLM's logged reason)."""
    from forkspawn.engines.vllm_serve import method_note

    env = "VLLM_WORKER_MULTIPROC_METHOD=fork in the server's environment (vLLM's CLI picks spawn only where it is unset)"
    assert method_note("fork", "fork", False, []) == f"{env}: the engine core and workers were started with fork"
    assert method_note("fork", "spawn", True, []) == (
        f"{env}, but vLLM started its processes with spawn (vLLM's CPU platform sets spawn in "
        "CpuPlatform.check_and_update_config, and no override reaches the server's own interpreter)")
    assert method_note("fork", "spawn", False, ["vLLM forced spawn: CUDA is initialized"]).endswith(
        "with spawn (vLLM forced spawn: CUDA is initialized)")
    assert method_note("fork", "spawn", False, []).endswith("(the server's log gives no reason)")
