"""`forkspawn`: the harness's one command line, a subcommand for each thing it does.

measure, model, machine, leftovers: one configuration, a model, this machine, what runs left;
profile, prefill, spent: `make bench`'s asv suite; quality: measuring the measurement; soak:
a parent starting and tearing down worker groups many times.

Exit status: 0 when a record was produced (whatever its status: failures are results), 2 for bad
input (one line on stderr naming the culprit; nothing written); leftovers: 1 if any.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Callable

from . import vocabulary as vocab
from .config import CUDA_CHECKS, DEVICES, ENGINES, FORKSERVER_STATES, METHODS, PARENT_STATES, Config, ConfigError
from .quality import cli as quality_cli

if TYPE_CHECKING:
    from .record import Record


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the measurement's clean-up, like Ctrl-C


def _parser() -> argparse.ArgumentParser:
    """Every subcommand and its options; `COMMANDS` holds what each runs."""
    parser = _Parser(prog="forkspawn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    m = sub.add_parser("measure", help="measure one configuration (repeat cold starts)")
    m.add_argument("--engine", default="torch-tp", choices=ENGINES)
    m.add_argument("--method", default="spawn", choices=METHODS)
    m.add_argument("--parent-state", default="bare", choices=PARENT_STATES)
    m.add_argument("--tp", type=int, default=1, help="tensor-parallel size (ranks)")
    m.add_argument("--model", default="tiny", help="preset (tiny, small, 1b) or a local HF checkpoint directory")
    m.add_argument("--device", default="auto", choices=DEVICES)
    m.add_argument("--batch", type=int, nargs="+", default=[1, 16], help="decode batch sizes")
    m.add_argument("--decode-steps", type=int, default=32)
    m.add_argument("--decode-windows", type=int, default=3,
                   help="an engine's timed decode windows per batch and cold start (each a short and a long request)")
    m.add_argument("--warmup-steps", type=int, default=4)
    m.add_argument("--repeat", type=int, default=3, help="cold starts (each in a fresh parent), at most")
    m.add_argument("--warmup-starts", type=int, default=0,
                   help="uncounted cold starts made first (the record keeps them apart, under `warmups`)")
    m.add_argument("--least", type=int, default=0,
                   help="cold starts at least; between --least and --repeat the stopping rule ends the "
                        "configuration once its 99%% interval is within --precision (0: always --repeat)")
    m.add_argument("--precision", type=float, default=0.05,
                   help="relative half-width of time to ready's 99%% interval that settles a configuration")
    m.add_argument("--timeout", type=float, default=300.0, help="seconds a cold start may take to ready")
    m.add_argument("--limit", type=float, default=0.0,
                   help="seconds one cold start's fresh parent may take in all (start, decode, teardown) before it "
                        "is killed and recorded as a timeout (default: 2 x --timeout + 300)")
    m.add_argument("--cuda-check", default="runtime", choices=CUDA_CHECKS)
    m.add_argument("--forkserver", default="fresh", choices=FORKSERVER_STATES)
    m.add_argument("--override-cpu-spawn", action="store_true",
                   help="vllm only: restore the requested method after vLLM's CPU platform forced spawn "
                        "(recorded as config.extra.vllm_override)")
    m.add_argument("--override-cpu-ray", action="store_true",
                   help="vllm --method ray only: let vLLM's CPU platform use its Ray executor, which it refuses "
                        "(recorded as config.extra.vllm_ray_override)")
    m.add_argument("--compile-cache", choices=("warm", "cold"), default="warm",
                   help="vllm, vllm-serve: warm (shared, filled by the first start) or cold (fresh, empty compile "
                        "caches for every cold start, as `vllm bench startup` defines it; recorded as "
                        "config.extra.vllm_compile_cache)")
    m.add_argument("--executor", choices=("mp",),
                   help="vllm, vllm-serve: vLLM's multiprocess executor, a worker process even at TP 1 (default: "
                        "vLLM's own, `uni` at TP 1; recorded as config.extra.vllm_executor)")
    m.add_argument("--fault", metavar="PROCESS:decode:kill",
                   help="vllm only: SIGKILL vLLM's PROCESS (rank<N> or engine-core) from the parent while it decodes "
                        "(recorded as config.extra.vllm_fault)")
    m.add_argument("--json", action="store_true", help="print exactly one JSON record on stdout")
    m.add_argument("-o", "--output", type=Path, help="also write the record to this file (atomically)")

    p = sub.add_parser("model", help="generate a preset checkpoint (once) and print its directory")
    p.add_argument("preset")
    p.add_argument("--dry-run", action="store_true",
                   help="print the preset's config.json, parameter count, bytes and shards as JSON; generate nothing")

    mach = sub.add_parser("machine", help="describe this machine (no CUDA context is created)")
    mach.add_argument("--asv", action="store_true", help="register it in ~/.asv-machine.json and print its name")

    left = sub.add_parser("leftovers", help="list what any forkspawn run left behind (processes, temp dirs); exit 1 if any")
    left.add_argument("--except", dest="before", type=Path, metavar="FILE",
                      help="what an earlier `forkspawn leftovers` printed: those were there before (another run's), "
                           "only what is new counts")

    sub.add_parser("profile", help="what `make bench` measures in FORKSPAWN_PROFILE (default: default) on this machine: "
                                   "the run's id, its points, their cold starts and an estimate of the time")

    pre = sub.add_parser("prefill", help="measure the asv grid of benchmark classes matching REGEX, most useful "
                                         "points first, for the asv run of FORKSPAWN_RUN_ID to read back")
    pre.add_argument("regex", help="asv's --bench regex, e.g. '^engines\\.Vllm'")
    pre.add_argument("--states", help="only these parent states (asv labels, comma-separated)")
    pre.add_argument("--methods", help="only these methods (asv labels, comma-separated)")
    pre.add_argument("--alternate", action="store_true",
                     help="the points take turns, one cold start each a round, to their caps (no stopping rule)")
    pre.add_argument("--finish", action="store_true",
                     help="measure nothing: write the records of the points from the cold starts their journal "
                          "holds, at the count every one of them reached (a lease that ended mid-stage)")

    spent = sub.add_parser("spent", help="how the cold starts of run FORKSPAWN_RUN_ID ended (stop reasons, counts)")
    spent.add_argument("results", type=Path, help="asv's results folder (.asv/results)")

    quality_cli.add_arguments(sub.add_parser(
        "quality", help="measure the measurement: harness overhead, probe cost and validity, page cache, precision"))

    soak = sub.add_parser("soak", help="start and tear down a worker group many times from one parent; "
                                       "print how its resources grow")
    soak.add_argument("--method", default="fork", choices=METHODS)
    soak.add_argument("--cycles", type=int, default=100)
    soak.add_argument("--tp", type=int, default=1)
    soak.add_argument("--model", default="tiny")
    soak.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; its exit status (module docstring)."""
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"forkspawn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("forkspawn: interrupted; every process of the run was stopped", file=sys.stderr)
        return 130


