"""Records and asv results from before the analysis was restructured (issue 31) still load and
chart identically: every committed report's tidy table is its table.csv (which the analysis of its
day wrote), and rebuilding the report from the results it carries gives the same files.

Chart files are compared byte for byte where this matplotlib is the one that drew them (its
version is in each SVG; the report writes no dates into PNG or SVG): another version renders the
same figure into other bytes, so there only the page's text and the table are compared."""

from __future__ import annotations

import os
import re
from pathlib import Path

import matplotlib
import pytest
from test_analysis import matplotlib_fonts_loaded  # noqa: F401 (a fixture)

from analysis import load
from analysis.derive import no_small_n_intervals
from analysis.report import write_report

REPO = Path(__file__).resolve().parents[1]
REPORTS = sorted(p for p in (REPO / "reports").iterdir() if (p / "results").is_dir())
PNG = re.compile(rb"data:image/png;base64,[A-Za-z0-9+/=]+")  # the charts embedded in index.html
DRAWN_BY = re.compile(rb"Matplotlib v([^,<\s]+)")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module", params=REPORTS, ids=lambda p: p.name)
def rebuilt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a committed report, the same report rebuilt now from its results/, as `python -m analysis
    report reports/NAME -o ...` run in the repository does: the page names the folder it read)."""
    out = tmp_path_factory.mktemp("rebuilt") / request.param.name
    here = Path.cwd()
    os.chdir(REPO)
    try:
        write_report(request.param.relative_to(REPO), out)
    finally:
        os.chdir(here)
    return request.param, out


@pytest.mark.parametrize("folder", REPORTS, ids=lambda p: p.name)
def test_the_tidy_table_is_the_committed_table_csv(folder: Path) -> None:
    assert no_small_n_intervals(load(folder).table).to_csv(index=False) == (folder / "table.csv").read_text()


def test_a_rebuilt_report_has_the_committed_page_table_and_results(rebuilt: tuple[Path, Path]) -> None:
    committed, now = (_files(f) for f in rebuilt)
    assert sorted(now) == sorted(committed)
    assert {k: v for k, v in now.items() if k.startswith("results/")} == \
        {k: v for k, v in committed.items() if k.startswith("results/")}
    assert now["table.csv"] == committed["table.csv"]
    assert PNG.sub(b"", now["index.html"]) == PNG.sub(b"", committed["index.html"])


def test_a_rebuilt_report_draws_the_committed_charts(rebuilt: tuple[Path, Path]) -> None:
    committed, now = (_files(f) for f in rebuilt)
    charts = [k for k in committed if k.endswith((".png", ".svg")) and "/" not in k]
    versions = {v.decode() for k in charts if k.endswith(".svg") for v in DRAWN_BY.findall(committed[k])}
    if versions != {matplotlib.__version__}:
        pytest.skip(f"the charts were drawn by matplotlib {', '.join(sorted(versions))}, this is "
                    f"{matplotlib.__version__}: their bytes differ by the renderer")
    assert len(charts) == 12
    assert [k for k in charts if now[k] != committed[k]] == []
    assert now["index.html"] == committed["index.html"]  # the PNGs embedded in it too
