"""`python -m mlx_attn`: which backends work here, and how fast and how right they are.

Lists every backend with why it is or is not available, runs each available one on the
standard shapes (prefill 1k/4k causal and not, decode over an 8k cache with GQA) for every
installed array kind, checks it against the float64 reference and prints time, TFLOP/s and the
speed relative to the platform's own SDPA measured in the same run. By default slow baselines
run at the small sizes only, or are timed once (`plan.py`; the table says what was skipped and
why), so that the run takes about a minute on 2 CPU cores; `--full` runs the whole grid.
"""
from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from . import report
from .cases import frameworks_here, run_order, standard_cases
from .plan import FAST_CALL_S, SETTLE_S, SLOW_CALL_S, Mode, Planner
from .progress import Estimator, TimeLeftColumn, units_for
from .run import implementations, run_case


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m mlx_attn", description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="also draw TFLOP/s bars to a PNG")
    parser.add_argument("--quick", action="store_true",
                        help="smaller shapes (prefill 256/1k, decode over 2k) for a fast check")
    parser.add_argument("--full", action="store_true",
                        help="every backend and baseline on every shape, repeated (minutes on a "
                             "CPU); default: slow baselines only at the small sizes or once")
    parser.add_argument("--arrays", default="all",
                        help="comma-separated array kinds to run: mlx,torch,numpy (default all)")
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"),
                        help="input dtype (default: float16 on a GPU, float32 on a CPU)")
    parser.add_argument("--repeats", type=int,
                        help="timed repeats per result (default 3, with --full 5)")
    parser.add_argument("--max-seconds", type=float, default=10.0,
                        help="stop repeating a result after this much timed work (min 3 runs)")
    parser.add_argument("--list", action="store_true", help="only list the backends")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.full else 3
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
    planner = Planner(Mode(full=args.full, repeats=args.repeats, max_seconds=args.max_seconds))
    order = run_order(cases)
    estimator = Estimator(planner, units_for(frameworks, order, implementations))
    columns = (TextColumn("{task.description}"), BarColumn(), TimeLeftColumn(estimator),
               TimeElapsedColumn())
    results = []
    started = time.perf_counter()
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("measuring", total=1.0)

        def on_change(description):
            progress.update(task, completed=estimator.fraction_done(),
                            **({"description": description} if description else {}))
        estimator.on_change = on_change
        for fw in frameworks:
            done = {c.name: run_case(fw, c, planner, estimator) for c in order}
            results += [r for c in cases for r in done[c.name]]  # table in the standard order
    report.print_report(console, results, _plan_line(args, results,
                                                     time.perf_counter() - started))
    if args.json:
        report.write_json(args.json, results, cases, _plan_json(args))
        console.print(f"wrote {args.json}")
    if args.plot:
        report.write_plot(args.plot, results)
        console.print(f"wrote {args.plot}")
    return 1 if any(r.ok is False for r in results) else 0


def _plan_line(args, results, seconds: float) -> str:
    skipped = sum(r.skipped for r in results)
    once = sum("timed once" in r.note for r in results)
    if args.full:
        return f"--full: every backend and baseline on every case; measured in {seconds:.0f} s"
    return (f"default plan, measured in {seconds:.0f} s: {skipped} slow result(s) skipped and "
            f"{once} timed once (their rows say why); --full runs and repeats them all")


def _plan_json(args) -> dict:
    return {"mode": "full" if args.full else "default", "quick": args.quick,
            "repeats": args.repeats, "max_seconds": args.max_seconds, "settle_s": SETTLE_S,
            "fast_call_s": FAST_CALL_S, "slow_call_s": SLOW_CALL_S}
