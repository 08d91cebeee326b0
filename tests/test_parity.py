"""Decode parity across cold starts (analysis/parity.py): the pairs, paired by lease and round, the
shift and its verdicts, the lease-to-lease variation, the unpaired fallback; from records built the
way the harness builds them. And the statistics behind it (analysis/blocked.py)."""

from __future__ import annotations

import dataclasses
import itertools
import statistics

import pandas as pd
import pytest

from analysis import blocked, decide, parity
from analysis.load import RECORD_COLUMNS, load
from forkspawn import stats
from forkspawn.config import Config
from forkspawn.record import Run, build_record

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _record(method: str, rates: list[float], leases: list[str] | None = None, minutes: list[int] | None = None,
            batch: int = 1):
    """A record of cold starts at `rates`, each on its lease (boot id) and at its minute (started_at)."""
    runs = []
    for i, r in enumerate(rates):
        run = Run(method_used=method.split("-")[0])
        run.tokens_per_s = {batch: r}
        if leases:
            run.host = {"boot_id": leases[i], "hostname": "box", "gpu_uuids": ["GPU-0"]}
        if minutes:
            run.started_at = f"2026-12-08T{minutes[i] // 60:02d}:{minutes[i] % 60:02d}:00.000+00:00"
        runs.append(run)
    return build_record(Config(engine="vllm", method=method.split("-")[0], parent_state="torch", batches=(batch,)),
                        runs, machine={}, versions={})


def _records(pairs: dict[str, object]) -> pd.DataFrame:
    """label -> rates (one lease, in order) or a record."""
    rows = [{"machine": "box", "commit": "c0ffee0", "env": "existing", "date": pd.Timestamp("2026-12-06"),
             "engine": "vllm", "method": label, "method_used": label.split("-")[0], "parent_state": "torch",
             "cuda_check": "runtime", "tp": 1, "status": "ok",
             "record": rates if not isinstance(rates, list) else _record(label, rates, ["A"] * len(rates))}
            for label, rates in pairs.items()]
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


NOISE = [1.001, 0.999, 1.002, 0.998, 1.0005, 0.9995, 1.0015, 0.9985, 1.0, 1.0]  # fork / spawn, round by round


def test_pairs_and_verdicts_within_one_lease() -> None:
    spawn = [1000, 1004, 998, 1002, 1001, 999, 1003, 997, 1000, 1002]
    t = parity.table(_records({
        "spawn": spawn,
        "fork": [r * x for r, x in zip(spawn, NOISE)],  # equal within 3%
        "spawn-eager": [500, 503, 499, 502, 501, 498, 500, 502, 499, 501],
        "fork-eager": [400, 402, 399, 401, 400, 398, 401, 399, 400, 402],  # 20% slower: differs
        "fork-gcfreeze": [900, 1100, 950, 1080, 930, 1060, 910, 1090, 940, 1070],  # noisy: unresolved, against spawn
        "spawn-mp": spawn, "fork-mp": [r * x * 0.999 for r, x in zip(spawn, NOISE)],  # the mp executor's pair
    })).set_index("method")
    assert t.loc["fork", "reference"] == "spawn" and t.loc["fork", "verdict"] == "equal within ±3%"
    assert t.loc["fork", "diff_pct"] == pytest.approx(0, abs=0.05)
    assert parity.table(_records({"spawn": spawn, "fork": [r * 1.001 for r in spawn]}))["verdict"].tolist() == [
        "differs by less than 3%"]  # every pair 0.1% faster: resolved, and negligible
    assert t.loc["fork-mp", "reference"] == "spawn-mp" and t.loc["fork-mp", "verdict"] == "equal within ±3%"
    assert t.loc["fork-eager", "reference"] == "spawn-eager" and t.loc["fork-eager", "verdict"] == "differs"
    assert t.loc["fork-eager", "diff_pct"] == pytest.approx(-20, abs=0.5)
    assert t.loc["fork-eager", "ci_high_pct"] < 0
    gc = t.loc["fork-gcfreeze"]
    assert gc["reference"] == "spawn" and gc["verdict"] == "unresolved" and gc["cold_starts_needed"] > 10
    assert "spawn" not in t.index, "a spawn label is a reference, not a method compared"
    assert set(t["design"]) == {"paired"} and set(t["pairs"]) == {10} and set(t["leases"]) == {1}
    assert set(t["scope"]) == {"one lease: between-lease variation not in this interval"}
    assert "10 pairs by round; one lease: between-lease variation not in this interval" in parity.markdown(t.reset_index())