def _measure(args: argparse.Namespace) -> int:
    from .atomic import write_json_atomic
    from .faults import engine_fault
    from .measure import measure

    config = Config(engine=args.engine, method=args.method, parent_state=args.parent_state, tp=args.tp,
                    model=args.model, device=args.device, batches=tuple(args.batch),
                    decode_steps=args.decode_steps, decode_windows=args.decode_windows, warmup_steps=args.warmup_steps,
                    repeat=args.repeat, warmup_starts=args.warmup_starts, least=args.least, precision=args.precision if args.least else 0.0,
                    timeout_s=args.timeout, limit_s=args.limit, cuda_check=args.cuda_check, forkserver=args.forkserver,
                    extra={**({"vllm_override": True} if args.override_cpu_spawn else {}),
                           **({"vllm_ray_override": True} if args.override_cpu_ray else {}),
                           **({"vllm_compile_cache": "cold"} if args.compile_cache == "cold" else {}),
                           **({"vllm_executor": args.executor} if args.executor else {}),
                           **({"vllm_fault": args.fault} if args.fault else {})})
    if args.override_cpu_spawn and args.engine != "vllm":
        raise ConfigError(f"--override-cpu-spawn applies to --engine vllm only, not {args.engine!r}")
    if args.override_cpu_ray and (args.engine, args.method) != ("vllm", "ray"):
        raise ConfigError(f"--override-cpu-ray applies to --engine vllm --method ray only, not {args.engine} {args.method}")
    if args.compile_cache == "cold" and args.engine not in ("vllm", "vllm-serve"):
        raise ConfigError(f"--compile-cache applies to --engine vllm or vllm-serve only, not {args.engine!r}")
    if args.executor and args.engine not in ("vllm", "vllm-serve"):
        raise ConfigError(f"--executor applies to --engine vllm or vllm-serve only, not {args.engine!r}")
    if args.fault:
        if args.engine != "vllm":
            raise ConfigError(f"--fault applies to --engine vllm only, not {args.engine!r}")
        process = engine_fault(args.fault, "--fault")
        if process.startswith("rank") and int(process[4:]) >= args.tp:
            raise ConfigError(f"--fault {args.fault}: no {process} at --tp {args.tp} (ranks 0..{args.tp - 1})")
    if args.output:
        _check_writable(args.output)
    record = measure(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    if args.output:
        write_json_atomic(args.output, record.to_dict())
    if args.json:
        print(json.dumps(record.to_dict(), allow_nan=False))
    else:
        print(summary(record))
    return 0


def _model(args: argparse.Namespace) -> int:
    from .checkpoint import default_cache_dir, plan, resolve_checkpoint

    print(json.dumps(plan(args.preset), indent=1) if args.dry_run else resolve_checkpoint(args.preset, default_cache_dir()))
    return 0


def _machine(args: argparse.Namespace) -> int:
    from . import machine

    print(machine.write_asv_machine() if args.asv else json.dumps(machine.describe(), indent=1))
    return 0


def _leftovers(args: argparse.Namespace) -> int:
    from .leftovers import report

    before = set(args.before.read_text().splitlines()) if args.before and args.before.exists() else set()
    lines = [line for line in report() if line not in before]
    print("\n".join(lines) if lines else "nothing left behind" + (f" (beside what {args.before} lists)" if before else ""))
    return 1 if lines else 0


def _suite() -> ModuleType:
    """The asv suite's glue (benchmarks/common.py, beside this package in a checkout): profile,
    prefill and spent are the suite's commands; the harness itself knows nothing of asv."""
    _checkout_on_path()
    return importlib.import_module("benchmarks.common")


def _eta() -> ModuleType:
    """The suite's plan and estimate of a run (benchmarks/eta.py)."""
    _checkout_on_path()
    return importlib.import_module("benchmarks.eta")


def _checkout_on_path() -> None:
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)


