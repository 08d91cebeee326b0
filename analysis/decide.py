"""When one start method beats another for a deployment, and only where the evidence says so.

A deployment: each replica (re)starts R times a day, holds TP devices, and decodes H busy hours a
day (its load: H hours at the faster decoder's rate; a fleet that serves all day is H = 24). Method
B beats method O when O's replica-day costs more device-seconds than B's at every point of the 99%
intervals the difference is made of:

    cost(O) - cost(B) = R x TP x (restart_O - restart_B) + H x 3600 x TP x phi(r)

A restart is what a user pays (derive.RESTART: teardown + exec to ready where recorded, else time
to ready from the start request; `Side.clock` names which). r is B's decode rate over O's, minus 1:
from decode parity across cold starts (analysis.parity: paired by lease and round, the
Hodges-Lehmann shift and its exact interval, leases combined by random effects) where the pair has
one, else from asv's 99% intervals of the two medians, conservatively ([lo_B / hi_O - 1,
hi_B / lo_O - 1]). phi(r) = r where O decodes slower (O needs r x H hours more), r / (1 + r) where
B does (B needs -r / (1 + r) x H more). Both
terms grow with their difference, so the cost's interval runs between the ends of the two.

The difference that decides it must also be practical: at least `THRESHOLD` of O's value (a start-up
saving of 3% of O's restart, a decode rate 3% faster, 3% less host memory). 3% is the decode
parity tolerance (`parity.TOLERANCE`, one source): the band within which the suite calls two decode
rates equal; the same relative bar for start-up and memory keeps one rule, and it is what turns
cpu-default's resolved but negligible 0.9 MiB a rank (0.6% of a spawned rank) into no verdict.

Where B does not hold at every point, the comparison is open and says what would decide it: the
start-up's cold starts (summary's 1/sqrt(n) estimate), or for decode the break-even gap (the slower
decode of the faster starter that cancels its saving, `break_even_gap`) against the interval's worst
case, the cold starts a side that would put the interval on one side of it if the shift stays at
its estimate (or, where lease-to-lease variation is what keeps the interval wide, cold starts from
another lease), and the busy hours (or restarts) at which B holds already.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from forkspawn.stats import samples_for

from . import blocked
from .derive import RESTART_CLOCK, Estimate, difference, interval_text, runs_needed
from .fmt import num, pct
from .parity import TOLERANCE, interval_needs, lease_text

THRESHOLD = TOLERANCE  # a verdict's deciding difference: at least this fraction of the other's value
DAY_H = 24.0
RESTARTS = (1, 6, 24, 96)  # the break-even table's rows (restarts a day of a replica)
BUSY = (1, 4, 8, 16, 24)  # its columns (busy hours a day); the deployment's own are added


@dataclass(frozen=True)
class Side:
    """One method's medians with their 99% intervals (None: not measured)."""
    method: str
    restart: Estimate | None  # seconds a restart costs (derive.RESTART), on the clock `clock` names
    rate: Estimate | None
    host: Estimate | None = None  # host MiB per replica (the group's PSS; the largest of its readings)
    clock: str = ""  # what `restart` counts (derive.RESTART_CLOCK, START_CLOCK, a server's start)

    @property
    def verb(self) -> str:
        """'restarts' where the figure is a whole restart (teardown + exec to ready), else 'starts'."""
        return "restarts" if self.clock == RESTART_CLOCK else "starts"


@dataclass(frozen=True)
class Decode:
    """B's decode rate over O's, minus 1 (a fraction), with its 99% interval and where it comes from."""
    est: float
    lo: float | None
    hi: float | None
    source: str
    n: int | None = None  # cold starts a side (the fewer), or pairs where paired by round
    # across leases: the half-width the interval keeps however many cold starts each lease gets
    # (parity's floor: t x tau / sqrt(k)), as a fraction, the leases behind it, and parity's `blocks`
    # (each lease's variance and pairs, tau^2, in %): what more cold starts or leases would do
    floor: float | None = None
    leases: int | None = None
    needs: str = ""  # what a decode interval would take where this one has none (decode parity's design)
    blocks: tuple | None = None

    @property
    def bounded(self) -> bool:
        return self.lo is not None and self.hi is not None

    @property
    def resolved(self) -> bool:
        return self.bounded and (self.lo > 0 or self.hi < 0)

    def text(self, b: str, o: str) -> str:
        """'fork -1.1% [-4.2, +0.2] of spawn's (source)'."""
        bounds = f" [{pct(self.lo)}, {pct(self.hi)}]" if self.bounded else " (no interval)"
        return f"{b} {pct(self.est)}{bounds} of {o}'s ({self.source})"


