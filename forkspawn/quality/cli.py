"""`forkspawn quality`: run one self-measurement and print it (a table, or --json)."""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from ..config import ConfigError
from ..pagecache import files_of, page_cache_state, torch_library_files, warm_page_cache
from .coldstart import cold_vs_warm
from .harness import METHODS, PHASE_IMPORTS, import_tax, import_validity, overhead
from .probing import MIB, gpu_validity, gpu_validity_with_holders, probes, sampler_perturbation


def _fmt_ms(st: dict[str, Any]) -> str:
    lo = "?" if st["ci_low"] is None else f"{st['ci_low'] * 1e3:.2f}"
    hi = "?" if st["ci_high"] is None else f"{st['ci_high'] * 1e3:.2f}"
    return f"{st['median'] * 1e3:8.2f} ms [{lo}, {hi}]"



def _cv(st: dict[str, Any]) -> str:
    return "   -" if st["cv"] is None else f"{st['cv'] * 100:5.1f}%"



def _table(command: str, result: Any) -> str:
    lines = []
    if command == "overhead":
        lines.append("method              harness ttr (99% CI)          bare, same parent (99% CI)    "
                     "overhead (99% CI)            rel     goal")
        for r in result["methods"]:
            lines.append(f"{r['method']:<19} {_fmt_ms(r['harness_s']):<29} {_fmt_ms(r['bare_s']):<29} "
                         f"{_fmt_ms(r['overhead_s']):<28} {r['overhead_rel'] * 100:5.1f}%  "
                         f"{r['goal']} (<= {r['limit_s'] * 1e3:.2f} ms), n={r['n']}")
        lines.append("bare in a minimal parent, and what the harness-sized parent adds to it (same-size minus minimal):")
        for r in result["methods"]:
            lines.append(f"{r['method']:<19} {_fmt_ms(r['minimal_s']):<29} {_fmt_ms(r['parent_size_s'])}")
        t = result["import_tax"]
        lines.append(f"harness imports in a real spawned rank before its first stamp: {_fmt_ms(t['seconds'])} gross, "
                     f"{_fmt_ms(t['net_seconds'])} net of what the rank imports anyway, n={t['seconds']['n']}")
    elif command == "probes":
        p = result["probe"]
        lines.append(f"memory.probe over {p['processes']} processes: {_fmt_ms(p['probe_s'])} per call, CV {_cv(p['probe_s'])}, "
                     f"n={p['n']} (first call {p['first_probe_s'] * 1e3:.2f} ms; rank mappings {p['rank_mappings']})")
        lines.append(f"RSS change across the probes: ranks {[round(x, 3) for x in p['rank_rss_delta_mib']]} MiB, "
                     f"probing parent {p['parent_rss_delta_mib']:+.3f} MiB")
        if "sampler" in result:
            s = result["sampler"]
            lines.append(f"start-up with a {s['interval_s'] * 1e3:.0f} ms sampler: {_fmt_ms(s['sampled_s'])} vs "
                         f"{_fmt_ms(s['plain_s'])} without; paired delta {_fmt_ms(s['delta_s'])}, n={s['n']}, "
                         f"probes per start {s['probes_per_start']}")
    elif command == "validity":
        lines.append("pid       kind     probe(psutil)  smaps_rollup  probe-rollup  smaps-rollup  drift   (MiB)")
        for row in result["memory"]["readers"]:
            for kind in ("rss_mib", "pss_mib", "uss_mib"):
                v = row[kind]
                lines.append(f"{row['pid']:<9} {kind[:3]:<8} {v['probe']:13.3f} {v['rollup']:13.3f} "
                             f"{v['probe_minus_rollup']:+13.3f} {v['smaps_minus_rollup']:+13.3f} {v['drift']:+7.3f}")
        g = result["gpu"]
        lines.append(f"GPU: {g['processes'] or 'no compute processes'}; NVML: {g['nvml_note'] or 'ok'}; "
                     f"nvidia-smi: {g['nvidia_smi_note'] or 'ok'}")
        i = result["imports"]
        lines.append(f"-X importtime 'import torch': {_fmt_ms(i['importtime_torch_s'])}; "
                     f"rank's imports_done set ({PHASE_IMPORTS}): {_fmt_ms(i['importtime_phase_set_s'])}")
        for k, v in i.items():
            if k.startswith("phase_"):
                lines.append(f"records {k}: {_fmt_ms(v)}, n={v['n']}")
    elif command == "pagecache":
        for k in ("checkpoint", "torch_libraries"):
            s = result[k]
            lines.append(f"{k}: {s['files']} files, {s['bytes'] / MIB:.1f} MiB, {s['resident_fraction'] * 100:.1f}% resident "
                         f"-> {'warm' if s['warm'] else 'cold'}")
        if "cold_vs_warm" in result:
            c = result["cold_vs_warm"]
            lines.append(f"time to ready, {c['method']} bare, {c['dropped']} evicted: cold {_fmt_ms(c['cold_s'])} vs warm "
                         f"{_fmt_ms(c['warm_s'])}, n={c['cold_s']['n']}; resident before: {c['resident_before']}")
    elif command == "precision":
        lines.append("configuration                          metric                CV      median  (99% CI)                 n")
        for c in result["configs"]:
            name = f"{c['engine']} {c['method']}/{c['parent_state']} tp={c['tp']}"
            for m, st in c["stats"].items():
                if st["median"] is None:
                    continue
                ci = "[" + ", ".join("?" if x is None else f"{x:.4g}" for x in (st["ci_low"], st["ci_high"])) + "]"
                lines.append(f"{name:<38} {m:<20} {_cv(st)} {st['median']:10.4g} {ci:<24} {st['n']}")
        lines.append("")
        lines.append("comparison                        metric              ratio   resolved@99%  asv differs  repeats needed")
        for c in result["comparisons"]:
            need = c["repeats_needed"] if c["repeats_needed"] is not None else ("n<5" if min(c["n"]) < 5 else ">30")
            lines.append(f"tp={c['tp']} {c['a']:>12} vs {c['b']:<12}   {c['metric']:<18} {c['ratio_b_over_a']:7.3f}  "
                         f"{str(c['resolved_99']):<13} {str(c['asv_is_different']):<12} {need} (n now {c['n']}, power {c['power']})")
    return "\n".join(lines)



