"""Command line: `python -m analysis table|summary|report|headline|plan ...` (docs/analysis.md).

Bad input (a missing or empty folder, a corrupt or foreign result file, an unknown option)
gives one line on stderr naming the culprit and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from . import models
from .capacity import BUSY_HOURS, GPU_MEMORY_UTILIZATION, RESTARTS_PER_DAY, Node, choose, plan
from .decide import THRESHOLD
from .derive import no_small_n_intervals
from .load import BadInput, latest, load


def _number(kind: type, low: float, high: float, what: str, strict: bool = False):
    """An argparse type: a finite number in [low, high] (low excluded if strict), else a one-line
    error that argparse prefixes with the flag's name."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(v) or v < low or (strict and v == low):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {'more than' if strict else 'at least'} {low:g}")
        if v > high:
            raise argparse.ArgumentTypeError(f"{text!r}: must be at most {high:g}")
        return v
    return parse


# Physical ranges: a day has 24 hours and 86,400 seconds (a start takes at least one); a share of a GPU
# is at most all of it; the largest GPUs hold under 1 TiB, nodes under 64 GPUs, 4,096 cores, 64 TiB RAM.
POSITIVE_INT = _number(int, 1, 1_000_000, "a whole number")
TP = _number(int, 1, 64, "a whole number")
GPUS = _number(int, 0, 64, "a whole number")
CPUS = _number(int, 1, 4096, "a whole number")
RESTARTS = _number(float, 0, 86_400, "a number")
HOURS = _number(float, 0, 24, "a number")
SHARE = _number(float, 0, 1, "a number", strict=True)
GPU_GIB = _number(float, 0, 1024, "a number", strict=True)
RAM_GIB = _number(float, 0, 65_536, "a number", strict=True)
PERCENT = _number(float, 0, 100, "a number", strict=True)


