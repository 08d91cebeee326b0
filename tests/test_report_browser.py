"""The report in a real headless browser (Chromium from Debian's packages; `make browser`): it
renders with its six charts decoded, and hostile strings from the results stay text."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_analysis import matplotlib_fonts_loaded, write_results  # noqa: F401 (a fixture)

from analysis import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = "<script>alert(1)</script>"
# Appended to a copy of the page, not the report: after load, record what the browser decoded.
PROBE = """<script>window.addEventListener("load", () => {
  const imgs = [...document.querySelectorAll("figure[data-chart] img")];
  document.body.setAttribute("data-probe", JSON.stringify({
    charts: imgs.map(i => i.closest("figure").dataset.chart),
    widths: imgs.map(i => i.naturalWidth),
    scripts: document.scripts.length,
    h2: [...document.querySelectorAll("h2")].map(h => h.textContent)}));
});</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    """One headless Chromium run with a throw-away profile; everything it started is ended after.
    Its temp dir is short: Chromium's singleton socket path must fit in 108 bytes."""
    tmp = tempfile.mkdtemp(prefix="cr-")
    env = {**os.environ, "TMPDIR": tmp, "HOME": tmp}
    proc = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                             "--no-first-run", "--disable-background-networking", "--disable-component-update",
                             "--disable-sync", "--disable-dev-shm-usage", "--disable-crash-reporter",
                             f"--user-data-dir={tmp}/profile", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: helpers that outlived it
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: run `make browser`")
def test_report_renders_its_six_charts_in_chromium(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results", machine=HOSTILE, error='<img src=x onerror="alert(2)">')
    index = report.write_report(results, tmp_path / "report")
    probe = index.with_name("probe.html")
    probe.write_text(index.read_text().replace("</body>", PROBE + "</body>"))

    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = json.loads(html.unescape(re.search(r'data-probe="([^"]*)"', dom.stdout).group(1)))
    assert found["charts"] == ["startup_phases", "memory", "throughput", "tradeoff", "amortisation", "compatibility"]
    assert all(w > 300 for w in found["widths"]), found["widths"]  # every PNG decoded
    assert found["scripts"] == 1  # the probe's own: nothing from the results became a script
    assert found["h2"][0] == f"Machine {HOSTILE}"  # shown as text

    shot = tmp_path / "shot.png"
    run = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", index.as_uri())
    assert run.returncode == 0 and shot.stat().st_size > 50_000, run.stderr[-2000:]  # more than a blank page


FIRST_SCREEN = """<script>window.addEventListener("load", () => {
  const box = e => e ? e.getBoundingClientRect() : null;
  const decision = box(document.querySelector("table.decision"));
  const figure = box(document.querySelector("figure"));
  const cells = [...document.querySelectorAll("td")].map(td => td.scrollWidth - td.clientWidth);
  document.body.setAttribute("data-probe", JSON.stringify({
    decision_top: decision && decision.top, decision_bottom: decision && decision.bottom,
    verdicts: [...document.querySelectorAll("table.decision td.verdict")].map(td => td.textContent),
    figure_top: figure && figure.top, widest_overflow: Math.max(0, ...cells),
    page_width: document.documentElement.scrollWidth, view_width: window.innerWidth}));
});</script>"""
COMMITTED = sorted(p.parent for p in (Path(__file__).resolve().parents[1] / "reports").glob("*/index.html"))


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: run `make browser`")
@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.name)
def test_each_committed_reports_first_screen_is_the_decision(folder: Path, tmp_path: Path) -> None:
    """At 1400x900 the decision table (verdict or "no verdict" per setting, the comparison it turns on,
    what would decide it) is on the first screen, before any chart; no cell is wider than the page;
    one machine's page prints in under 10 pages (tables are folded)."""
    page = tmp_path / "probe.html"
    page.write_text((folder / "index.html").read_text().replace("</body>", FIRST_SCREEN + "</body>"))
    dom = _chromium("--window-size=1400,900", "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    found = json.loads(html.unescape(re.search(r'data-probe="([^"]*)"', dom.stdout).group(1)))
    assert found["decision_top"] is not None and found["decision_top"] < 300, found
    assert found["verdicts"] and all(v == "no verdict" or v for v in found["verdicts"])
    assert found["decision_bottom"] < 900 or found["decision_top"] < 200, found  # it starts on the first screen
    assert found["figure_top"] > found["decision_bottom"], found  # the decision before the charts
    assert found["widest_overflow"] <= 1 and found["page_width"] <= found["view_width"], found
    pdf = tmp_path / "page.pdf"
    printed = _chromium("--no-pdf-header-footer", f"--print-to-pdf={pdf}", (folder / "index.html").as_uri())
    assert printed.returncode == 0 and pdf.exists(), printed.stderr[-2000:]
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf.read_bytes()))
    assert 1 <= pages < 10, pages
