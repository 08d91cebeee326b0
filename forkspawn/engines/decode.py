"""tokens/s of a real engine by the difference method, shared by every engine adapter.

An engine exposes no single decode step, only whole generation requests. Per batch size,
`timed(batch, tokens)` runs `batch` requests of exactly `tokens` output tokens on fresh prompts
(a repeated prompt would hit the prefix cache) and returns the seconds they took, or raises
ValueError if the engine did not honour the fixed length.

One *window* is a pair of requests, a short one of 1 + decode_steps // 8 tokens and a long one
of decode_steps more, timed back to back: their difference is decode_steps decode steps, with
prefill, the first steps and the request overhead cancelled. A cold start times
`decode_windows` windows per batch size (after one warm-up request), so a configuration's rate
rests on decode_windows x cold starts windows of decode_steps steps each (thousands of steps on
a GPU): a cold start's rate is the median of its windows (the record's `tokens_per_s`, one
sample per cold start), and the record pools every window too (`window_tokens_per_s`). A window whose difference
is not positive (a scheduler tick or, on a loaded CPU, another process delayed its short
request) measured nothing and is dropped, with a note; a batch with fewer than two windows left
has no rate, and the notes say why (the engine worked: it is not a failure).

Where the adapter can see the engine's steps (`step_gaps`: the seconds between the engine's
outputs during the last request, as the calling process received them), each window's long
request also leaves its step times, as the 10th, 50th and 90th percentiles in milliseconds
(`Run.window_step_ms`): a start whose steps jump between two speeds shows it there.

An engine that decodes the whole batch in blocks of `block` steps and answers a request only at
the end of a block (Xinference's Transformers engine: 16) makes a window span whole blocks: it
times decode_steps steps only where decode_steps is a multiple of `block`. Otherwise nothing is
timed and the notes say why.
"""

from __future__ import annotations

import statistics
from typing import Callable

from .. import vocabulary as vocab
from ..config import Config
from ..record import Run

MIN_WINDOWS = 2  # windows that must remain for a rate


def decode_rates(run: Run, timed: Callable[[int, int], float], config: Config, block: int = 1,
                 step_gaps: Callable[[], list[float]] | None = None) -> None:
    """Fill run.decode_windows, run.tokens_per_s and run.step_latency_s (and with `step_gaps`,
    run.window_step_ms) per batch size of `config`."""
    steps = config.decode_steps
    short = 1 + steps // 8
    if steps % block:
        run.notes += [f"tokens/s at batch {batch} not measured: the engine decodes in blocks of {block} steps "
                      f"and answers at a block's end; --decode-steps must be a multiple of {block}, got {steps}"
                      for batch in config.batches]
        return

    def window(batch: int) -> float:
        before = timed(batch, short)  # the short request first, then the long one
        took = timed(batch, short + steps)
        if step_gaps and len(gaps := step_gaps()) >= 2:
            tenths = statistics.quantiles(gaps, n=10, method="inclusive")
            run.window_step_ms.setdefault(batch, []).append(
                [round(1000 * x, 4) for x in (tenths[0], statistics.median(gaps), tenths[-1])])
        return took - before

    for batch in config.batches:
        try:
            timed(batch, max(1, config.warmup_steps))
            diffs = [window(batch) for _ in range(config.decode_windows)]
        except ValueError as exc:
            run.notes.append(f"{vocab.decode_not_measured(batch)}: {exc}")
            continue
        rates = [batch * steps / d for d in diffs if d > 0]
        if len(rates) < len(diffs):
            run.notes.append(f"tokens/s at batch {batch}: {len(diffs) - len(rates)} of {len(diffs)} windows "
                             "measured no time (the short request took as long as the long one) and were dropped")
        if len(rates) < min(MIN_WINDOWS, config.decode_windows):
            run.notes.append(f"{vocab.decode_not_measured(batch)}: {len(rates)} of {len(diffs)} windows "
                             f"measured time; raise --decode-steps")
            continue
        run.decode_windows[batch] = rates
        run.tokens_per_s[batch] = statistics.median(rates)
        run.step_latency_s[batch] = batch / run.tokens_per_s[batch]
