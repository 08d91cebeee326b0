"""What the server adapters (xinference, vllm_serve) share: a server on 127.0.0.1 (in a process
group of its own: lifecycle.start_group), JSON over HTTP, and tokens/s from timed completions of
fixed length."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from ..clock import now
from ..config import Config
from ..lifecycle import start_group, stop_group  # noqa: F401 (a server's group, offered here with the rest)
from ..record import Run
from ..tokenizer import sample_prompt
from .decode import decode_rates

HTTP_TIMEOUT_S = 600.0


def http_json(url: str, method: str = "GET", body: dict | None = None, headers: dict[str, str] | None = None,
              timeout: float = HTTP_TIMEOUT_S) -> Any:
    """One JSON request; an HTTP error status is a RuntimeError naming the request and the reply."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        path = url.split("/", 3)[-1]
        raise RuntimeError(f"{method} /{path}: HTTP {exc.code}: {detail}") from None
    return json.loads(text) if text.strip() else {}


def wait_answering(proc: subprocess.Popen, url: str, timeout: float, what: str) -> None:
    """Poll GET `url` until it answers; fail early if the server exits."""
    deadline = now() + timeout
    while now() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            http_json(url, timeout=5)
            return
        except (OSError, RuntimeError, ValueError):
            time.sleep(0.2)
    raise TimeoutError(f"{what} did not answer within {timeout:g} s")


def completion_throughput(run: Run, complete: Callable[[str, int], int], vocab: int, config: Config,
                          block: int = 1) -> None:
    """tokens/s per batch size (decode.decode_rates, `block` too): `batch` concurrent completions of
    fixed length; `complete(prompt, tokens)` returns the output tokens the server produced."""
    seed = 0

    def timed(batch: int, tokens: int) -> float:
        nonlocal seed
        prompts = [sample_prompt(16, seed * 1000 + i, vocab) for i in range(batch)]
        seed += 1
        start = now()
        with ThreadPoolExecutor(batch) as pool:
            got = list(pool.map(lambda p: complete(p, tokens), prompts))
        took = now() - start
        if any(g != tokens for g in got):
            raise ValueError(f"asked for {tokens} output tokens, got {sorted(set(got))}: fixed lengths not honoured")
        return took

    decode_rates(run, timed, config, block)


def one_line(exc: object) -> str:
    return " ".join(str(exc).split())[:500]
