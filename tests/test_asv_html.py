"""asv's published HTML works without the internet: after `python -m forkspawn.tools.asvhtml`, the page
loads its scripts from the published folder (served over HTTP here, as `asv preview` would) and
draws a benchmark's graph in headless Chromium; vendored files that differ from the lock are refused."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_report_browser import CHROMIUM, _chromium

from forkspawn.tools import asvhtml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "reports" / "cpu-default" / "results"  # a real run: our workload, default profile
BENCHMARK = "torch_tp.TorchTPStartup.track_time_to_ready"
GRAPH = f"#{BENCHMARK}?p-tp='2'&p-parent_state='torch'"  # measured in that run (TP 1 is not)
# The coloured pixels of a canvas: the series' points (grid, axes and labels are grey).
COLOURED = """function coloured(c) {
  const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < px.length; i += 4)
    if (px[i + 3] > 0 && Math.max(px[i], px[i + 1], px[i + 2]) - Math.min(px[i], px[i + 1], px[i + 2]) > 60) n++;
  return n;
}"""
# Appended to a copy of the page: every 250 ms, record whether the graph's canvas holds coloured pixels.
PROBE = """<script>""" + COLOURED + """ setInterval(() => {
  const c = document.querySelector("#main-graph canvas.flot-base");
  const n = c ? coloured(c) : 0;
  document.body.setAttribute("data-probe", JSON.stringify({canvas: !!c, coloured: n, jquery: !!window.jQuery,
    plot: !!(window.jQuery && jQuery.plot), legend: [...document.querySelectorAll("#main-graph .legendLabel")].map(e => e.textContent)}));
}, 250);</script>"""


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def publish(tmp: Path, envs: str = "*-existing-py_work_main_.venv_bin_python.json") -> Path:
    """asv's HTML of `RESULTS` (by default our workload's environment; `envs` is a glob of its
    result files), re-attributed to the one commit of a fresh repository."""
    repo, results = tmp / "repo", tmp / "results"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "the measured tree")
    commit = _git(repo, "rev-parse", "HEAD").strip()
    (results / "vm-cpu").mkdir(parents=True)
    shutil.copy(RESULTS / "benchmarks.json", results)
    shutil.copy(RESULTS / "vm-cpu" / "machine.json", results / "vm-cpu")
    for path in (RESULTS / "vm-cpu").glob(envs):
        run = json.loads(path.read_text())
        run["commit_hash"] = commit
        (results / "vm-cpu" / f"{commit[:8]}-{run['env_name']}.json").write_text(json.dumps(run))
    conf = tmp / "asv.conf.json"
    conf.write_text(json.dumps({"version": 1, "project": "forkspawn-bench", "repo": str(repo), "branches": ["main"],
                                "dvcs": "git", "environment_type": "virtualenv", "results_dir": str(results),
                                "html_dir": str(tmp / "html"), "env_dir": str(tmp / "env")}))
    out = subprocess.run([sys.executable, "-m", "asv", "publish", "--config", str(conf)], capture_output=True,
                         text=True, cwd=tmp)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return tmp / "html"


class Served:
    """`python -m http.server` on 127.0.0.1 and a free port (the kernel's choice), stopped on exit."""

    def __init__(self, folder: Path, log: Path):
        self.folder, self.log = folder, log

    def __enter__(self) -> str:
        self.err = open(self.log, "w")
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                                      "--directory", str(self.folder)], stdout=subprocess.PIPE, stderr=self.err,
                                     text=True)
        line = self.proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (http://127.0.0.1:N/) ..."
        port = re.search(r"port (\d+)", line)
        assert port, f"http.server said {line!r}"
        return f"http://127.0.0.1:{port.group(1)}"

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.proc.stdout.close()
        self.err.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: run `make browser`")
def test_published_html_draws_a_graph_without_the_internet(tmp_path: Path) -> None:
    site = publish(tmp_path)
    before = (site / "index.html").read_text()
    assert "https://code.jquery.com/jquery-3.3.1.min.js" in before  # what fails without the internet

    assert asvhtml.make_offline(site) == 10
    after = (site / "index.html").read_text()
    assert not asvhtml.EXTERNAL.search(after) and "integrity=" not in after
    assert asvhtml.make_offline(site) == 0  # idempotent: nothing left to rewrite
    probe = site / "probe.html"
    probe.write_text(after.replace("</body>", PROBE + "</body>"))

    log = tmp_path / "http.log"
    with Served(site, log) as url:
        dom = _chromium("--virtual-time-budget=10000", "--dump-dom", f"{url}/probe.html{GRAPH}")
        shot = tmp_path / "graph.png"
        snap = _chromium(f"--screenshot={shot}", "--window-size=1280,900", "--virtual-time-budget=10000",
                         f"{url}/index.html{GRAPH}")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "failed to load" not in dom.stdout  # asv's error.html, where a missing script sends the page
    found = json.loads(html.unescape(re.search(r'data-probe="([^"]*)"', dom.stdout).group(1)))
    assert found["jquery"] and found["plot"] and found["canvas"], found
    assert found["legend"][:2] == ["method-fork; parent_state-torch; tp-2", "method-spawn; parent_state-torch; tp-2"]
    assert found["coloured"] > 20, found  # the series' points are drawn
    requests = log.read_text()
    assert "GET /vendor/flot-0.8.3/jquery.flot.js" in requests and " 404 " not in requests, requests[-2000:]
    assert snap.returncode == 0 and shot.stat().st_size > 30_000, snap.stderr[-2000:]  # more than a blank page
    # the screenshot: look at it with `pytest --basetemp=DIR` and DIR/test_published_*/graph.png


def test_a_vendored_file_that_differs_from_the_lock_is_refused(tmp_path: Path) -> None:
    vendor = tmp_path / "vendor"
    shutil.copytree(asvhtml.VENDOR, vendor)
    site = tmp_path / "html"
    site.mkdir()
    (site / "index.html").write_text('<script src="https://code.jquery.com/jquery-3.3.1.min.js"></script>')
    (vendor / "jquery-3.3.1" / "jquery.min.js").write_text("alert('not jQuery')")
    with pytest.raises(asvhtml.VendorError, match=r"jquery\.min\.js: sha256 \w+ differs from \w+ in .*lock\.json") as err:
        asvhtml.make_offline(site, vendor)
    assert "\n" not in str(err.value)
    assert not (site / "vendor").exists() and "code.jquery.com" in (site / "index.html").read_text()


def test_a_cdn_file_the_lock_does_not_pin_is_refused(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<script src="https://cdn.example/new-dependency.js"></script>')
    with pytest.raises(asvhtml.VendorError, match="loads https://cdn.example/new-dependency.js, which .* does not pin"):
        asvhtml.make_offline(tmp_path)


def test_the_command_line_says_one_line_and_exits_2(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "forkspawn.tools.asvhtml", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [f"forkspawn asvhtml: {tmp_path} holds no published HTML pages "
                                               "(run `asv publish` first)"]


# Appended to a copy of the first page: how many of the summary grid's graphs hold coloured pixels.
FIRST_VIEW_PROBE = """<script>""" + COLOURED + """ setInterval(() => {
  const graphs = [...document.querySelectorAll("#summarygrid-display canvas.flot-base")];
  const drawn = graphs.filter(c => coloured(c) > 0);
  document.body.setAttribute("data-probe", JSON.stringify({graphs: graphs.length, drawn: drawn.length}));
}, 250);</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: run `make browser`")
def test_the_first_view_draws_the_one_commit_of_a_run(tmp_path: Path) -> None:
    """asv's summary grid draws lines only: the one commit of a first `make bench` showed nothing
    until `show_single_commits` made a lone commit a point."""
    site = publish(tmp_path, envs="*-existing-py_*.json")  # every environment: the engines' graphs come first
    asvhtml.make_offline(site)
    (site / "probe.html").write_text((site / "index.html").read_text().replace("</body>", FIRST_VIEW_PROBE + "</body>"))

    def first_view() -> dict:
        with Served(site, tmp_path / "http.log") as url:
            dom = _chromium("--virtual-time-budget=10000", "--window-size=1280,900", "--dump-dom", f"{url}/probe.html")
        assert dom.returncode == 0, dom.stderr[-2000:]
        return json.loads(html.unescape(re.search(r'data-probe="([^"]*)"', dom.stdout).group(1)))

    before = first_view()
    assert before["graphs"] > 0 and before["drawn"] == 0, before  # asv's lines: nothing of one commit
    assert asvhtml.show_single_commits(site) == 3  # the grid's graphs and the list's two hover graphs
    assert asvhtml.show_single_commits(site) == 0  # idempotent
    after = first_view()
    assert after["graphs"] == before["graphs"] and after["drawn"] == after["graphs"], after
