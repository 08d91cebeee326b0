"""Harness overhead: the harness's time to ready against a stdlib-only script, and what its
imports cost a spawned rank (`-X importtime`)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from .. import sidecar
from .. import vocabulary as vocab
from ..methods import FORK, FORKSERVER, RAY, SPAWN
from ..methods import METHODS as ALL_METHODS

METHODS = tuple(m for m in ALL_METHODS if m != RAY)  # a trivial rank: multiprocessing's methods
CHEAP_METHODS = (FORK, SPAWN, FORKSERVER)  # preload imports torch into the server: seconds per start


# The independent reference: the standard library only, its own target, its own clock reads.
BARE_SCRIPT = '''
import multiprocessing as mp, sys, time, json

def entry(conn):
    conn.send(time.monotonic())
    conn.recv()

if __name__ == "__main__":
    # PARENT_IMPORTS
    method, tp = sys.argv[1], int(sys.argv[2])
    ctx = mp.get_context("forkserver" if method.startswith("forkserver") else method)
    if method == "forkserver-preload":
        ctx.set_forkserver_preload(["torch"])
    elif method == "forkserver":
        ctx.set_forkserver_preload([])
    conns, procs, t0 = [], [], None
    for r in range(tp):
        mine, theirs = ctx.Pipe()
        p = ctx.Process(target=entry, args=(theirs,))
        t = time.monotonic()
        t0 = t if t0 is None else t0
        p.start()
        theirs.close()
        conns.append(mine); procs.append(p)
    stamps = [c.recv() for c in conns]
    for c in conns:
        c.send(None)
    for p in procs:
        p.join()
    print(json.dumps({"ready_s": max(stamps) - t0}))
'''


# What the harness variant's parent has imported when it forks (see overhead): the same-parent
# reference imports it too, inside its main guard so that spawned children do not.
HARNESS_PARENT_IMPORTS = "import forkspawn.launcher, forkspawn.methods, forkspawn.trivial"


def overhead(method: str, repeat: int = 10, tp: int = 1) -> dict[str, Any]:
    """Harness time-to-ready of trivial ranks vs the bare stdlib script, same method, `repeat` rounds.

    Three variants, each a fresh interpreter: the harness; the bare script in a parent of the
    harness's size (it imports the harness's modules first, and uses none of them); the bare
    script in a minimal parent. A forked child's start grows with its parent (page tables, COW
    faults), so the overhead, the harness's own cost, is harness minus same-size bare; the
    `parent_size_s` line (same-size minus minimal) shows what the modules of any parent cost a
    fork. Variants rotate so that drift in the machine's load hits all alike. Medians of the
    paired differences with asv's 99% CI; the goal is max(1 ms, 1% of bare).
    """
    import subprocess
    import tempfile

    from ..measure import ensure_bytecode
    from ..stats import summarize

    ensure_bytecode()
    times: dict[str, list[float]] = {"harness": [], "bare": [], "minimal": []}
    with tempfile.TemporaryDirectory(prefix="forkspawn-quality-") as tmp:
        minimal, same = Path(tmp, "bare_start.py"), Path(tmp, "bare_start_same_parent.py")
        minimal.write_text(BARE_SCRIPT)
        same.write_text(BARE_SCRIPT.replace("# PARENT_IMPORTS", HARNESS_PARENT_IMPORTS))
        cmds = {"harness": [sys.executable, "-m", "forkspawn.trivial", method, str(tp)],
                "bare": [sys.executable, str(same), method, str(tp)],
                "minimal": [sys.executable, str(minimal), method, str(tp)]}
        order = list(cmds)
        for i in range(repeat):
            for variant in order[i % 3:] + order[:i % 3]:
                out = subprocess.run(cmds[variant], capture_output=True, text=True, timeout=300, cwd=tmp)
                if out.returncode != 0:
                    raise RuntimeError(f"{variant} start with {method} failed: {out.stderr.strip()[-800:]}")
                times[variant].append(json.loads(out.stdout.splitlines()[-1])["ready_s"])
    harness, bare, minimal_s = times["harness"], times["bare"], times["minimal"]
    d, b = summarize([h - x for h, x in zip(harness, bare)]), summarize(bare)
    limit = max(1e-3, 0.01 * b["median"])
    return {"method": method, "tp": tp, "n": repeat,
            "harness_s": summarize(harness), "bare_s": b, "minimal_s": summarize(minimal_s), "overhead_s": d,
            "parent_size_s": summarize([x - m for x, m in zip(bare, minimal_s)]),
            "overhead_rel": d["median"] / b["median"], "limit_s": limit,
            # met: the whole 99% CI is within the goal; missed: the whole CI is above it
            "goal": "met" if (d["ci_high"] or math.inf) <= limit else "missed" if (d["ci_low"] or -math.inf) > limit else "unresolved",
            "samples": {"harness_s": harness, "bare_s": bare, "minimal_s": minimal_s}}


def import_tax(repeat: int = 5) -> dict[str, Any]:
    """What a real spawned (or forkserver) rank imports of the harness before its first stamp.

    The rank re-imports the parent's main module (forkspawn.parent, as __mp_main__) and the
    target's module (forkspawn.worker); multiprocessing's bootstrap is imported first so that
    only the harness's share counts. Gross: their cumulative import time. Net: the self time of
    those of their modules that the rank's own imports (torch, torch.distributed, forkspawn.model)
    would not load anyway, i.e. what the harness adds to time-to-ready rather than moves between
    phases. The trivial-rank comparison cannot see this (its main module is this light one).
    """
    import subprocess

    from ..stats import summarize

    boot = "import multiprocessing.spawn, multiprocessing.connection"
    stmt = f"{boot}; import forkspawn.parent, forkspawn.worker"
    listing = subprocess.run([sys.executable, "-c", f"{boot}; {PHASE_IMPORTS}; import sys; print(' '.join(sys.modules))"],
                             capture_output=True, text=True, timeout=300)
    rank_modules = set(listing.stdout.split())
    gross, net = [], []
    for _ in range(repeat):
        cum = importtime(stmt)
        own = importtime(stmt, column="self")
        gross.append(cum.get("forkspawn.parent", 0.0) + cum.get("forkspawn.worker", 0.0))
        net.append(sum(t for m, t in own.items() if m not in rank_modules and m in _harness_modules(stmt)))
    return {"statement": stmt, "seconds": summarize(gross), "net_seconds": summarize(net),
            "samples": {"gross_s": gross, "net_s": net}}


def _harness_modules(stmt: str, _memo: dict[str, set[str]] = {}) -> set[str]:  # noqa: B006 (a memo)
    """Modules `stmt` imports beyond multiprocessing's bootstrap."""
    import subprocess

    if stmt not in _memo:
        code = ("import sys; a = set(sys.modules); import multiprocessing.spawn, multiprocessing.connection; "
                "b = set(sys.modules); import forkspawn.parent, forkspawn.worker; print(' '.join(set(sys.modules) - b))")
        _memo[stmt] = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout.split())
    return _memo[stmt]