def test_the_shift_is_the_hodges_lehmann_of_the_pairs_with_the_exact_signed_rank_interval() -> None:
    """Pairs are made round by round in the order the cold starts ran (started_at, not the record's
    order), a leftover is dropped and counted; the shift and its interval are those of the pairs'
    relative differences."""
    spawn = [1000.0, 990, 1010, 1005, 995, 1000, 1003, 998, 1001]
    ratio = [1.01, 0.99, 1.02, 1.00, 1.015, 0.995, 1.005, 1.01]  # fork / spawn of each round
    order = [3, 0, 7, 1, 6, 2, 5, 4]  # fork's record lists its cold starts out of order
    fork = _record("fork", [spawn[i] * ratio[i] for i in order] + [2000.0], ["A"] * 9, order + [99])
    ref = _record("spawn", spawn, ["A"] * 9, list(range(9)))
    row = parity.table(_records({"fork": fork, "spawn": ref})).iloc[0]
    d = [100 * (x - 1) for x in ratio[:8]] + [100 * (2000.0 / 1001 - 1)]  # the 9th fork pairs with the 9th spawn
    want = stats.signed_rank_shift(d)
    assert (row["pairs"], row["dropped"]) == (9, 0)
    assert row["diff_pct"] == pytest.approx(want["estimate"]) and row["ci_low_pct"] == pytest.approx(want["ci_low"])
    one_short = _record("spawn", spawn[:8], ["A"] * 8, list(range(8)))
    row = parity.table(_records({"fork": fork, "spawn": one_short})).iloc[0]
    assert (row["pairs"], row["dropped"]) == (8, 1)


def test_leases_are_blocks_and_their_variation_widens_the_interval() -> None:
    """Two leases whose levels differ by 3% for both methods: paired within each lease, the shift is
    the method's, not the lease's; the random-effects interval (t with 1 degree of freedom) is
    wide, and where the leases disagree about the shift, more cold starts in these two leases would
    not decide it."""
    base = [1000, 1004, 998, 1002, 1001, 999, 1003, 997, 1000, 1002]
    leases = ["A"] * 10 + ["B"] * 10
    minutes = list(range(0, 40, 2)) + []
    spawn = _record("spawn", base + [r * 0.97 for r in base], leases, [m + 1 for m in minutes])
    same = _record("fork", [r * x for r, x in zip(base, NOISE)] + [r * 0.97 * x for r, x in zip(base, NOISE[::-1])],
                   leases, minutes)
    row = parity.table(_records({"fork": same, "spawn": spawn})).iloc[0]
    assert (row["design"], row["leases"], row["pairs"]) == ("paired", 2, 20)
    assert row["diff_pct"] == pytest.approx(0, abs=0.05)
    assert row["scope"] == "2 leases, random effects (DerSimonian-Laird, t with 1 df)"
    assert row["tau_pct"] == pytest.approx(0, abs=1e-9)  # the leases agree on the shift
    # the leases disagree: fork as fast in A, 1.5% slower in B
    split = _record("fork", [r * x for r, x in zip(base, NOISE)] + [r * 0.97 * 0.985 * x for r, x in zip(base, NOISE)],
                    leases, minutes)
    row = parity.table(_records({"fork": split, "spawn": spawn})).iloc[0]
    assert row["tau_pct"] > 0.5 and row["verdict"] == "unresolved" and row["lease_bound"]
    assert row["ci_low_pct"] < -3 and row["ci_high_pct"] > 3  # t(1 df) = 63.7 at 99%: two leases are little
    text = parity.verdict_text(row)
    assert text.startswith("unresolved: cold starts from another lease would decide it, not more in these 2 (about")
    # what the planner says would decide it is the same
    rows = parity.table(_records({"fork": split, "spawn": spawn}))
    b, o = decide.Side("fork", None, None), decide.Side("spawn", None, None)
    d = decide.decode_of(b, o, rows, 1)
    assert d.leases == 2 and d.floor == pytest.approx(row["floor_pct"] / 100)
    assert "2 leases, random effects" in d.source


