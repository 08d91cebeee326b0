# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Capacity planning with forkspawn-bench results
#
# Which multiprocessing start method should the tensor-parallel workers of an inference server
# use, for a given node and a given number of worker (re)starts a day? This walk-through reads
# the committed sample report (`reports/sample-cpu/`, a CPU run of the `torch-tp` engine), looks
# at what each start method costs, and plans a node with `analysis.capacity`.
#
# Set `FORKSPAWN_RESULTS` to a results folder (e.g. `.asv/results`) to run it over your own run.

# %%
import os
from pathlib import Path

import pandas as pd

from analysis import load
from analysis.capacity import Node, break_even_restarts, plan, rates_differ
from analysis.load import latest, method_order

root = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
results = load(os.environ.get("FORKSPAWN_RESULTS", root / "reports" / "sample-cpu"))
table = latest(results.table)
results.machines[["machine", "engine", "engine_version", "gpu", "num_cpu", "ram_gib", "versions"]]

# %% [markdown]
# ## What was measured
#
# The tidy table has one row per measured value. Configurations that failed or could not run
# stay in it with their status, so nothing disappears silently:

# %%
table.groupby(["status"]).size().rename("rows")

# %% [markdown]
# Time to ready (median of the cold starts, seconds) and the host memory of one replica
# (PSS of the whole worker group: parent, forkserver and ranks; PSS sums to the real footprint):

# %%
ok = table[table["status"] == "ok"]
summary = ok[ok["metric"].isin(["time_to_ready_s", "mem.group.pss_mib"])].pivot_table(
    index=["engine", "parent_state", "tp"], columns=["metric", "method"], values="value")
summary.reindex(columns=method_order(summary.columns.get_level_values("method")), level="method").round(2)

# %% [markdown]
# ## Planning the measured machine
#
# The node defaults to the machine that was measured. On a CPU-only node a replica needs one core
# per rank, so the cores bound the replicas; start-up loss is then counted in core-seconds. A
# restart (`restart_s`) is what a user pays: teardown + exec to ready where the records have it
# (record/3), else time to ready from the start request (the scenario line says which).

# %%
machine = results.machines.iloc[0]
here = Node.of_machine(machine)
p = plan(table, here, tp=1, restarts_per_day=24)
print(p.scenario)
p.table[["method", "status", "replicas", "limited_by", "ram_headroom_gib", "time_to_ready_s", "restart_s",
         "startup_gpu_s_per_day", "tokens_per_s", "recommended", "reason"]]

# %% [markdown]
# ## Planning a bigger node
#
# The same measurements applied to a hypothetical CPU node (64 cores, 1 TiB RAM) with a TP=2
# model that is restarted or scaled up 200 times a day and decodes one hour a day. The host
# memory per replica and the start-up times come from the measured machine. (A GPU node cannot
# be planned from a CPU run: `plan` refuses it with one line.) The verdict names a method only
# where the difference it rests on is resolved at 99%, at least 3% of the other's, and holds at
# every point of the intervals; otherwise it says "no verdict" and what would decide it.

# %%
big = Node(gpus=0, gpu_mem_gib=None, ram_gib=1024, cpus=64)
p = plan(table, big, tp=2, restarts_per_day=200, busy_hours=1)
print(p.scenario)
print("verdict:", p.verdict)
print("recommended:", p.recommended)
p.table[["method", "replicas", "limited_by", "startup_gpu_s_per_day", "reason"]]

# %% [markdown]
# ## How the start-up loss grows with restarts
#
# Core-seconds a day a replica loses to start-up, as the number of starts grows:

# %%
loss = pd.DataFrame({
    n: plan(table, big, tp=2, restarts_per_day=n, busy_hours=1).table.set_index("method")["startup_gpu_s_per_day"]
    for n in (1, 10, 100, 1000)
}).rename_axis(columns="starts/day")
loss.round(0)

# %% [markdown]
# ## When does a faster start stop paying off?
#
# A method that starts faster can decode slower. With a load of one busy hour a day at the
# fastest method's rate, the number of starts a day above which each method beats another.
# A break-even exists only where the two decode rates differ at 99% (`rates_differ`): a crossing
# made by medians inside their intervals is noise. None: it never does, always does, or the
# rates are not resolved.

# %%
sel = ok[(ok["parent_state"] == "torch") & (ok["tp"] == 2)]
ttr = sel[sel["metric"] == "time_to_ready_s"].set_index("method")["value"]
rates = sel[sel["metric"] == f"tokens_per_s.b{int(sel['batch'].max())}"].set_index("method")
rate, ci = rates["value"], {m: (r.ci_low, r.ci_high) for m, r in rates.iterrows()}
daily = 3600 * rate.max()
methods = method_order(rate.index)
pd.DataFrame({a: {b: break_even_restarts(ttr[a], rate[a], ttr[b], rate[b], daily) if rates_differ(ci[a], ci[b])
                  else None for b in methods} for a in methods}, dtype=float).round(1)

# %% [markdown]
# The same picture as a chart (chart 5 of the report):

# %%
import io  # noqa: E402

import matplotlib  # noqa: E402
from IPython.display import Image  # noqa: E402

from analysis.charts import STYLE, chart_amortisation, view  # noqa: E402

png = io.BytesIO()
with matplotlib.rc_context(STYLE):
    chart_amortisation(view(table)).savefig(png, format="png", dpi=80, bbox_inches="tight")
Image(png.getvalue())

# %% [markdown]
# **Caveat.** The committed sample is a short CPU run (two cold starts per configuration), so
# its confidence intervals are wide, and GPU memory and CUDA parent states are absent. Re-run
# this notebook over a full GPU run before deciding anything.
