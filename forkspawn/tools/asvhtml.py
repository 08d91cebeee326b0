"""asv's published HTML without the internet: local copies of the scripts and styles it loads from CDNs;
and its first view drawn where a run has one commit.

asv's `index.html` loads jQuery, flot, bootstrap and a few plugins from CDNs; without the internet
(an air-gapped GPU box, this project's VM) the page shows only "external (JavaScript) dependencies
... failed to load". `python -m forkspawn.tools.asvhtml .asv/html` (`make bench`, right after
`asv publish`) copies the vendored files into the published folder (`vendor/`) and points its pages
at them. `python -m forkspawn.tools.asvhtml --fetch` downloads them again from the npm registry
(`npm pack`) into `vendor/asv-html/`.

Every file is pinned in `vendor/asv-html/lock.json` (npm package@version, path in the package,
sha256) and checked against it, both when fetched and when published; a mismatch is refused.
The files are committed, not fetched at build time: `make bench OFFLINE=1` gets the working tree
and nothing else, and they are small (about 400 KB) and MIT-licensed (licences alongside).

asv 0.6 draws its small graphs (the summary grid of the first page, the list's hover graphs) as
lines only, so the results of one commit, those of every first `make bench`, are points that no
line shows: the published scripts draw a graph of one commit as its point (`show_single_commits`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..atomic import write_bytes_atomic, write_text_atomic

VENDOR = Path(__file__).resolve().parents[2] / "vendor" / "asv-html"
LOCK = VENDOR / "lock.json"
PUBLISHED = "vendor"  # the folder of the local copies, inside the published HTML folder
WEB_MODE = 0o644  # mkstemp's 0600 would hide a file from a web server run by someone else
# attributes that pin the CDN's bytes or ask for CORS: gone for a local copy (whose bytes the
# lock pins; a CORS request of a page opened from file:// would fail)
CDN_ATTRS = re.compile(r'\s(?:integrity|crossorigin|referrerpolicy)="[^"]*"')
# asv's small graphs, and the same with a point where there is one commit, inside a margin that
# the point fits in (asv's is 0: a point at the top would be cut in half) (asv 0.6's www/*.js)
SMALL_GRAPH = "[{data: data}], options)"
SMALL_GRAPH_POINT = ("[{data: data, points: {show: data.length === 1, fill: 1, fillColor: false}}], data.length === 1 "
                     "? $.extend(true, {}, options, {grid: {minBorderMargin: null}}) : options)")
SMALL_GRAPH_SCRIPTS = ("summarygrid.js", "asv_ui.js")
EXTERNAL = re.compile(r'<(?:script|link)\b[^>]*?\b(?:src|href)="((?:https?:)?//[^"]+)"[^>]*>', re.I)  # the whole tag


class VendorError(Exception):
    """One line for the user: what is wrong with the vendored files or the published pages."""


def load_lock(lock: Path = LOCK) -> list[dict]:
    """The lock's entries: `{npm, path, file, sha256, url}`; `url` is the CDN address it replaces (null for a licence)."""
    return json.loads(lock.read_text())["files"]


def verify(vendor: Path = VENDOR) -> list[dict]:
    """The lock's entries, once every vendored file has the sha256 the lock records; VendorError if not."""
    entries = load_lock(vendor / LOCK.name)
    for e in entries:
        path = vendor / e["file"]
        if not path.is_file():
            raise VendorError(f"{path} is missing; run `python -m forkspawn.tools.asvhtml --fetch`")
        got = _sha256(path.read_bytes())
        if got != e["sha256"]:
            raise VendorError(f"{path}: sha256 {got} differs from {e['sha256']} in {vendor / LOCK.name}")
    return entries


def make_offline(html: Path, vendor: Path = VENDOR) -> int:
    """Point `html`'s pages at verified local copies of their CDN files; how many references were rewritten.

    Idempotent. VendorError if a page still loads something from elsewhere (a newer asv asking
    for a file the lock does not pin), so that the folder is never silently half-offline.
    """
    entries = verify(vendor)
    pages = sorted(html.glob("*.html"))
    if not pages:
        raise VendorError(f"{html} holds no published HTML pages (run `asv publish` first)")
    by_url = {e["url"]: f"{PUBLISHED}/{e['file']}" for e in entries if e["url"]}
    rewritten, changed = 0, {}

    def local(m: re.Match) -> str:
        nonlocal rewritten
        if m.group(1) not in by_url:
            return m.group(0)
        rewritten += 1
        return CDN_ATTRS.sub("", m.group(0).replace(f'"{m.group(1)}"', f'"{by_url[m.group(1)]}"'))

    for page in pages:  # every page checked before anything is written
        text = page.read_text()
        new = EXTERNAL.sub(local, text)
        if left := EXTERNAL.search(new):
            raise VendorError(f"{page} loads {left.group(1)}, which {vendor / LOCK.name} does not pin")
        if new != text:
            changed[page] = new
    for e in entries:  # the copies first: a rewritten page never points at a file not yet there
        write_bytes_atomic(html / PUBLISHED / e["file"], (vendor / e["file"]).read_bytes(), WEB_MODE)
    for page, new in changed.items():
        write_text_atomic(page, new, WEB_MODE)
    return rewritten


def show_single_commits(html: Path) -> int:
    """Make asv's small graphs in `html` draw a graph of one commit as its point; how many graphs
    were changed (0 once done, or where a newer asv draws them otherwise: they are left as they are)."""
    changed = 0
    for name in SMALL_GRAPH_SCRIPTS:
        path = html / name
        text = path.read_text() if path.is_file() else ""
        if SMALL_GRAPH in text:
            changed += text.count(SMALL_GRAPH)
            write_text_atomic(path, text.replace(SMALL_GRAPH, SMALL_GRAPH_POINT), WEB_MODE)
    return changed


def fetch(vendor: Path = VENDOR) -> None:
    """Download the locked packages from the npm registry and write their files into `vendor`, each checked first."""
    entries = load_lock(vendor / LOCK.name)
    with tempfile.TemporaryDirectory(prefix="asv-vendor-") as tmp:
        for spec in sorted({e["npm"] for e in entries}):
            out = subprocess.run(["npm", "pack", spec, "--silent", "--pack-destination", tmp],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise VendorError(f"npm pack {spec} failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
            with tarfile.open(Path(tmp, out.stdout.strip().splitlines()[-1])) as tar:
                for e in (e for e in entries if e["npm"] == spec):
                    try:
                        data = tar.extractfile(f"package/{e['path']}").read()
                    except KeyError:
                        raise VendorError(f"{spec} has no {e['path']}") from None
                    if _sha256(data) != e["sha256"]:
                        raise VendorError(f"{spec} {e['path']}: sha256 {_sha256(data)} differs from {e['sha256']} in the lock")
                    write_bytes_atomic(vendor / e["file"], data, WEB_MODE)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forkspawn.tools.asvhtml", description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", type=Path, help="asv's published folder (html_dir, e.g. .asv/html)")
    parser.add_argument("--fetch", action="store_true", help="download the locked files from the npm registry")
    args = parser.parse_args(argv)
    if not args.fetch and args.html is None:
        parser.error("give asv's published folder, or --fetch")
    try:
        if args.fetch:
            fetch()
            print(f"fetched and verified the files of {LOCK}")
        if args.html is not None:
            n = make_offline(args.html)
            print(f"asv HTML works offline: {n} CDN reference(s) now load from {args.html / PUBLISHED}")
            print(f"asv's small graphs draw a single commit as a point: {show_single_commits(args.html)} changed")
    except (VendorError, OSError) as exc:
        print(f"forkspawn asvhtml: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