def test_too_few_pairs_and_the_unpaired_fallback() -> None:
    t = parity.table(_records({"spawn": [1.0, 2.0, 3.0, 4.0, 5.0], "fork": [1.0, 2.0, 3.0, 4.0, 5.0]}))
    assert t["verdict"].tolist() == ["no interval"] and t["cold_starts_needed"].tolist() == [parity.MIN_PAIRS]
    assert "no interval: 5 pairs in the largest block, 8 needed for an exact 99% interval" in parity.markdown(t)
    # records that keep no cold start of their own (record/1): the samples, unpaired
    bare = {m: dataclasses.replace(_record(m, r), cold_starts=None)
            for m, r in (("spawn", [1.0, 2.0, 3.0]), ("fork", [1.0, 2.0, 3.0]))}
    t = parity.table(_records(bare))
    assert t["design"].tolist() == ["unpaired"] and "5 needed" in parity.markdown(t)
    # fork and spawn in different leases: nothing to pair, and the comparison says lease and method are confounded
    apart = {"spawn": _record("spawn", [1000.0] * 6, ["A"] * 6), "fork": _record("fork", [990.0] * 6, ["B"] * 6)}
    t = parity.table(_records(apart))
    assert t["design"].tolist() == ["unpaired"] and "lease and method confounded" in t["scope"].iloc[0]


def test_the_committed_reports() -> None:
    """reports/h100-vllm-tp1 (record/2: no boot id, no start time): one block, paired round by round
    in the records' order (the queue alternated fork and spawn); reports/h200-tp1 (record/1): unpaired."""
    t = parity.table(load(ROOT / "reports" / "h100-vllm-tp1").records).set_index(["method", "batch"])
    assert set(t["scope"]) == {"leases not recorded: between-lease variation not in this interval"}
    assert t.loc[("fork", 16), "verdict"] == "equal within ±3%" and t.loc[("fork", 16), "pairs"] == 14
    assert t.loc[("fork", 1), "verdict"] == "unresolved"
    eager = t.loc["fork-eager"]
    assert set(eager["verdict"]) == {"unresolved"} and set(eager["pairs"]) == {10}
    assert (eager["cold_starts_needed"] > 10).all()  # a rank interval is lopsided: never the count it has
    h200 = parity.table(load(ROOT / "reports" / "h200-tp1").records)
    # the 5 + 5 cold starts of the old two-request decode method: far from ±3%
    assert set(h200["design"]) == {"unpaired"} and set(h200["verdict"]) == {"unresolved"}
    assert (h200["cold_starts_needed"] > 30).all()


def test_the_signed_rank_interval_is_exact() -> None:
    """The interval's rank from the exact distribution of the signed-rank statistic (every sign
    pattern), as the published critical values have it (two-sided 1%: n=10 -> 3, 14 -> 12, 20 -> 37)."""
    for n in range(1, 13):
        counts = stats._signed_rank_counts(n)
        brute = [0] * len(counts)
        for signs in itertools.product((0, 1), repeat=n):
            brute[sum(r for r, s in zip(range(1, n + 1), signs) if s)] += 1
        assert list(counts) == brute
    d = [-1.0, 0.5, 2.0, 3.5, -0.25, 1.0, 4.0, 0.0, 2.5, 1.5]
    s = stats.signed_rank_shift(d)
    walsh = sorted((d[i] + d[j]) / 2 for i in range(10) for j in range(i, 10))
    assert s["estimate"] == statistics.median(walsh)
    assert (s["ci_low"], s["ci_high"]) == (walsh[3], walsh[-4])  # critical value 3 at n=10
    assert stats.min_pairs(0.99) == 8 and stats.signed_rank_shift(d[:7])["ci_low"] is None


def test_t_quantiles_and_the_random_effects_combination() -> None:
    for df, q in ((1, 63.657), (2, 9.925), (3, 5.841), (10, 3.169), (30, 2.750)):  # Student's t at 0.995
        assert blocked.t_quantile(0.995, df) == pytest.approx(q, abs=1e-3)
    assert blocked.t_quantile(0.5, 4) == pytest.approx(0, abs=1e-9)
    # equal variances, agreeing blocks: tau^2 = 0 and the estimate is their mean
    re = blocked.random_effects([1.0, 1.0, 1.0], [0.1, 0.1, 0.1])
    assert re["tau2"] == 0 and re["estimate"] == pytest.approx(1.0)
    assert re["ci_high"] - re["estimate"] == pytest.approx(blocked.t_quantile(0.995, 2) * (0.1 / 3) ** 0.5)
    # disagreeing blocks: Q = sum w (y - ybar)^2 = 10 x (0.25 + 0.25) = 5 > k - 1, tau^2 = (5 - 1) / (20 - 10)
    re = blocked.random_effects([0.0, 1.0], [0.1, 0.1])
    assert re["tau2"] == pytest.approx(0.4) and re["estimate"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        blocked.random_effects([1.0], [0.1])
