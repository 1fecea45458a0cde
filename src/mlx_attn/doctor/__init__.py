"""`python -m mlx_attn`: which backends work here, and how fast and how right they are.

Lists every backend with why it is or is not available, runs each available one on the
standard shapes (prefill 1k/4k causal and not, decode over an 8k cache with GQA) for every
installed array kind, checks it against the float64 reference and prints time, TFLOP/s and the
speed relative to the platform's own SDPA measured in the same run.
"""
from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import report
from .cases import frameworks_here, standard_cases
from .run import run_case, steps


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m mlx_attn", description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="also draw TFLOP/s bars to a PNG")
    parser.add_argument("--quick", action="store_true",
                        help="smaller shapes (prefill 256/1k, decode over 2k) for a fast check")
    parser.add_argument("--arrays", default="all",
                        help="comma-separated array kinds to run: mlx,torch,numpy (default all)")
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"),
                        help="input dtype (default: float16 on a GPU, float32 on a CPU)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per result")
    parser.add_argument("--max-seconds", type=float, default=10.0,
                        help="stop repeating a result after this much timed work (min 3 runs)")
    parser.add_argument("--list", action="store_true", help="only list the backends")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    if not console.is_terminal:  # piped to a file or a CI log: do not squeeze to 80 columns
        console = Console(width=140)
    env = report.environment()
    console.print("mlx_attn " + ", ".join(f"{k} {v}" for k, v in env.items() if v))
    console.print(report.backend_table())
    if args.list:
        return 0
    frameworks = frameworks_here(args.dtype)
    if args.arrays != "all":
        wanted = {a.strip() for a in args.arrays.split(",")}
        unknown = wanted - {"mlx", "torch", "numpy"}
        if unknown:
            console.print(f"[red]--arrays: unknown kind(s) {sorted(unknown)}; allowed: "
                          "mlx, torch, numpy[/]")
            return 2
        frameworks = [fw for fw in frameworks if fw.kind in wanted]
    cases = standard_cases(args.quick)
    results = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("measuring", total=sum(steps(fw, c) for fw in frameworks
                                                        for c in cases))
        for fw in frameworks:
            for case in cases:
                progress.update(task, description=f"{fw.kind} {case.name}")
                results += run_case(fw, case, repeats=args.repeats, max_seconds=args.max_seconds,
                                    advance=lambda: progress.advance(task))
    report.print_report(console, results)
    if args.json:
        report.write_json(args.json, results, cases)
        console.print(f"wrote {args.json}")
    if args.plot:
        report.write_plot(args.plot, results)
        console.print(f"wrote {args.plot}")
    return 1 if any(r.ok is False for r in results) else 0
