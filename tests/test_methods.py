"""The start methods (forkspawn/methods/): every name means something to each way of applying it,
and what `apply` starts, `verify` reads back from /proc as that method, on real processes. A new
method gets these tests by being in `METHODS`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from forkspawn import methods
from forkspawn import vocabulary as vocab
from forkspawn.methods import apply
from forkspawn.methods.verify import maps_torch  # noqa: F401 (verify imports without the engines)

# One cold start of two trivial ranks in a fresh interpreter (the forkserver is process-global):
# the method verify.method_used reads from /proc.
STARTED = """
import json, sys
from forkspawn import trivial
from forkspawn.methods import verify
g = trivial.group(sys.argv[1], 2)
try:
    g.start()
    g.wait_ready(120)
    print(json.dumps(verify.method_used(g.pids)))
finally:
    g.close()
"""


def test_every_method_is_defined_for_every_way_of_applying_it() -> None:
    assert set(methods.MULTIPROCESSING) == set(methods.METHODS)
    assert set(methods.PRELOAD) <= set(methods.METHODS)
    for m in methods.METHODS:
        assert vocab.base_method(m) == m
        assert apply.vllm_environment(m)[apply.VLLM_METHOD_ENV] in ("fork", "spawn", "forkserver")
        # vLLM's own default executor (None), its Ray executor for ray, the mp variant where asked
        assert apply.vllm_backend(m) == ("ray" if m == "ray" else None)
        assert apply.vllm_backend(m, "mp") == ("ray" if m == "ray" else "mp")
    assert [vocab.base_method(label) for label in ("fork-eager", "spawn-coldcache", "ray-override")] == \
        ["fork", "spawn", "ray"]
    with pytest.raises(ValueError, match="unknown start method 'vfork'"):
        apply.context("vfork")


@pytest.mark.parametrize("method", [m for m in methods.METHODS if m != methods.RAY])
def test_what_apply_starts_verify_reads_back(method: str) -> None:
    out = subprocess.run([sys.executable, "-c", STARTED, method], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == method
