"""The fleet view: one report over several machines (and TP sizes) compares them side by side,
from the executive summary's estimates (so every figure carries its 99% interval)."""

from __future__ import annotations

from html import escape

import pandas as pd

from . import verdict
from .summary import Group
from .verdict import method_order


def section(groups: list[Group]) -> str:
    """HTML: (1) each method minus fork across machines and TP sizes, with what it costs per rank
    (the difference per replica / TP); (2) engines side by side: time to ready and decode rate of
    every method; older commits are in each machine's History."""
    if len({g.key["machine"] for g in groups}) < 2:
        return ""
    rows = []
    for g in groups:
        for r in g.rows:
            base = {"engine": g.key["engine"], "parent state": g.key["parent_state"]
                    + ("" if g.key["cuda_check"] == "runtime" else f" ({g.key['cuda_check']})"),
                    "method": r.label, "where": f"{g.key['machine']} · TP={g.key['tp']}", "tp": g.key["tp"],
                    "status": r.status, "cause": r.cause, "value": r.values, "delta": r.deltas, "ref": g.reference}
            rows.append(base)
    df = pd.DataFrame(rows)
    if df.empty:
        return ""
    wheres = sorted(df["where"].unique(), key=lambda w: (w.split(" · TP=")[1], w))
    order = {m: i for i, m in enumerate(method_order(df["method"].str.split(" ").str[0]))}

    def cell(x: pd.Series, what: str) -> str:
        if x["status"] != "ok":
            return verdict.word(x["status"], x["cause"])
        if what == "cost":
            d, h = x["delta"].get("ttr"), x["delta"].get("replica_mib")
            if d is None:
                return "reference" if x["method"].split(" ")[0] == x["ref"] else ""
            parts = [f"{d.text(signed=True)} s" + ("" if d.resolved else " (n.r.)")]
            if h is not None:
                per_rank = h.value / int(x["tp"])
                parts.append(f"{h.text(signed=True)} MiB/replica = {per_rank:+,.0f} MiB/rank"
                             + ("" if h.resolved else " (n.r.)"))
            return "<br>".join(escape(p) for p in parts)
        v, t = x["value"].get("ttr"), x["value"].get("decode")
        return "<br>".join(escape(p) for p in ([f"{v.text()} s"] if v else []) + ([f"{t.text()} tok/s"] if t else []))

    def table(what: str) -> str:
        keys = df.drop_duplicates(["engine", "parent state", "method"])
        keys = keys.assign(o=keys["method"].str.split(" ").str[0].map(order)).sort_values(
            ["engine", "parent state", "o"], kind="stable")
        head = "".join(f"<th>{escape(h)}</th>" for h in ["engine", "parent state", "method"] + wheres)
        body = []
        for k in keys.itertuples():
            sel = df[(df["engine"] == k.engine) & (df["parent state"] == k._2) & (df["method"] == k.method)]
            tds = "".join(f"<td class=\"num\">{cell(sel[sel['where'] == w].iloc[0], what) if (sel['where'] == w).any() else ''}</td>"
                          for w in wheres)
            body.append(f"<tr><td>{escape(k.engine)}</td><td>{escape(k._2)}</td><td>{escape(k.method)}</td>{tds}</tr>")
        return (f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
                "</table></div>")

    return ("<h2 id=\"fleet\">Fleet: the same configuration across machines and TP sizes</h2>"
            "<p class=\"note\">Each method minus fork (or what ran as fork) on each machine and TP size: seconds "
            "to ready, and host memory per replica (PSS of the group) with what that is per rank (÷ TP). "
            "Median difference [conservative 99% interval]; n.r.: not resolved (the interval contains 0): no "
            "conclusion. The newest measurement of each configuration; older ones are in each machine's History.</p>"
            + table("cost")
            + "<h3>Engines side by side: time to ready and decode rate (median [99% CI])</h3>" + table("values"))
