"""The README is the answer first, and its figures cannot drift from the committed reports: every
block between `<!-- NAME: COMMAND -->` and `<!-- /NAME -->` is exactly what COMMAND prints now
(the headline and the list of reports whole; a plan's verdict line and break-even table), each
document under docs/ is linked once, and the README stays about 150 lines."""

from __future__ import annotations

import io
import re
import shlex
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from analysis import __main__ as cli
from analysis.decide import THRESHOLD

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
# <!-- NAME: COMMAND (what of its output) -->: a plan's block holds its verdict line, and its break-even
# table where the parenthesis says so
BLOCK = re.compile(r"<!-- (\w+): (python -m analysis [^(>]+?)(?: \(([^>]*)\))? -->\n(.*?)<!-- /\1 -->", re.S)


def _run(command: str) -> str:
    """What `python -m analysis ...` prints, run in this interpreter from the repository's root."""
    args = shlex.split(command)[3:]
    out = io.StringIO()
    with redirect_stdout(out), pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        assert cli.main(args) == 0, command
    return out.getvalue()


def _plan_part(output: str, table: bool) -> str:
    """A plan's verdict line, and its break-even table if asked (the scenario and the methods stay out)."""
    lines = output.splitlines()
    keep = [ln for ln in lines if ln.startswith("verdict:")]
    if table and "starts/day \\ busy" in output:
        start = next(i for i, ln in enumerate(lines) if ln.startswith("starts/day \\ busy"))
        end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
        keep += lines[start:end]
    return "\n".join(keep)


BLOCKS = BLOCK.findall(README)


def test_the_readme_has_its_generated_blocks() -> None:
    assert {name for name, *_ in BLOCKS} == {"headline", "plan", "reports"}
    assert README.index("<!-- headline:") < README.index("## Two commands"), "the answer comes first"


@pytest.mark.parametrize("name,command,what,text", BLOCKS, ids=[f"{n}: {c}" for n, c, *_ in BLOCKS])
def test_every_generated_block_is_what_its_command_prints_now(name: str, command: str, what: str, text: str) -> None:
    out = _run(command)
    if name == "plan":
        body = text.strip().removeprefix("```text").removesuffix("```").strip()
        want = _plan_part(out, "break-even" in what)
        assert body == want, f"README block of `{command}` drifted; it is now:\n{want}"
    else:
        assert text.strip() == out.strip(), f"README block of `{command}` drifted; it is now:\n{out}"


def test_the_readme_is_short_shows_the_two_commands_and_links_each_document_once() -> None:
    assert len(README.splitlines()) <= 160
    assert "make bench" in README and "make test" in README
    for doc in sorted((REPO / "docs").glob("*.md")):
        assert README.count(f"]({doc.relative_to(REPO)})") == 1, doc.name
    for target in re.findall(r"\]\(([^)#]+)", README):
        assert (REPO / target).exists(), target
    # the prose's threshold is the planner's
    assert f"at least {100 * THRESHOLD:g}% of the other method's" in " ".join(README.split())


def test_documents_link_to_what_exists() -> None:
    for doc in (REPO / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)", doc.read_text()):
            assert (doc.parent / target).exists(), (doc.name, target)
