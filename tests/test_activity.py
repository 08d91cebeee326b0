"""A process's activity over an interval (forkspawn/activity.py) and its garbage collections
(forkspawn/gcwatch.py), read from outside while real forked and spawned children run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from forkspawn import activity, gcwatch

# The main module installs the hook from the environment, as forkspawn.parent does: a spawned
# child re-imports it as __mp_main__, a forked one inherits the installed hook.
CHILDREN = textwrap.dedent("""
    import gc, multiprocessing as mp, sys, threading
    from forkspawn import gcwatch
    gcwatch.install_from_env()

    def child(ready, stop):
        for _ in range(3):
            gc.collect()
        threads = [threading.Thread(target=stop.wait) for i in range(2)]
        for t in threads:
            t.start()
        ready.set()
        stop.wait(60)

    if __name__ == "__main__":
        procs = []
        for method in ("fork", "spawn"):
            ctx = mp.get_context(method)
            ready, stop = ctx.Event(), ctx.Event()
            p = ctx.Process(target=child, args=(ready, stop))
            p.start()
            ready.wait(60)
            procs.append((p, stop))
            print(method, p.pid, flush=True)
        sys.stdin.readline()
        for p, stop in procs:
            stop.set()
            p.join(30)
""")


def test_collections_and_threads_of_forked_and_spawned_children(tmp_path: Path) -> None:
    script = tmp_path / "children.py"
    script.write_text(CHILDREN)
    gc_dir = tmp_path / "gc"
    gc_dir.mkdir()
    env = {**os.environ, gcwatch.ENV: str(gc_dir), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    try:
        pids = dict(proc.stdout.readline().split() for _ in range(2))
        for method, pid in pids.items():
            snap = activity.snapshot(int(pid), gc_dir)
            # three explicit collections of generation 2 in the child itself, none inherited
            assert snap["gc_collections"][2] == 3, (method, snap)
            assert snap["gc_s"] > 0 and snap["threads"] >= 3, (method, snap)
            assert sum(snap["thread_names"].values()) == snap["threads"]
            assert snap["cpus"] == len(os.sched_getaffinity(int(pid)))
            later = activity.during(snap, activity.snapshot(int(pid), gc_dir))
            assert later["gc_collections"] == [0, 0, 0] and later["minor_faults"] >= 0
        assert activity.snapshot(proc.pid, gc_dir)["gc_collections"] is not None, "the main process counts too"
    finally:
        proc.communicate("\n", timeout=60)
    assert proc.returncode == 0
    assert activity.snapshot(int(pids["fork"]), gc_dir) is None, "a process that has gone has no snapshot"
