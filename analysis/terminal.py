"""The tidy table and the capacity plan for a terminal: compact, plain numbers, causes not tracebacks."""

from __future__ import annotations

import pandas as pd

from .capacity import Plan
from .derive import interval_text
from .fmt import cause, num
from .verdict import method_label

COMPACT = ["machine", "engine", "method", "parent_state", "tp", "metric", "value", "99% CI", "n", "status"]


def compact(df: pd.DataFrame) -> str:
    """One line per measured or failed value (median [99% CI] n); configurations that could not
    run folded into one line per reason at the end; `--wide` or `--csv` give every column."""
    shown = df[df["status"] != "skipped"]
    rows = pd.DataFrame({
        "machine": shown["machine"], "engine": shown["engine"],
        "method": [method_label(m, u, s) for m, u, s in zip(shown["method"], shown["method_used"], shown["status"])],
        "parent_state": shown["parent_state"] + shown["cuda_check"].map(lambda c: "" if c == "runtime" else f" ({c})"),
        "tp": shown["tp"].astype("string"), "metric": shown["metric"],
        "value": [num(v) if s == "ok" else "" for v, s in zip(shown["value"], shown["status"])],
        "99% CI": [interval_text(a, b, n) for a, b, n in zip(shown["ci_low"], shown["ci_high"], shown["n"])],
        "n": shown["n"].astype("string").fillna(""),
        "status": [s if s == "ok" else f"{s}: {cause(e, 90)}" for s, e in zip(shown["status"], shown["error"])],
    })
    out = rows.fillna("").to_string(index=False, columns=COMPACT)
    skipped = df[df["status"] == "skipped"]
    if len(skipped):
        folded = skipped.groupby(skipped["error"].map(lambda e: cause(e, 120)), sort=False)
        out += "\n\nnot run (rows folded, one line per reason):\n" + "\n".join(
            f"  {len(g)} rows: {reason}" for reason, g in folded)
    return out


def plan_text(p: Plan) -> str:
    """The scenario, the verdict line, the break-even table where a decode difference is open, the
    methods (figures labelled where extrapolated) and each method's reason."""
    t = p.table.copy()
    for c in t.columns:
        if c not in ("method", "status", "method_used", "limited_by", "reason", "recommended", "replicas"):
            t[c] = t[c].map(lambda v: num(v) if isinstance(v, (int, float)) and pd.notna(v) else "")
    t["recommended"] = t["recommended"].map({True: "yes", False: ""})
    t["replicas"] = t["replicas"].map(lambda v: "" if pd.isna(v) else f"{int(v)}")
    t["method_used"] = t["method_used"].fillna("")
    reasons = "\n".join(f"  {m}: {r}" for m, r in zip(t["method"], t["reason"]))
    if p.extrapolated:  # every figure that was scaled says so in its column
        t = t.rename(columns={c: f"{c} (extrapolated)" for c in EXTRAPOLATED})
    out = [p.scenario, f"verdict: {p.verdict}", f"recommended: {p.recommended or 'none'}"]
    if p.break_even is not None and len(p.outcomes):
        o = next((x for x in p.outcomes if x.b.method in p.table["method"].values), p.outcomes[0])
        worst = (f"; the decode interval allows {o.b.method} to decode {-100 * o.decode.lo:.1f}% slower"
                 if o.decode and o.decode.bounded and o.decode.lo < 0 else "")
        out += ["", f"break-even decode gap: how much slower {o.b.method} may decode than {o.o.method} before its "
                    f"start-up saving is gone, by (re)starts a day of a replica (rows) x busy hours a day (columns); "
                    f"then who holds at every point of the 99% intervals ('?': no verdict){worst}",
                _grid(p.break_even)]
    return "\n".join(out + ["", t.drop(columns=["reason"]).to_string(index=False), "", "why:", reasons])


def _grid(t: pd.DataFrame) -> str:
    """The break-even table with its axes named in its corner: 'starts/day \\ busy'."""
    rows = [[f"{t.index.name} \\ busy"] + list(t.columns)] + [[str(i)] + list(r) for i, r in t.iterrows()]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) if c == 0 else v.rjust(w) for c, (v, w) in enumerate(zip(r, widths)))
                     for r in rows)


# the columns models.py's rule scales (host memory and replicas by host RAM are held)
EXTRAPOLATED = ["gpu_mib_measured", "gpu_fixed_mib", "kv_cache_mib", "kv_cache_tokens", "gpu_headroom_gib",
                "time_to_ready_s", "exec_to_ready_s", "restart_s", "startup_gpu_s_per_day", "tokens_per_s",
                "decode_gpu_s_per_day", "cost_gpu_s_per_day", "node_gpu_h_per_day", "fleet_gpu_h_per_day"]