def _model(text: str) -> models.Model:
    try:
        return models.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        self.exit(2, f"analysis: {message} (see python -m analysis --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m analysis", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("table", help="print the tidy table of every asv result below DIR")
    t.add_argument("dir")
    t.add_argument("--csv", action="store_true", help="CSV of every column (the contract)")
    t.add_argument("--wide", action="store_true", help="every column, aligned (default: a compact view)")
    s = sub.add_parser("summary", help="print the executive summary of the results below DIR as Markdown")
    s.add_argument("dir")
    r = sub.add_parser("report", help="write the HTML report of the results below RESULTS_DIR")
    r.add_argument("dir", metavar="RESULTS_DIR")
    r.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="report folder, e.g. reports/NAME/")
    h = sub.add_parser("headline", help="print the decisions of the results below DIR as Markdown (the README's)")
    h.add_argument("dir", nargs="+")
    h.add_argument("--brief", action="store_true", help="one table row per setting of every DIR, linked to its report")
    p = sub.add_parser("plan", help="capacity planning per start method, from the measurements below DIR")
    p.add_argument("dir")
    p.add_argument("--tp", type=TP, required=True, help="the model's tensor-parallel size (must be measured)")
    p.add_argument("--restarts-per-day", type=RESTARTS, default=RESTARTS_PER_DAY,
                   help=f"worker-group (re)starts a day of each replica (default {RESTARTS_PER_DAY})")
    p.add_argument("--busy-hours", type=HOURS, default=BUSY_HOURS,
                   help=f"hours a day each replica decodes, at the faster rate (default {BUSY_HOURS:g}: busy all day)")
    p.add_argument("--replicas", type=POSITIVE_INT, help="replicas in the fleet (default: as many as one node fits)")
    p.add_argument("--threshold", type=PERCENT, default=100 * THRESHOLD,
                   help=f"the smallest difference a verdict rests on, in %% of the other method's value "
                        f"(default {100 * THRESHOLD:g}: the decode parity tolerance)")
    p.add_argument("--gpu-memory-utilization", type=SHARE, default=GPU_MEMORY_UTILIZATION,
                   help="share of a GPU the engine reserves; the KV cache gets it less the fixed part (default 0.9)")
    p.add_argument("--gpus", type=GPUS, help="GPUs of the node (default: the measured machine's)")
    p.add_argument("--gpu-mem-gib", type=GPU_GIB, help="memory of one GPU, GiB")
    p.add_argument("--ram-gib", type=RAM_GIB, help="host RAM, GiB")
    p.add_argument("--cpus", type=CPUS, help="CPU cores")
    p.add_argument("--machine", help="which measured machine (if several)")
    p.add_argument("--engine")
    p.add_argument("--model", type=_model,
                   help="a preset, checkpoint folder or parameter count (8e9); one not measured needs --extrapolate")
    p.add_argument("--extrapolate", action="store_true",
                   help="scale a model not measured from the nearest measured one (analysis/models.py's rule)")
    p.add_argument("--mode", help="labelled mode, e.g. eager (default: the engine's default mode)")
    p.add_argument("--parent-state", help="parent state assumed (default: torch)")
    p.add_argument("--batch", type=POSITIVE_INT, help="batch size whose decode rate counts (default: the largest)")
    p.add_argument("--csv", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "table":
            df = no_small_n_intervals(load(args.dir).table)  # n < 3: no interval (n stays)
            if args.csv:
                print(df.to_csv(index=False), end="")
            elif args.wide:
                print(df.to_string(index=False))
            else:
                from .terminal import compact

                print(compact(df))
        elif args.command == "summary":
            from . import parity
            from .summary import markdown, summarize

            res = load(args.dir)
            print(markdown(*summarize(res.table)))
            print(parity.markdown(parity.table(res.records)))
        elif args.command == "headline":
            from . import screen

            if args.brief:
                rows = [(f"[{os.path.basename(os.path.normpath(d))}]({os.path.normpath(d)}/index.html)",
                         screen.decisions(load(d))) for d in args.dir]
                print(screen.brief(rows), end="")
            else:
                for d in args.dir:
                    res = load(d)
                    print(screen.markdown(screen.decisions(res), res), end="")
        elif args.command == "report":
            from .report import write_report

            print(write_report(args.dir, args.output))
        else:
            from . import parity

            res = load(args.dir)
            df = latest(res.table)
            machine = choose(df, "machine", args.machine)
            info = res.machines[res.machines["machine"] == machine]
            given = {"gpus": args.gpus, "gpu_mem_gib": args.gpu_mem_gib, "ram_gib": args.ram_gib, "cpus": args.cpus}
            if info.empty and None in (args.gpus, args.ram_gib, args.cpus):
                raise BadInput(f"{machine}: no machine description in the records: pass --gpus, --ram-gib and --cpus")
            measured = vars(Node.of_machine(info.iloc[-1])) if len(info) else {"gpu_mem_gib": None}
            if args.gpu_mem_gib is not None and not measured.get("gpus") and args.gpus is None:
                raise BadInput(f"--gpu-mem-gib {args.gpu_mem_gib:g}: {machine} has no GPU; a GPU node cannot be planned "
                               f"from CPU measurements")
            node = Node(**{k: measured[k] if v is None else v for k, v in given.items()})
            if node.gpus and node.gpu_mem_gib is None:
                raise BadInput(f"{machine}: GPU memory not recorded: pass --gpu-mem-gib")
            result = plan(df, node, args.tp, args.restarts_per_day, machine=machine, engine=args.engine,
                          model=args.model, extrapolate=args.extrapolate, mode=args.mode,
                          parent_state=args.parent_state, batch=args.batch, busy_hours=args.busy_hours,
                          replicas=args.replicas, gpu_memory_utilization=args.gpu_memory_utilization,
                          threshold=args.threshold / 100, parity_rows=parity.table(res.records),
                          measured_gpu_mib=measured["gpu_mem_gib"] * 1024 if measured.get("gpu_mem_gib") else None)
            if args.csv:
                print(result.table.to_csv(index=False), end="")
            else:
                from .terminal import plan_text

                print(plan_text(result))
    except BadInput as e:
        print(f"analysis: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