@dataclass(frozen=True)
class Deployment:
    restarts_per_day: float
    busy_hours: float
    tp: int
    threshold: float = THRESHOLD


@dataclass
class Outcome:
    """B against O for one deployment."""
    b: Side
    o: Side
    winner: str | None  # b.method, o.method, or None: open
    cost: tuple[float | None, float | None, float | None]  # cost(O) - cost(B), device-s a day: est, lo, hi
    startup: Estimate | None  # restart_O - restart_B, seconds
    decode: Decode | None
    why: str  # what decided it, or why it is open
    decide: str = ""  # what would decide it (open only)
    hours_max: float | None = None  # B holds at every point up to this many busy hours (None: not bounded)
    gap: float | None = None  # the break-even decode gap of B's start-up saving (open decode comparisons)


def flip(d: Decode) -> Decode:
    """O over B from B over O: r' = 1 / (1 + r) - 1, the interval's ends swapped."""
    inv = lambda x: None if x is None else 1 / (1 + x) - 1  # noqa: E731
    # the leases' variances stay in % of the reference's rate: at a few % apart, near enough either way
    return Decode(inv(d.est), inv(d.hi), inv(d.lo), d.source, d.n, d.floor, d.leases, d.needs, d.blocks)


def decode_of(b: Side, o: Side, parity_rows: pd.DataFrame | None = None, batch: int | None = None,
              asked: dict[str, str] | None = None) -> Decode | None:
    """B's rate over O's: parity across cold starts where the pair (by the asked labels) has an
    interval at this batch, else asv's intervals of the medians (n >= 3), else the medians alone."""
    asked = asked or {}
    a, c = asked.get(b.method, b.method), asked.get(o.method, o.method)
    needs = ""
    if parity_rows is not None and len(parity_rows) and batch is not None:
        for x, y, flipped in ((a, c, False), (c, a, True)):
            row = parity_rows[(parity_rows["method"] == x) & (parity_rows["reference"] == y)
                              & (parity_rows["batch"] == batch)]
            if len(row) and pd.isna(row["ci_low_pct"].iloc[0]):
                needs = interval_needs(row.iloc[0])
            if len(row) and pd.notna(row["ci_low_pct"].iloc[0]):
                r = row.iloc[0]
                if r["design"] == "paired":
                    n = int(r["pairs"])
                    how = f"{n} pair{'s' * (n != 1)}; {r['scope']}"
                else:
                    n = int(min(r["n"], r["reference_n"]))
                    how = f"n={n} a side, unpaired"
                floor = r["floor_pct"] / 100 if pd.notna(r["floor_pct"]) else None
                d = Decode(r["diff_pct"] / 100, r["ci_low_pct"] / 100, r["ci_high_pct"] / 100,
                           f"across cold starts, {how}; {r['verdict']}", n, floor,
                           int(r["leases"]) if pd.notna(r["leases"]) else None,
                           blocks=r["blocks"] if isinstance(r.get("blocks"), tuple) else None)
                return flip(d) if flipped else d
    if b.rate is None or o.rate is None or not o.rate.value:
        return None
    est = b.rate.value / o.rate.value - 1
    if difference(b.rate, o.rate).lo is None or not (o.rate.lo and o.rate.lo > 0):
        return Decode(est, None, None, "medians only: no interval below n=3", min(b.rate.n or 0, o.rate.n or 0) or None,
                      needs=needs)
    return Decode(est, b.rate.lo / o.rate.hi - 1, b.rate.hi / o.rate.lo - 1, "asv's intervals of the medians",
                  min(b.rate.n or 0, o.rate.n or 0) or None)


def phi(r: float) -> float:
    """Busy seconds O needs more than B per busy second of load, for B's rate = (1 + r) x O's."""
    return r if r >= 0 else r / (1 + r)


def break_even_gap(saving_s: float, restarts_per_day: float, busy_hours: float) -> float | None:
    """The decode gap g (B decodes at (1 - g) x O's rate) at which B's start-up saving of `saving_s`
    seconds a start is cancelled: R x saving = H x 3600 x g / (1 - g), g = x / (1 + x),
    x = R x saving / (H x 3600). None without a saving or a decode load."""
    if busy_hours <= 0 or restarts_per_day <= 0 or saving_s <= 0:
        return None
    x = restarts_per_day * saving_s / (busy_hours * 3600)
    return x / (1 + x)


