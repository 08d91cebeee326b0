"""Bad input: one line on stderr naming the culprit (and the valid choices), exit status 2,
nothing on stdout and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import forkspawn

CPUS = len(os.sched_getaffinity(0))


def _bad(*args: str) -> str:
    out = forkspawn("measure", "--json", *args)
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.mark.parametrize("args,culprit", [
    (["--method", "vfork"], "'vfork'"),
    (["--engine", "tgi"], "'tgi'"),
    (["--parent-state", "warm"], "'warm'"),
    (["--tp", "0"], "tp must be at least 1"),
    (["--tp", str(CPUS + 1)], f"tensor-parallel size {CPUS + 1} exceeds"),
    (["--batch", "0"], "batch sizes must be positive"),
    (["--method", "spawn", "--forkserver", "warm"], "forkserver methods only"),
    (["--model", "/nonexistent/model"], "/nonexistent/model"),
    (["--fault", "rank0:decode:kill"], "--fault applies to --engine vllm only"),
    (["--engine", "vllm", "--fault", "rank0:weights_loaded:kill"], "PROCESS:decode:kill with PROCESS rank<N> or engine-core"),
    (["--engine", "vllm", "--fault", "worker:decode:kill"], "bad --fault='worker:decode:kill'"),
    (["--compile-cache", "cold"], "--compile-cache applies to --engine vllm or vllm-serve only"),
    (["--engine", "vllm", "--fault", "rank1:decode:kill"], "--fault rank1:decode:kill: no rank1 at --tp 1 (ranks 0..0)"),
])
def test_bad_option_is_one_line_naming_it(args: list[str], culprit: str) -> None:
    assert culprit in _bad(*args)


def test_unknown_choice_lists_the_valid_ones() -> None:
    line = _bad("--method", "vfork")
    assert all(m in line for m in ("fork", "spawn", "forkserver", "forkserver-preload"))


def test_help_lists_every_subcommand_and_each_has_a_handler() -> None:
    from forkspawn.cli import COMMANDS

    out = forkspawn("--help")
    assert out.returncode == 0, out.stderr
    listed = out.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert listed == list(COMMANDS) and {"measure", "prefill", "spent", "quality", "soak", "leftovers"} <= set(listed)


@pytest.mark.parametrize("args,culprit", [
    (["measures"], "invalid choice: 'measures'"),
    (["quality", "overheads"], "invalid choice: 'overheads'"),
    (["quality", "precision"], "precision needs a records JSON Lines file"),
    (["quality", "precision", "/nonexistent/records.jsonl"], "/nonexistent/records.jsonl"),
    (["soak", "--method", "vfork"], "'vfork'"),
    (["spent", "."], "spent needs FORKSPAWN_RUN_ID"),
])
def test_every_subcommand_refuses_bad_input_in_one_line(args: list[str], culprit: str) -> None:
    out = forkspawn(*args, env={"FORKSPAWN_RUN_ID": ""})
    assert out.returncode == 2 and out.stdout == "", out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and culprit in out.stderr, out.stderr


def _checkpoint(tmp_path: Path) -> Path:
    from forkspawn.checkpoint import PRESETS, write_checkpoint

    write_checkpoint(tmp_path, PRESETS["tiny"], seed=1)
    return tmp_path


def test_truncated_checkpoint_is_rejected_before_any_worker_starts(tmp_path: Path) -> None:
    weights = _checkpoint(tmp_path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert "truncated" in _bad("--model", str(tmp_path))


def test_corrupt_config_is_rejected(tmp_path: Path) -> None:
    (_checkpoint(tmp_path) / "config.json").write_text("{not json")
    assert "unreadable config.json" in _bad("--model", str(tmp_path))


def test_unwritable_output_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "record.json"
    assert "not a writable directory" in _bad("-o", str(target))
    assert not target.parent.exists()


def test_leftovers_reports_a_clean_machine_after_a_run() -> None:
    assert forkspawn("measure", "--repeat", "1", "--decode-steps", "1", "--batch", "1").returncode == 0
    out = forkspawn("leftovers")
    assert (out.returncode, out.stdout.strip()) == (0, "nothing left behind")


def test_leftovers_counts_only_what_is_new_since_its_earlier_listing(tmp_path: Path) -> None:
    """`make bench` lists what other runs left before it starts and fails only on what is new."""
    import os
    import tempfile

    stale = Path(tempfile.mkdtemp(prefix="forkspawn-", dir=os.environ["TMPDIR"]))
    try:
        first = forkspawn("leftovers")
        assert first.returncode == 1 and f"temp dir {stale}" in first.stdout
        (tmp_path / "before.txt").write_text(first.stdout)
        again = forkspawn("leftovers", "--except", str(tmp_path / "before.txt"))
        assert again.returncode == 0 and again.stdout.startswith("nothing left behind")
        newer = Path(tempfile.mkdtemp(prefix="forkspawn-", dir=os.environ["TMPDIR"]))
        late = forkspawn("leftovers", "--except", str(tmp_path / "before.txt"))
        assert (late.returncode, late.stdout.strip()) == (1, f"temp dir {newer}")
        newer.rmdir()
    finally:
        stale.rmdir()


def test_vllm_bench_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    """`python -m forkspawn.engines.vllm_bench` (vLLM's own start-up benchmark) checks its input
    before it resolves a model or starts anything."""
    import subprocess
    import sys

    for args, culprit in ((["--out", str(tmp_path / "missing" / "b.json")], "is not a directory"),
                          (["--out", str(tmp_path / "b.json"), "--cold", "0"], "--cold and --warm must be at least 1")):
        out = subprocess.run([sys.executable, "-m", "forkspawn.engines.vllm_bench", *args], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 2 and out.stdout == "", out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and culprit in out.stderr
    assert not any(tmp_path.iterdir())
