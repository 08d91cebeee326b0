"""An engine's decode windows (engines/decode.py) and how a record pools them (record.build_record)."""

from __future__ import annotations

import itertools

import pytest

from forkspawn import vocabulary as vocab
from forkspawn.config import Config
from forkspawn.engines.decode import decode_rates
from forkspawn.record import Run, build_record


def engine(step_s: float, overhead_s: float, jitter: list[float]):
    """A stand-in engine: a request of `tokens` takes overhead + tokens * step, plus the next jitter."""
    extra = itertools.cycle(jitter)

    def timed(batch: int, tokens: int) -> float:
        return overhead_s + tokens * step_s + next(extra)

    return timed


def test_windows_cancel_the_request_overhead_and_pool_across_cold_starts() -> None:
    config = Config(engine="vllm", batches=(1, 4), decode_steps=64, decode_windows=5)
    runs = []
    for step in (0.010, 0.011):  # two cold starts decoding at 100 and ~90.9 steps/s
        run = Run()
        decode_rates(run, engine(step, overhead_s=0.5, jitter=[0.0]), config)
        assert run.tokens_per_s[1] == pytest.approx(1 / step) and run.tokens_per_s[4] == pytest.approx(4 / step)
        assert run.step_latency_s[1] == pytest.approx(step) and len(run.decode_windows[1]) == 5
        runs.append(run)
    rec = build_record(config, runs, machine={}, versions={})
    # one sample per cold start, as for every other metric: the interval that asv and the record
    # give is across cold starts; the windows are kept apart, pooled and per cold start
    assert rec.samples[vocab.tokens_per_s(1)] == pytest.approx([100, 1 / 0.011])
    assert rec.stats[vocab.tokens_per_s(1)]["n"] == 2
    assert rec.samples[vocab.step_latency_s(4)] == pytest.approx([0.010, 0.011])
    assert len(rec.samples[vocab.window_tokens_per_s(1)]) == 10, "every window of every cold start"
    assert [len(c["decode_windows"]["1"]) for c in rec.cold_starts] == [5, 5]
    assert rec.cold_starts[1]["tokens_per_s"]["4"] == pytest.approx(4 / 0.011)


def test_step_gaps_give_each_window_its_step_time_percentiles() -> None:
    """A long request whose steps alternate between 8 and 17 ms: the window's 10th and 90th
    percentiles show both speeds, its median one of them."""
    config = Config(engine="vllm", batches=(1,), decode_steps=40, decode_windows=2)
    gaps = [0.008, 0.017] * 20
    run = Run()
    decode_rates(run, engine(0.01, 0.1, jitter=[0.0]), config, step_gaps=lambda: gaps)
    assert len(run.window_step_ms[1]) == 2
    p10, p50, p90 = run.window_step_ms[1][0]
    assert p10 == pytest.approx(8.0) and p90 == pytest.approx(17.0) and p50 == pytest.approx(12.5)
    assert build_record(config, [run], machine={}, versions={}).cold_starts[0]["window_step_ms"]["1"][1] == [p10, p50, p90]


def test_a_window_that_measured_no_time_is_dropped_and_too_few_leave_the_rate_unresolved() -> None:
    config = Config(engine="vllm", batches=(1,), decode_steps=8, decode_windows=3)
    # the warm-up, then (short, long) pairs: the first pair's short request was delayed past its long one
    run = Run()
    decode_rates(run, engine(0.01, 0.1, jitter=[0.0, 0.5, 0.0] + [0.0] * 4), config)
    assert len(run.decode_windows[1]) == 2 and any("1 of 3 windows measured no time" in n for n in run.notes)
    noisy = Run()
    decode_rates(noisy, engine(0.01, 0.1, jitter=[0.0, 0.5, 0.0, 0.5, 0.0, 0.0, 0.0]), config)
    assert 1 not in noisy.tokens_per_s and any("tokens/s at batch 1 not measured" in n for n in noisy.notes)


def test_an_engine_that_decodes_in_blocks_is_timed_in_whole_blocks_only() -> None:
    """Xinference's Transformers engine runs 16 decode rounds per scheduler step and answers at a
    step's end (the first token comes with the prefill): only a multiple of 16 steps is timed."""
    step, block = 0.01, 16

    def timed(batch: int, tokens: int) -> float:
        return 0.2 + block * max(1, -(-(tokens - 1) // block)) * step

    for steps in (16, 32, 192):
        run = Run()
        decode_rates(run, timed, Config(engine="xinference", batches=(1,), decode_steps=steps), block)
        assert run.tokens_per_s[1] == pytest.approx(1 / step), steps
    run = Run()
    decode_rates(run, timed, Config(engine="xinference", batches=(1, 16), decode_steps=8), block)
    assert run.tokens_per_s == {} and run.decode_windows == {}
    assert [n.split(":")[0] for n in run.notes] == ["tokens/s at batch 1 not measured", "tokens/s at batch 16 not measured"]
    assert "--decode-steps must be a multiple of 16, got 8" in run.notes[0]
