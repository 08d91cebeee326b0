"""The stopping rule (`stats.settled`) drawn against known distributions: how often it stops
wrongly, how soon it stops rightly. The figures are in docs/measurement-quality.md."""

from __future__ import annotations

import random

from forkspawn.stats import settled

TRIALS = 400


def sequential(rng: random.Random, draw, reference: list[float], least: int, most: int, precision: float) -> tuple[str, int]:
    """Cold starts as `measure` takes them: one at a time until the rule or the cap ends them."""
    samples: list[float] = []
    while len(samples) < most:
        samples.append(draw(rng))
        if reason := settled(samples, reference, least, precision):
            return reason, len(samples)
    return "cap", len(samples)


def lognormal(median: float, sigma: float):
    return lambda rng: median * rng.lognormvariate(0.0, sigma)


def test_equal_configurations_are_almost_never_declared_different() -> None:
    """Same distribution on both sides (a noisy 2-core box: 15% spread): 'resolved' would be a
    false difference. The rule looks after every cold start from the 3rd to the 8th."""
    rng = random.Random(1)
    draw = lognormal(3.0, 0.15)
    false = sum(sequential(rng, draw, [draw(rng) for _ in range(5)], 3, 8, 0.0)[0] == "resolved"
                for _ in range(TRIALS))
    assert false / TRIALS <= 0.02, f"{false} of {TRIALS} equal pairs declared different"


def test_a_large_difference_is_resolved_at_the_least_number_of_cold_starts() -> None:
    """Spawn against fork of our workload (about 15x apart): settled after 3 or 4 of 8 allowed
    (asv's interval of a median of 3 is wide: about [0.35, 1.9] x the median at 15% noise)."""
    rng = random.Random(2)
    fork = lognormal(0.2, 0.15)
    outcomes = [sequential(rng, lognormal(3.0, 0.15), [fork(rng) for _ in range(3)], 3, 8, 0.0) for _ in range(TRIALS)]
    assert all(reason == "resolved" for reason, _ in outcomes)
    assert sum(n == 3 for _, n in outcomes) / TRIALS >= 0.75 and max(n for _, n in outcomes) <= 5


def test_a_small_difference_takes_more_cold_starts_or_ends_at_the_cap() -> None:
    """10% apart under 15% noise: rarely resolved at 3, often unresolved at the cap, never reversed."""
    rng = random.Random(3)
    base = lognormal(3.0, 0.15)
    outcomes = [sequential(rng, lognormal(3.3, 0.15), [base(rng) for _ in range(5)], 3, 8, 0.0) for _ in range(TRIALS)]
    assert sum(reason == "cap" for reason, _ in outcomes) / TRIALS >= 0.5
    assert sum(n == 3 and reason == "resolved" for reason, n in outcomes) / TRIALS <= 0.1


def test_without_a_reference_a_precise_configuration_stops_early_and_a_noisy_one_at_the_cap() -> None:
    rng = random.Random(4)
    quiet = [sequential(rng, lognormal(3.0, 0.01), None, 3, 8, 0.05) for _ in range(TRIALS)]
    noisy = [sequential(rng, lognormal(3.0, 0.5), None, 3, 8, 0.05) for _ in range(TRIALS)]
    assert sum(reason == "precise" for reason, _ in quiet) / TRIALS >= 0.95
    assert sum(reason == "cap" for reason, _ in noisy) / TRIALS >= 0.9
