"""Measure one configuration: `repeat` cold starts, each in a fresh parent interpreter.

Each parent runs in its own process session and with a run tag in its environment, which every
descendant inherits (forked or exec'd). Whatever it leaves behind (workers, a forkserver, the
resource tracker, an engine's server, even a daemon that left the session) is found by session
or tag and killed afterwards, also when the parent crashes, hangs or this process is interrupted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from . import bundled, engines, leftovers, lifecycle, machine, pagecache, parent_state, ray_cluster
from .checkpoint import resolve_checkpoint, spec_of
from .clock import EXEC_AT_ENV, now
from .config import DEVICE_STATES, Config, ConfigError
from .methods import RAY
from .record import Record, Run, build_record
from .stats import settled

Progress = Callable[[str], None]


def resolve(config: Config) -> Config:
    """Fill in the device and check the request against this machine; ConfigError if impossible."""
    device = machine.default_device() if config.device == "auto" else config.device
    gpus = len(machine.gpus())
    if device == "cuda" and not (gpus and machine.torch_has_cuda()):
        raise ConfigError("device 'cuda' requested, but no NVIDIA GPU or no CUDA build of torch is present")
    present = gpus if device == "cuda" else len(os.sched_getaffinity(0))
    if config.tp > present:
        what = "GPUs" if device == "cuda" else "usable CPU cores"
        raise ConfigError(f"tensor-parallel size {config.tp} exceeds the {present} {what} present; valid: 1..{present}")
    return config.replace(device=device)


def not_applicable(config: Config) -> str | None:
    """Why this configuration cannot exist here (it is then recorded as skipped), or None."""
    if config.device == "cpu" and config.parent_state in DEVICE_STATES:
        return f"parent state {config.parent_state!r} needs a CUDA device; this run is on CPU"
    if config.device == "cpu" and config.cuda_check == "nvml":
        return "the NVML-based CUDA check only matters with a CUDA device; this run is on CPU"
    adapter = engines.adapter(config.engine)
    if config.method not in adapter.METHODS:
        if config.method == RAY:
            return f"{config.engine} has no Ray launch path here (it starts with {', '.join(adapter.METHODS)})"
        return f"{config.engine} starts its workers with {', '.join(adapter.METHODS)} only, not {config.method!r}"
    if config.method == RAY and (reason := ray_cluster.unavailable()):
        return reason
    return adapter.unavailable()


def measure(config: Config, progress: Progress | None = None, reference: list[float] | None = None,
            done: Sequence[Run] = (), on_run: Callable[[Run], str | None] | None = None) -> Record:
    """The `forkspawn measure --json` record of `config` (see docs/formats.md, "The record").

    With `config.least` below `config.repeat`, cold starts stop early once `stats.settled` says
    so, against `reference` (the times to ready of the configuration this one is compared with).
    `done` are cold starts of this configuration measured before (a resumed run, or an
    alternating queue's earlier rounds): the count and the stopping rule go on from them. Its
    `config.warmup_starts` uncounted first starts are made first and kept apart in the record.
    `on_run` is given each new cold start as soon as it ended; what it returns ends the start's
    progress line (e.g. the run's count and time left).
    """
    config = resolve(config)
    gpu_used: dict[str, float | None] = {"before": None, "after": None}
    if reason := not_applicable(config):
        runs, stop = [Run(status="skipped", error=reason, parent_state={"verified": "not-applicable"})], "repeat"
    else:
        gpu_used["before"] = machine.gpu_used_mib()
        runs = list(done)
        stop = cold_starts(config, runs, progress, reference, on_run)
        stop = stop or ("cap" if config.least and config.least < config.repeat else "repeat")
        gpu_used["after"] = machine.gpu_used_mib()
    spec = spec_of(config.model, config.cache_path())
    return build_record(config, [r for r in runs if not r.warmup], machine.describe(), machine.versions(), stop,
                        gpu_used, spec.param_count() if spec else None, warmups=[r for r in runs if r.warmup])


def cold_starts(config: Config, runs: list[Run], progress: Progress | None = None,
                reference: list[float] | None = None, on_run: Callable[[Run], str | None] | None = None,
                until: int | None = None) -> str | None:
    """Add cold starts of `config` (resolved and applicable) to `runs`, each in a fresh parent:
    first its `config.warmup_starts` warm-ups (`Run.warmup`, uncounted), then counted ones until
    the stopping rule ends it (its reason is returned), or `config.repeat` counted cold starts,
    or `until` of them (None is returned for a cap reached; `until=0` makes the warm-ups only)."""
    say = progress or (lambda line: None)
    checkpoint = resolve_checkpoint(config.model, config.cache_path())  # generated once, outside any timed region
    ensure_bytecode()

    def counted() -> list[Run]:
        return [r for r in runs if not r.warmup]

    def one(warmup: bool) -> None:
        # Cold weight loading dominates start-up on real boxes: say what the cache held.
        cache = pagecache.page_cache_state(pagecache.files_of(checkpoint))
        run = run_in_fresh_parent(config)
        run.checkpoint_resident, run.warmup = cache["resident_fraction"], warmup
        runs.append(run)
        note = on_run(run) if on_run else None
        ready = f"{run.time_to_ready_s:.2f} s to ready" if run.time_to_ready_s is not None else run.error
        which = (f"warm-up {len(runs) - len(counted())}/{config.warmup_starts} (not counted)" if warmup
                 else f"run {len(counted())}/{config.repeat}")
        say(f"{label(config)} {which}: {run.status}, {ready}" + (f" [{note}]" if note else ""))

    if runs:
        say(f"{label(config)}: resumed after {len(runs)} cold start(s)")
    while len(runs) - len(counted()) < config.warmup_starts:
        one(warmup=True)
    stop = _stop_after(counted(), config, reference) if counted() else None
    while not stop and len(counted()) < min(config.repeat, config.repeat if until is None else until):
        one(warmup=False)
        stop = _stop_after(counted(), config, reference)
    return stop


def _stop_after(runs: list[Run], config: Config, reference: list[float] | None) -> str | None:
    """Why to stop before `repeat` cold starts, or None: a configuration that failed the same way
    twice in a row fails fast and alike every time ("failed-fast"); one that failed otherwise
    after an ok start, or two different ways, is reported failed ("failed"); an ok one is ended by
    the stopping rule ("resolved", "precise") when it is adaptive (`config.least`)."""
    if runs[-1].status == "ok":
        if not config.least or any(r.status != "ok" for r in runs):
            return None
        return settled([r.time_to_ready_s for r in runs], reference, config.least, config.precision)
    if len(runs) < 2:
        return None
    before = runs[-2]
    if before.status == runs[-1].status and before.error == runs[-1].error:
        return "failed-fast"
    return "failed"


def ensure_bytecode() -> None:
    """Compile this package's modules, which spawned ranks import before their first stamps.

    Python does this on first import unless PYTHONDONTWRITEBYTECODE is set (or the directory is
    read-only): then every child would compile them again, milliseconds that belong to no method.
    """
    import compileall

    compileall.compile_dir(Path(__file__).parent, quiet=2)


def label(config: Config) -> str:
    """How progress lines name a configuration; a labelled variant's options too (a queue's log
    otherwise shows `vllm fork torch tp=1` for fork, fork-coldcache and fork-killworker alike)."""
    extra = f" {json.dumps(config.extra, sort_keys=True)}" if config.extra else ""
    return f"{config.engine} {config.method} {config.parent_state} tp={config.tp}{extra}"


def run_in_fresh_parent(config: Config) -> Run:
    """One cold start in a fresh parent interpreter, stamped with when and where it ran."""
    started_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    host = machine.host_id()
    run = _fresh_parent(config)
    run.started_at, run.host = started_at, host
    return run


def _fresh_parent(config: Config) -> Run:
    bundle_env, bundle_notes = bundled.runtime_env()  # what an offline bundle's left-outs need
    limit = config.parent_limit_s()  # an engine may hang past timeout_s (in start-up, decode or shutdown)
    with tempfile.TemporaryDirectory(prefix="forkspawn-") as tmp:
        cfg, result, log = Path(tmp, "config.json"), Path(tmp, "run.json"), Path(tmp, "parent.log")
        cfg.write_text(config.to_json())
        tag = uuid.uuid4().hex
        shm = leftovers.shm_entries()
        # TMPDIR: whatever the parent, its workers or an engine leave in temp dirs goes with this one
        env = {**os.environ, **bundle_env, **parent_state.environment(config), leftovers.RUN_TAG_ENV: tag, "TMPDIR": tmp}
        with open(log, "wb") as out:
            env[EXEC_AT_ENV] = repr(now())  # last before the exec: a restart's clock (clock.since_exec)
            proc = lifecycle.start_group([sys.executable, "-m", "forkspawn.parent", str(cfg), str(result)], env, out)
        try:
            proc.wait(limit)
        except subprocess.TimeoutExpired:
            tail = log.read_text(errors="replace")[-4000:].strip()
            return Run(status="timeout", error=f"the cold start did not finish within its limit of {limit:g} s "
                                               "(the fresh parent was killed)", traceback=tail or None)
        finally:
            left = lifecycle.reap(proc.pid, tag)
            if proc.poll() is None:
                proc.wait()
            # vLLM leaves its message-queue segments behind (psm_*): remove what nobody maps any more
            orphans = leftovers.orphaned_shm(leftovers.shm_entries() - shm)
            for name in orphans:
                Path("/dev/shm", name).unlink(missing_ok=True)
        if not result.exists():
            tail = log.read_text(errors="replace")[-4000:].strip()
            # A Python that died of an exception says so on its log's last line: that leads the error.
            where = f"the parent interpreter exited with status {proc.returncode}"
            last = tail.splitlines()[-1].strip() if tail else ""
            return Run(status="error", error=f"{last} ({where})" if last else where, traceback=tail or None)
        run = Run.from_dict(json.loads(result.read_text()))
        run.notes += bundle_notes
        if left:
            run.notes.append(f"killed {len(left)} process(es) the run left behind: {', '.join(left)}")
        if orphans:
            run.notes.append(f"removed {len(orphans)} /dev/shm segment(s) the run left behind")
        return run
