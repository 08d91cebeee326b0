"""Command line: `python -m analysis table|summary|report|plan ...` (see README, "Analysis").

Bad input (a missing or empty folder, a corrupt or foreign result file, an unknown option)
gives one line on stderr naming the culprit and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from .capacity import GPU_MEMORY_UTILIZATION, Node, choose, plan
from .derive import no_small_n_intervals
from .load import BadInput, latest, load


def _number(kind: type, low: float, what: str, strict: bool = False):
    """An argparse type: a finite number >= low (> low if strict), else a one-line error."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(v) or v < low or (strict and v == low):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {'more than' if strict else 'at least'} {low:g}")
        return v
    return parse


POSITIVE_INT = _number(int, 1, "a whole number")
COUNT = _number(int, 0, "a whole number")
NONNEG = _number(float, 0, "a number")
POSITIVE = _number(float, 0, "a number", strict=True)


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
    p = sub.add_parser("plan", help="capacity planning per start method, from the measurements below DIR")
    p.add_argument("dir")
    p.add_argument("--tp", type=POSITIVE_INT, required=True, help="the model's tensor-parallel size (must be measured)")
    p.add_argument("--restarts-per-day", type=NONNEG, default=24, help="worker-group starts a day on the node")
    p.add_argument("--busy-hours", type=NONNEG, default=1.0,
                   help="a replica's daily decode load, hours at the fastest rate (default 1)")
    p.add_argument("--nodes", type=POSITIVE_INT, default=1, help="nodes in the fleet, for its GPU-hours a day")
    p.add_argument("--gpu-memory-utilization", type=_number(float, 0, "a number", strict=True),
                   default=GPU_MEMORY_UTILIZATION,
                   help="share of a GPU the engine reserves; the KV cache gets it less the fixed part (default 0.9)")
    p.add_argument("--gpus", type=COUNT, help="GPUs of the node (default: the measured machine's)")
    p.add_argument("--gpu-mem-gib", type=POSITIVE, help="memory of one GPU, GiB")
    p.add_argument("--ram-gib", type=POSITIVE, help="host RAM, GiB")
    p.add_argument("--cpus", type=POSITIVE_INT, help="CPU cores")
    p.add_argument("--machine", help="which measured machine (if several)")
    p.add_argument("--engine")
    p.add_argument("--parent-state", help="parent state assumed (default: torch)")
    p.add_argument("--batch", type=POSITIVE_INT, help="batch size whose tokens/s is shown (default: the largest)")
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
        elif args.command == "report":
            from .report import write_report

            print(write_report(args.dir, args.output))
        else:
            res = load(args.dir)
            df = latest(res.table)
            machine = choose(df, "machine", args.machine)
            info = res.machines[res.machines["machine"] == machine]
            given = {"gpus": args.gpus, "gpu_mem_gib": args.gpu_mem_gib, "ram_gib": args.ram_gib, "cpus": args.cpus}
            if info.empty and None in (args.gpus, args.ram_gib, args.cpus):
                raise BadInput(f"{machine}: no machine description in the records: pass --gpus, --ram-gib and --cpus")
            measured = vars(Node.of_machine(info.iloc[-1])) if len(info) else {"gpu_mem_gib": None}
            node = Node(**{k: measured[k] if v is None else v for k, v in given.items()})
            if node.gpus and node.gpu_mem_gib is None:
                raise BadInput(f"{machine}: GPU memory not recorded: pass --gpu-mem-gib")
            result = plan(df, node, args.tp, args.restarts_per_day, machine=machine, engine=args.engine,
                          parent_state=args.parent_state, batch=args.batch, busy_hours=args.busy_hours,
                          nodes=args.nodes, gpu_memory_utilization=args.gpu_memory_utilization)
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