def importtime(stmt: str, column: str = "cumulative") -> dict[str, float]:
    """Seconds per module imported by `stmt` in a fresh interpreter (-X importtime), cumulative or self."""
    import subprocess

    out = subprocess.run([sys.executable, "-X", "importtime", "-c", stmt], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip()[-800:])
    cumulative: dict[str, float] = {}
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            own, cum, name = line.split("|")
            cumulative.setdefault(name.strip(), int(cum if column == "cumulative" else own.split(":")[1]) / 1e6)
    return cumulative


# The imports of a rank's imports_done phase (worker.rank_main), in a fresh interpreter.
PHASE_IMPORTS = "import torch, torch.distributed; import forkspawn.model"


def import_validity(repeat: int = 5, records: str | None = None) -> dict[str, Any]:
    """`import torch` and the whole imports_done set by -X importtime, beside the harness's
    imports_done - process_entry of spawn/bare ranks (from a records file, if given).

    The phase should be at least the importtime figure (the rank also unpickles, sends its
    facts and runs torch's lazy initialisation); process_entry itself holds interpreter start-up."""
    from ..stats import summarize

    torch_s, phase_set_s = [], []
    for _ in range(repeat):
        torch_s.append(importtime("import torch")["torch"])
        t = importtime(PHASE_IMPORTS)
        phase_set_s.append(sum(t.get(m, 0.0) for m in ("torch", "torch.distributed", "forkspawn.model")))
    result: dict[str, Any] = {"importtime_torch_s": summarize(torch_s), "importtime_phase_set_s": summarize(phase_set_s),
                              "samples": {"torch_s": torch_s, "phase_set_s": phase_set_s}}
    if records:
        for rec in sidecar.records(records):
            s = rec.samples
            if rec.method == "spawn" and rec.parent_state == "bare" and vocab.phase("imports_done", 0) in s:
                spans = [i - e for i, e in zip(s[vocab.phase("imports_done", 0)], s[vocab.phase("process_entry", 0)])]
                result[f"phase_imports_tp{rec.tp}_s"] = summarize(spans)
                result[f"phase_process_entry_tp{rec.tp}_s"] = summarize(s[vocab.phase("process_entry", 0)])
    return result