def _overhead(args: argparse.Namespace) -> dict[str, Any]:
    return {"methods": [overhead(m, args.repeat) for m in args.methods], "import_tax": import_tax(min(args.repeat, 5))}


def _probes(args: argparse.Namespace) -> dict[str, Any]:
    result = probes(args.repeat)
    if args.sampler:
        result["sampler"] = sampler_perturbation(max(3, args.repeat // 4))
    return result


def _validity(args: argparse.Namespace) -> dict[str, Any]:
    gpu = gpu_validity_with_holders(args.hold_gpu)["rounds"][-1] if args.hold_gpu else gpu_validity()
    return {"memory": probes(3), "gpu": gpu, "imports": import_validity(min(args.repeat, 5), args.records)}


def _pagecache(args: argparse.Namespace) -> dict[str, Any]:
    from ..checkpoint import default_cache_dir, resolve_checkpoint

    state = warm_page_cache if args.warm else page_cache_state
    result = {"checkpoint": state(files_of(resolve_checkpoint(args.model, default_cache_dir()))),
              "torch_libraries": state(torch_library_files())}
    if args.cold:
        result["cold_vs_warm"] = cold_vs_warm(args.model, repeat=args.repeat, drop_torch=args.drop_torch)
    return result


def _precision(args: argparse.Namespace) -> dict[str, Any]:
    from analysis.precision import precision  # the analysis of records: analysis's, run from here

    if not args.records:
        raise ConfigError("precision needs a records JSON Lines file")
    return precision(args.records)


Command = Callable[[argparse.Namespace], dict[str, Any]]
COMMANDS: dict[str, Command] = {"overhead": _overhead, "probes": _probes, "validity": _validity,
                                "pagecache": _pagecache, "precision": _precision}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `forkspawn quality` (forkspawn.cli's subcommand)."""
    parser.add_argument("verb", choices=tuple(COMMANDS), help="the self-measurement")
    parser.add_argument("records", nargs="?", help="records JSON Lines file (precision; validity: phases to compare)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--model", default="tiny", help="pagecache: the checkpoint preset or directory")
    parser.add_argument("--sampler", action="store_true", help="probes: also time start-up under a 10 ms sampler")
    parser.add_argument("--cold", action="store_true", help="pagecache: also time cold vs warm starts")
    parser.add_argument("--drop-torch", action="store_true", help="pagecache --cold: evict torch's libraries too")
    parser.add_argument("--warm", action="store_true", help="pagecache: first read the checkpoint and torch's libraries")
    parser.add_argument("--hold-gpu", type=int, nargs="+", metavar="MIB",
                        help="validity: first start processes holding this much CUDA memory each")
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Run the self-measurement `args.verb` and print it; a records file of another harness
    version raises SchemaError, which the command line reports in one line (exit 2)."""
    result = COMMANDS[args.verb](args)
    print(json.dumps(result, indent=1) if args.json else _table(args.verb, result))
    return 0