def _run_id(command: str, why: str) -> str:
    if not (run_id := _suite().SUITE.run_id):
        raise ConfigError(f"{command} needs FORKSPAWN_RUN_ID: {why}")
    return run_id


def _profile(args: argparse.Namespace) -> int:
    print("\n".join(_eta().summary()))
    return 0


def _prefill(args: argparse.Namespace) -> int:
    run_id = _run_id("prefill", "the asv run that will read the records back")
    states, methods = (args.states.split(",") if args.states else None), (args.methods.split(",") if args.methods else None)
    suite = _suite().SUITE
    # the run's cold starts counted against its estimate, for the progress lines make bench follows
    progress = (_eta().RunProgress.start(run_id, args.regex, states, methods, suite)
                if suite.progress_file and not args.finish else None)
    n = _suite().measure_first(args.regex, run_id, states, methods, args.alternate, args.finish, progress)
    print(f"prefill {args.regex}: {n} configuration(s) recorded under run {run_id}")
    return 0


def _spent(args: argparse.Namespace) -> int:
    run_id = _run_id("spent", "the run to describe")
    print("\n".join(_suite().cold_starts_spent(args.results, run_id)))
    return 0


def _soak(args: argparse.Namespace) -> int:
    from .soak import soak, soak_config

    result = soak(soak_config(args.method, args.tp, args.model), args.cycles)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.method}: {args.cycles} cycles, growth per 100 cycles: "
              + ", ".join(f"{k} {v:+.2f}" for k, v in result["growth_per_100_cycles"].items()))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "measure": _measure, "model": _model, "machine": _machine, "leftovers": _leftovers, "profile": _profile,
    "prefill": _prefill, "spent": _spent, "quality": quality_cli.run, "soak": _soak}


def summary(record: Record) -> str:
    """A few human-readable lines about a record."""
    head = (f"{record.engine} method={record.method} (used: {record.method_used}) "
            f"parent={record.parent_state} tp={record.tp}: {record.status}")
    if record.status != "ok":
        return f"{head}\n  {record.error}"
    st = record.stats[vocab.TIME_TO_READY]
    lines = [head, f"  time to ready {st['median']:.3f} s (99% CI {_fmt(st['ci_low'])}..{_fmt(st['ci_high'])}, "
                   f"n={st['n']}), from exec {_fmt(record.exec_to_ready_s)} s, teardown {record.teardown_s:.3f} s"
                   + (f", executor {record.executor}" if record.executor else "")]
    for proc in record.processes:
        lines.append(f"  {proc['role']}{'' if proc['rank'] is None else proc['rank']}: "
                     f"USS {proc['uss_mib']:.0f} MiB, PSS {proc['pss_mib']:.0f} MiB, RSS {proc['rss_mib']:.0f} MiB")
    lines.append("  tokens/s: " + ", ".join(f"batch {b}: {v:.0f}" for b, v in record.tokens_per_s.items()))
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "?" if x is None else f"{x:.3f}"


def _check_writable(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot write the record to {path}: {parent} is not a writable directory")


if __name__ == "__main__":
    sys.exit(main())
