"""The metric names are built and parsed in one place (forkspawn/vocabulary.py)."""

import subprocess
import sys

from forkspawn import vocabulary as vocab
from forkspawn.config import Config


def test_names_round_trip():
    assert vocab.phase("ready") == "phase.ready"
    assert vocab.phase("ready", 1) == "phase.ready.rank1"
    assert vocab.mem("rank0", "uss") == vocab.mem("rank0", "uss_mib") == "mem.rank0.uss_mib"
    assert vocab.parse("phase.ready.rank1") == {"family": "phase", "phase": "ready", "rank": 1}
    assert vocab.parse("mem.group.peak_rss_mib") == {"family": "mem", "process": "group", "kind": "peak_rss"}
    assert vocab.parse(vocab.tokens_per_s(16)) == {"family": "tokens_per_s", "batch": 16}
    assert vocab.parse("engine.kv_cache_mib") == {"family": "engine", "name": "kv_cache_mib"}
    assert vocab.parse(vocab.TIME_TO_READY) == {"family": vocab.TIME_TO_READY}
    assert vocab.STATUS_UNIT == "0 ok, 1 error, 2 timeout"


def test_config_key_is_the_sidecars():
    c = Config(engine="vllm", method="fork", parent_state="torch", tp=2)
    assert vocab.config_key(c) == "vllm|fork|torch|runtime|2"
    assert vocab.config_key(c.replace(extra={"b": 1, "a": 2})) == 'vllm|fork|torch|runtime|2|{"a": 2, "b": 1}'


def test_imports_nothing_heavy():
    code = "import sys, forkspawn.vocabulary; print(sorted({'torch', 'psutil', 'pynvml'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