def cost(startup: float | None, r: float | None, dep: Deployment) -> float | None:
    """cost(O) - cost(B) in device-seconds a day for a start-up difference (O - B, s) and r."""
    parts = []
    if dep.restarts_per_day:
        parts.append(None if startup is None else dep.restarts_per_day * dep.tp * startup)
    if dep.busy_hours:
        parts.append(None if r is None else dep.busy_hours * 3600 * dep.tp * phi(r))
    return None if None in parts else sum(parts)


def compare(b: Side, o: Side, dep: Deployment, dec: Decode | None) -> Outcome:
    """B against O for a deployment: the one that costs less at every point of the intervals, by a
    practical margin, wins; otherwise the comparison is open and says what would decide it. Pass B
    as the faster starter: an open comparison is told in its terms (the break-even of its saving)."""
    startup = difference(o.restart, b.restart) if o.restart and b.restart else None
    s_est, s_lo, s_hi = (startup.value, startup.lo, startup.hi) if startup else (None, None, None)
    r_est, r_lo, r_hi = (dec.est, dec.lo, dec.hi) if dec else (None, None, None)
    c = (cost(s_est, r_est, dep), cost(s_lo, r_lo, dep), cost(s_hi, r_hi, dep))
    out = Outcome(b, o, None, c, startup, dec, "")
    if not dep.restarts_per_day and not dep.busy_hours:  # no cost either way: memory alone
        return _by_memory(out, dep.threshold)
    for winner, loser, sign, lower in ((b, o, 1, c[1]), (o, b, -1, None if c[2] is None else -c[2])):
        if lower is None or lower <= 0:
            continue
        margins = _margins(winner, loser, sign * s_est if startup else None,
                           dec if sign > 0 or dec is None else flip(dec), dep)
        if any(ok for _, ok, _ in margins):
            out.winner = winner.method
            out.why = " and ".join(f"{what} {size}" for what, ok, size in margins if ok)
        else:
            out.why = (f"{winner.method} is cheaper at every point, but below the practical threshold ("
                       + "; ".join(f"{w} {size}" for w, _, size in margins) + f"; {100 * dep.threshold:g}% needed)")
        return out
    _open(out, dep)
    return out


def _margins(w: Side, lo: Side, saving: float | None, d: Decode | None, dep: Deployment) -> list[tuple[str, bool, str]]:
    """What makes W cheaper than L, resolved at 99%, each with whether it is practical (at least the
    threshold of L's value) and its size."""
    out = []
    if dep.restarts_per_day and saving and saving > 0 and difference(lo.restart, w.restart).resolved:
        share = saving / lo.restart.value
        out.append((w.verb, share >= dep.threshold,
                    f"{num(saving)} s faster ({100 * share:.0f}% of {lo.method}'s {num(lo.restart.value)} s"
                    f"{' ' + lo.clock if lo.clock else ''})"))
    if dep.busy_hours and d and d.resolved and d.est > 0:
        out.append(("decodes", d.est >= dep.threshold, f"{100 * d.est:.1f}% faster"))
    return out


def _by_memory(out: Outcome, t: float) -> Outcome:
    b, o = out.b, out.o
    if b.host and o.host:
        d = difference(o.host, b.host)
        if d.resolved and d.value > 0 and d.value >= t * o.host.value:
            out.winner, out.why = b.method, f"host memory ({num(d.value)} MiB less a replica)"
            return out
        out.why = (f"no start-ups and no decode load: only host memory could decide, {num(d.value)} MiB a replica "
                   f"{'below the practical threshold' if d.resolved else 'not resolved at 99%'}")
    else:
        out.why = "no start-ups and no decode load, and no host memory to compare"
    return out


