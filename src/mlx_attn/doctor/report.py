"""Showing the doctor's findings: rich tables on the terminal, a JSON file, a PNG chart."""
from __future__ import annotations

import json
import platform

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..api import backends


def environment() -> dict:
    info = {"python": platform.python_version(), "machine": platform.machine(),
            "system": platform.system()}
    for name in ("numpy", "torch", "mlx"):
        try:
            module = __import__(name if name != "mlx" else "mlx.core", fromlist=["_"])
            info[name] = getattr(module, "__version__", "?")
        except ImportError:
            info[name] = None
    from .. import __version__
    info["mlx_attn"] = __version__
    return info


def backend_table() -> Table:
    table = Table(title="backends (priority order)")
    for column in ("backend", "available here", "handles / why not"):
        table.add_column(column)
    for b in backends():
        # CI greps the row "│ cpu     │ yes ": keep the name first and the plain yes/no
        table.add_row(b.name, "[green]yes[/]" if b.available else "[red]no[/]",
                      escape(b.summary if b.available else "; ".join(b.reasons)))
    return table


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def _check_cell(r) -> str:
    note = escape(r.note)
    if r.skipped:
        return f"[yellow]skipped[/]: {note}"
    if r.ok is None:
        return f"[dim]not run: {note}[/]"
    if r.ok:
        return "[green]ok[/]" + (f" [dim]· {note}[/]" if note else "")
    return f"[red]FAIL[/] {note}"


def results_table(title: str, results) -> Table:
    table = Table(title=title, caption_justify="left")
    for column, justify in (("case", "left"), ("impl", "left"), ("ms", "right"),
                            ("runs", "right"), ("TFLOP/s", "right"), ("vs SDPA", "right"),
                            ("peak MB", "right"), ("max err", "right"), ("check", "left")):
        table.add_column(column, justify=justify)
    footnotes = {}  # why a "vs SDPA" cell is empty -> its number
    for r in results:
        vs = _fmt(r.vs_sdpa, ".2f")
        if r.vs_sdpa is None and r.vs_sdpa_note:
            number = footnotes.setdefault(r.vs_sdpa_note, len(footnotes) + 1)
            vs = "-" + str(number).translate(SUPERSCRIPTS)
        table.add_row(r.case, r.impl, _fmt(r.time_ms, ".2f"), _fmt(r.runs, "d"),
                      _fmt(r.tflops, ".3f"), vs, _fmt(r.peak_mb, ".0f"), _fmt(r.max_err, ".1e"),
                      _check_cell(r))
    lines = [str(n).translate(SUPERSCRIPTS) + " " + escape(note) for note, n in footnotes.items()]
    if results and not any(r.native for r in results):
        lines.append(f"{results[0].framework} has no SDPA of its own: no vs SDPA")
    table.caption = "\n".join(lines) or None
    return table


def print_report(console: Console, results, plan_line: str = "") -> None:
    groups = dict.fromkeys((r.framework, r.device, r.dtype) for r in results)
    for group in groups:
        rows = [r for r in results if (r.framework, r.device, r.dtype) == group]
        console.print(results_table("{} arrays on {}, {}".format(*group), rows))
    console.print("ms = median of the timed calls (runs); TFLOP/s = 4·B·H·Lq·Lk·D (halved if "
                  "causal) / time; vs SDPA = the native SDPA's time / ours in the same run (> 1: "
                  "we are faster); max err vs the float64 reference")
    if plan_line:
        console.print(plan_line)
    failed = [r for r in results if r.ok is False]
    if failed:
        console.print(f"[red]{len(failed)} result(s) failed the reference check[/]")
    else:
        console.print("[green]every result that ran matches the float64 reference[/]")


def write_json(path: str, results, cases, plan: dict | None = None) -> None:
    payload = {"environment": environment(),
               "backends": [b.__dict__ | {"reasons": list(b.reasons)} for b in backends()],
               "plan": plan or {},
               "cases": [c.as_dict() for c in cases],
               "results": [r.as_dict() for r in results]}
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def write_plot(path: str, results) -> None:
    """Grouped bars: TFLOP/s per case, one bar per (array kind, impl)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise SystemExit("--plot needs matplotlib: pip install 'mlx_attn[plot]'") from error
    timed = [r for r in results if r.tflops is not None]
    cases = list(dict.fromkeys(r.case for r in timed))
    series = list(dict.fromkeys(f"{r.framework}:{r.impl}" for r in timed))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cases)), 4))
    for n, label in enumerate(series):
        values = {r.case: r.tflops for r in timed if f"{r.framework}:{r.impl}" == label}
        ax.bar([c + n * width for c in range(len(cases))],
               [values.get(case, 0.0) for case in cases], width, label=label)
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(cases))], cases, rotation=20,
                  ha="right", fontsize=8)
    ax.set_ylabel("TFLOP/s (4·B·H·Lq·Lk·D, halved if causal)")
    ax.set_title("mlx_attn doctor")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