def _open(out: Outcome, dep: Deployment) -> None:
    """Why neither holds at every point, and what would decide it, in the terms of B's start-up."""
    b, o, s, d = out.b, out.o, out.startup, out.decode
    needs, why = [], []
    if dep.restarts_per_day:
        if s is None:
            why.append("start-up not measured for both")
        elif not s.resolved:
            m = runs_needed(s)
            bounds = interval_text(s.lo, s.hi, s.n, signed=True)
            why.append(f"start-up {o.method} - {b.method} {num(s.value, signed=True)} s "
                       f"{f'({bounds})' if bounds.startswith('n=') else bounds}{_clock(b)}, not resolved at 99%")
            needs.append(f"about {m} cold starts a side would resolve the start-up" if m else
                         "more cold starts would resolve the start-up")
        else:
            why.append(f"{b.method} {b.verb} {num(s.value)} s sooner [{num(s.lo)}, {num(s.hi)}]{_clock(b)}")
    if dep.busy_hours:
        if d is None:
            why.append("the decode rates were not measured for both")
            needs.append("a decode rate of both")
        elif not d.bounded:
            why.append(f"decode {d.text(b.method, o.method)}")
            asv = "at least 3 cold starts a side (asv's intervals of the medians)"
            needs.append(f"a decode interval: {d.needs or asv}")
        else:
            why.append(f"decode {d.text(b.method, o.method)}")
            gap = break_even_gap(s.value, dep.restarts_per_day, dep.busy_hours) if s and s.value > 0 else None
            out.gap = gap
            if gap is not None:
                why.append(f"{b.method} decoding {_pct(gap)} slower cancels its saving at "
                           f"{dep.restarts_per_day:g} starts and {dep.busy_hours:g} busy h a day")
                target = abs(d.est + gap)  # the estimate's distance from the break-even (r = -gap)
                side = b.method if d.est > -gap else o.method
                reach = d.est - d.lo if side == b.method else d.hi - d.est  # the bound that must pass it
                if d.blocks is not None:  # several leases: more cold starts in these, or another lease
                    variances, pairs, tau2 = d.blocks
                    more = blocked.cheapest(variances, pairs, tau2, 100 * target) if target else None
                    if more and more[0] == "pairs":
                        needs.append(f"about {more[1]} cold starts a side in each of these {d.leases} leases ({side}, "
                                     f"if the shift stays at its estimate)")
                    elif target:
                        needs.append(lease_text(d.leases, 100 * d.floor, 100 * target, more[1] if more else None,
                                                verb=False))
                else:
                    n = samples_for(reach, d.n, target) if target and d.n else None
                    if n and n < 10_000:
                        needs.append(f"about {n} cold starts a side ({side}, if the shift stays at its estimate)")
                out.hours_max = hours_max(s, d, dep)
                if out.hours_max is not None:
                    needs.append(f"{b.method} holds for a fleet decoding at most {hours_text(out.hours_max)} a day at "
                                 f"{dep.restarts_per_day:g} starts/day (the intervals' worst case)")
    out.why = "; ".join(why) or "the intervals overlap"
    out.decide = "; ".join(needs)


def _clock(side: Side) -> str:
    return f" ({side.clock})" if side.clock else ""


def hours_max(s: Estimate, d: Decode, dep: Deployment) -> float | None:
    """The busy hours a day up to which B's start-up saving (its interval's low end) outweighs the
    decode interval's worst case for B; None where the saving is not resolved or B never loses."""
    if s.lo is None or s.lo <= 0 or d.lo is None or d.lo >= 0 or not dep.restarts_per_day:
        return None
    return dep.restarts_per_day * s.lo / (3600 * -phi(d.lo))


def table(b: Side, o: Side, dec: Decode | None, dep: Deployment) -> pd.DataFrame:
    """The break-even decode gap over restarts a day x busy hours (the deployment's own added): the
    slower decode of B that cancels its start-up saving, each cell with the verdict `compare` gives
    there (B, O, or '?': no verdict)."""
    restarts = sorted(set(RESTARTS) | {dep.restarts_per_day} - {0})
    busy = sorted(set(BUSY) | {dep.busy_hours} - {0})
    saving = b.restart and o.restart and o.restart.value - b.restart.value
    cells = {}
    for h in busy:
        col = []
        for r in restarts:
            who = compare(b, o, Deployment(r, h, dep.tp, dep.threshold), dec).winner or "?"
            gap = break_even_gap(saving, r, h) if saving else None
            col.append(f"{_pct(gap)} {who}" if gap is not None else who)
        cells[f"{h:g} h"] = col
    return pd.DataFrame(cells, index=pd.Index([f"{r:g}" for r in restarts], name="starts/day"))


def _pct(g: float | None) -> str:
    """A gap in percent, two significant digits below 10%: 0.76%, 0.019%, 15.5%."""
    if g is None:
        return "?"
    return f"{100 * g:.2g}%" if g < 0.1 else f"{100 * g:.1f}%"


def hours_text(h: float) -> str:
    """Busy time a day: '2.4 h', '9 min', '24 h' (never more than a day)."""
    if h * 60 < 1:
        return "a minute"
    return f"{h * 60:.0f} min" if h < 1 else f"{min(h, DAY_H):.2g} h"

