"""The `cpu` backend against torch's CPU SDPA and MLX's CPU `mx.fast.scaled_dot_product_attention`,
all measured in one run with mlx_attn.timing (median of repeats, same thread count for us and
torch; MLX uses its own CPU threading).

    python benchmarks/bench_cpu.py            # default grid (~5-10 min on 2 cores)
    python benchmarks/bench_cpu.py --quick    # smoke run
    python benchmarks/bench_cpu.py --full     # L up to 16k, decode Lk 4k..32k
    python benchmarks/bench_cpu.py --isa avx2 # both sides forced down to AVX2
    python benchmarks/bench_cpu.py --save     # also write benchmarks/results/cpu_<machine>_<isa>.md/.json

--isa avx2 measures our AVX2 kernels against torch's AVX2 kernels on any x86 machine: ours through
MLX_ATTN_CPU_ISA, torch through ATEN_CPU_CAPABILITY (its own kernels, read when torch is imported),
ONEDNN_MAX_CPU_ISA and MKL_ENABLE_INSTRUCTIONS (the GEMM libraries torch calls); the script
re-executes itself with them set. The results record the ISA each side reports having run.

The same run measures this machine's fp32 FMA peak on all threads (a register-resident FMA loop
per ISA, in the kernel extension: _kernel.fma_peak) and reports each dense cell's GFLOP/s as a
fraction of the peak of the ISA it ran, measured just before and after that cell (the higher of
the two: other load on a shared machine only lowers it, and comes and goes during a run). bf16
cells can exceed it on AVX512-BF16 CPUs (two products per lane per dot instruction).

Each ratio's two contenders are timed with their repeats interleaved (timing.measure_interleaved),
since this kind of machine's speed drifts with its neighbours' load.

Throughput is FlashAttention's FLOP count (4 B H Lq Lk D, halved when causal; forward+backward
counts 3.5x the forward). "ours" runs on torch tensors against torch SDPA and on MLX arrays against
MLX SDPA, so each ratio compares two calls on the same array kind. MLX's CPU SDPA materialises
the whole score matrix at a few GFLOP/s, so it is only timed up to --mlx-max-len.
Peak memory is measured per configuration in a fresh process (timing.isolated_peak): the extra
resident memory of one forward beyond its inputs and output.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mlx_attn import flash_attention
from mlx_attn.timing import isolated_peak, measure_interleaved


def fwd_flops(B, H, Lq, Lk, D, causal):
    return 4.0 * B * H * Lq * Lk * D / (2 if causal else 1)


# -- contenders ----------------------------------------------------------------------------------

def torch_pair(dtype, shape, causal, backward):
    """(ours, torch SDPA) callables on the same torch CPU tensors."""
    import torch
    F = torch.nn.functional.scaled_dot_product_attention
    B, Hq, Hkv, Lq, Lk, D = shape
    tdt = getattr(torch, dtype)
    q = torch.randn(B, Hq, Lq, D, dtype=tdt, requires_grad=backward)
    k, v = (torch.randn(B, Hkv, Lk, D, dtype=tdt, requires_grad=backward) for _ in range(2))
    go = torch.randn(B, Hq, Lq, D, dtype=tdt)
    # torch's is_causal is top-left aligned; with Lq == Lk it equals the SPEC's bottom-right one
    ours = lambda: flash_attention(q, k, v, causal=causal, backend="cpu")  # noqa: E731
    sdpa = lambda: F(q, k, v, is_causal=causal, enable_gqa=Hq != Hkv)  # noqa: E731
    if not backward:
        return (lambda: _no_grad(ours)), (lambda: _no_grad(sdpa))
    return (lambda: torch.autograd.grad(ours(), (q, k, v), go)), \
        (lambda: torch.autograd.grad(sdpa(), (q, k, v), go))


def _no_grad(fn):
    import torch
    with torch.no_grad():
        return fn()


def mlx_pair(dtype, shape, causal, backward):
    """(ours, mx.fast SDPA) callables on the same MLX CPU arrays."""
    import mlx.core as mx
    mx.set_default_device(mx.cpu)
    B, Hq, Hkv, Lq, Lk, D = shape
    mdt = getattr(mx, dtype)
    q = mx.random.normal((B, Hq, Lq, D)).astype(mdt)
    k, v = (mx.random.normal((B, Hkv, Lk, D)).astype(mdt) for _ in range(2))
    mx.eval(q, k, v)

    def ours(q, k, v):
        return flash_attention(q, k, v, causal=causal, backend="cpu")

    def sdpa(q, k, v):
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=D ** -0.5,
                                                    mask="causal" if causal else None)
    if not backward:
        return (lambda: ours(q, k, v)), (lambda: sdpa(q, k, v))
    gours = mx.grad(lambda q, k, v: ours(q, k, v).astype(mx.float32).sum(), argnums=(0, 1, 2))
    gsdpa = mx.grad(lambda q, k, v: sdpa(q, k, v).astype(mx.float32).sum(), argnums=(0, 1, 2))
    return (lambda: gours(q, k, v)), (lambda: gsdpa(q, k, v))


SETTLE_S = 0.0  # --settle-ms


def timed(fns, reps, max_seconds=40.0):
    """Median seconds of each contender, their repeats interleaved (this machine's speed drifts
    with its neighbours' load: back-to-back blocks of repeats would skew the ratios). Calls follow
    each other directly, as in a model, unless --settle-ms asks for an untimed pause before each
    (see timing.measure_interleaved: the OpenMP spin-wait a torch call leaves behind)."""
    return [t.median_s for t in measure_interleaved(fns, warmup=1, repeats=reps,
                                                     max_seconds=max_seconds, settle_s=SETTLE_S)]


# -- tables --------------------------------------------------------------------------------------

def local_peak(args):
    """The FMA peak just before / after a cell: when other load on the machine comes and goes, the
    cell is compared with what the cores gave at that time (the run's best is in the header)."""
    from mlx_attn.backends.cpu.status import native
    return native().fma_peak(args.peak_isa, seconds=0.1, threads=args.threads)


def dense_rows(args, backward):
    rows = []
    mult = 3.5 if backward else 1.0
    for dtype in args.dtypes:
        for D in args.head_dims:
            for causal in (False, True):
                for L in args.lengths:
                    shape = (1, 8, 8, L, L, D)
                    fl = mult * fwd_flops(1, 8, L, L, D, causal)
                    ours, sdpa = torch_pair(dtype, shape, causal, backward)
                    reps = 3 if L >= 4096 else args.repeats
                    peak = local_peak(args)
                    t_ours, t_torch = timed([ours, sdpa], reps)
                    row = dict(dtype=dtype, D=D, causal=causal, L=L, ours=fl / t_ours / 1e9,
                               torch=fl / t_torch / 1e9, peak=max(peak, local_peak(args)))
                    row["vs_torch"] = row["ours"] / row["torch"]
                    row["ours_peak"] = row["ours"] / row["peak"]
                    row["torch_peak"] = row["torch"] / row["peak"]
                    if args.mlx and L <= args.mlx_max_len:
                        ours_m, sdpa_m = mlx_pair(dtype, shape, causal, backward)
                        # MLX's SDPA takes seconds here: 3 interleaved repeats of each
                        t_ours, t_mlx = timed([ours_m, sdpa_m], 3)
                        row["ours_mlx"], row["mlx"] = fl / t_ours / 1e9, fl / t_mlx / 1e9
                        row["vs_mlx"] = row["ours_mlx"] / row["mlx"]
                    rows.append(row)
                    print("bwd" if backward else "fwd", _fmt(row), flush=True)
    return rows


def decode_rows(args):
    rows = []
    for dtype in args.dtypes:
        for D in args.head_dims:
            for Lk in args.decode_lengths:
                shape = (1, 32, 8, 1, Lk, D)
                ours, sdpa = torch_pair(dtype, shape, False, False)
                t_ours, t_torch = timed([ours, sdpa], args.repeats + 4)
                row = dict(dtype=dtype, D=D, Lk=Lk, ours_ms=t_ours * 1e3, torch_ms=t_torch * 1e3)
                row["vs_torch"] = row["torch_ms"] / row["ours_ms"]
                if args.mlx:
                    ours_m, sdpa_m = mlx_pair(dtype, shape, False, False)
                    t_ours, t_mlx = timed([ours_m, sdpa_m], args.repeats + 4)
                    row["ours_mlx_ms"], row["mlx_ms"] = t_ours * 1e3, t_mlx * 1e3
                    row["vs_mlx"] = row["mlx_ms"] / row["ours_mlx_ms"]
                rows.append(row)
                print("decode", _fmt(row), flush=True)
    return rows


def memory_target(contender, L, phase, state=None):
    """isolated_peak target: one fp32 forward, B=1 H=8 D=64 (module level: spawn imports it)."""
    B, H, D = 1, 8, 64
    if phase == "setup":
        rng = np.random.default_rng(0)
        x = [rng.standard_normal((B, H, L, D), dtype=np.float32) for _ in range(3)]
        if contender == "torch SDPA":
            import torch
            x = [torch.from_numpy(a) for a in x]
            torch.nn.functional.scaled_dot_product_attention(*(a[:, :, :8] for a in x))
        elif contender == "MLX SDPA":
            import mlx.core as mx
            mx.set_default_device(mx.cpu)
            x = [mx.array(a) for a in x]
            mx.eval(mx.fast.scaled_dot_product_attention(*(a[:, :, :8] for a in x), scale=0.125))
        else:  # load the extension and start its thread pool before measuring
            flash_attention(*(a[:, :, :8] for a in x), backend="cpu")
        return x
    q, k, v = state
    if contender == "torch SDPA":
        import torch
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
    elif contender == "MLX SDPA":
        import mlx.core as mx
        mx.eval(mx.fast.scaled_dot_product_attention(q, k, v, scale=0.125))
    else:
        flash_attention(q, k, v, backend="cpu")


def memory_rows(args):
    rows = []
    out_mb = lambda L: 8 * L * 64 * 4 / 2 ** 20  # noqa: E731
    for L in args.memory_lengths:
        for contender in ("ours", "torch SDPA") + (("MLX SDPA",) if args.mlx else ()):
            if contender == "MLX SDPA" and L > args.mlx_memory_max_len:
                continue
            before, peak = isolated_peak(memory_target, contender, L)
            extra = max(0.0, (peak - before) / 2 ** 20 - out_mb(L))
            rows.append(dict(contender=contender, L=L, extra_mb=extra))
            print("memory", _fmt(rows[-1]), flush=True)
    return rows


def _fmt(row):
    return " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def markdown(fwd, bwd, dec, mem, info):
    def cell(r, key, fmt="{:.1f}"):
        return fmt.format(r[key]) if key in r else "-"

    pk = info["peak_gflops"]
    lines = [f"Threads: {info['threads']} (ours and torch); ISA run: ours {info['isa']['ours']}, "
             f"torch {info['isa']['torch']} (requested: {info['isa']['requested']}); pause before "
             f"each timed call: {SETTLE_S * 1e3:g} ms. GFLOP/s unless noted.", "",
             "fp32 FMA peak of this machine, register-resident loop, GFLOP/s (before / after the "
             "timings; one thread x threads in brackets): " + "; ".join(
                 f"{isa} {v['before']:.1f} / {v['after']:.1f} ({v['one_thread']:.1f} x "
                 f"{info['threads']})" for isa, v in pk.items()) +
             f". % of peak below: of the {info['peak_isa']} peak measured just before and "
             "after each cell (the higher of the two; column `peak`), since other load on a "
             "shared machine comes and goes during a run.", ""]
    for title, rows in (("Forward", fwd), ("Forward + backward (dq, dk, dv)", bwd)):
        if not rows:
            continue
        lines += [f"### {title}, B=1 H=8 Lq=Lk=L", "",
                  "| dtype | D | causal | L | peak | ours (torch) | % peak | torch SDPA | % peak | "
                  "ours/torch | ours (MLX) | MLX SDPA | ours/MLX |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['dtype']} | {r['D']} | {r['causal']} | {r['L']} | {r['peak']:.0f} | "
                  f"{cell(r, 'ours')} | "
                  f"{100 * r['ours_peak']:.0f}% | {cell(r, 'torch')} | {100 * r['torch_peak']:.0f}% "
                  f"| {cell(r, 'vs_torch', '{:.2f}x')} | {cell(r, 'ours_mlx')} | "
                  f"{cell(r, 'mlx')} | {cell(r, 'vs_mlx', '{:.0f}x')} |" for r in rows]
        lines.append("")
    if dec:
        lines += ["### Decode, B=1 Hq=32 Hkv=8 Lq=1 (milliseconds)", "",
                  "| dtype | D | Lk | ours (torch) | torch SDPA | speed-up | ours (MLX) | MLX SDPA | "
                  "speed-up |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['dtype']} | {r['D']} | {r['Lk']} | {cell(r, 'ours_ms', '{:.2f}')} | "
                  f"{cell(r, 'torch_ms', '{:.2f}')} | {cell(r, 'vs_torch', '{:.2f}x')} | "
                  f"{cell(r, 'ours_mlx_ms', '{:.2f}')} | {cell(r, 'mlx_ms', '{:.2f}')} | "
                  f"{cell(r, 'vs_mlx', '{:.1f}x')} |" for r in dec]
    if mem:
        lines += ["", "### Peak extra memory of one forward, fp32 B=1 H=8 D=64 (MB beyond inputs "
                  "and output)", "", "| contender | L | MB |", "|---|---|---|"]
        lines += [f"| {r['contender']} | {r['L']} | {r['extra_mb']:.1f} |" for r in mem]
    return "\n".join(lines)


# -- ISA forcing, the peak, the machine ------------------------------------------------------------

# What each --isa sets: ours, torch's own kernels, and the GEMM libraries torch calls.
ISA_ENV = {
    "avx2": {"MLX_ATTN_CPU_ISA": "avx2", "ATEN_CPU_CAPABILITY": "avx2",
             "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def force_isa(isa):
    """Re-execute this script with --isa's environment unless it is already set: torch reads
    ATEN_CPU_CAPABILITY (and MKL / oneDNN theirs) once, when loaded."""
    want = ISA_ENV.get(isa, {})
    if all(os.environ.get(k) == v for k, v in want.items()):
        return
    if "torch" in sys.modules:
        sys.exit("bench_cpu.py: torch was imported before --isa could set ATEN_CPU_CAPABILITY")
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **want})


def peak_isa(ours):
    """The ISA whose FMA peak a kernel of ISA `ours` is measured against (same vector width)."""
    return "avx512" if ours.startswith("avx512") else ours


def measure_peaks(native, threads):
    """fp32 GFLOP/s of the FMA loop of each vector ISA this CPU runs, on all threads and on one."""
    out = {}
    for isa in ("avx512", "avx2", "generic"):
        try:
            out[isa] = dict(all=native.fma_peak(isa, seconds=0.5, threads=threads),
                            one=native.fma_peak(isa, seconds=0.3, threads=1))
        except ValueError:  # not supported here
            pass
    return out


# AMD family 0x19 / 0x1a models by microarchitecture (AMD's published model ranges)
_ZEN = [(0x17, range(0x00, 0x30), "Zen/Zen+"), (0x17, range(0x30, 0x100), "Zen 2"),
        (0x19, range(0x00, 0x10), "Zen 3"), (0x19, range(0x20, 0x60), "Zen 3"),
        (0x19, range(0x10, 0x20), "Zen 4"), (0x19, range(0x60, 0x80), "Zen 4"),
        (0x19, range(0xa0, 0xb0), "Zen 4"), (0x1a, range(0x00, 0x100), "Zen 5")]


def machine():
    """Model name (lscpu), vendor family / model, the vector ISAs the CPU reports, cores, memory."""
    info = {"arch": platform.machine(), "cores": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(re.findall(r"^([^:\n]+):\s*(.*)$", lscpu, re.M))
    except (OSError, subprocess.SubprocessError):
        fields = {}
    info["model_name"] = fields.get("Model name", platform.processor() or "unknown")
    info["hypervisor"] = fields.get("Hypervisor vendor")
    flags = fields.get("Flags", "").split()
    info["isa_flags"] = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16",
                                     "amx_tile", "amx_bf16", "asimd", "bf16") if f in flags]
    try:
        family, model = int(fields["CPU family"]), int(fields["Model"])
        info["family"], info["model"] = family, model
        if "AMD" in fields.get("Vendor ID", ""):
            info["uarch"] = next((u for f, r, u in _ZEN if f == family and model in r), None)
        elif "amx_bf16" in flags:  # VMs often hide the model; AMX first came with Sapphire Rapids
            info["uarch"] = "AMX, Sapphire Rapids or later"
    except (KeyError, ValueError):
        pass
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30)
    except (ValueError, OSError):
        pass
    return info


def machine_line(m):
    name = m["model_name"] + (f" ({m['uarch']})" if m.get("uarch") else "")
    fm = f", family {m['family']} model {m['model']}" if "family" in m else ""
    vm = f", {m['hypervisor']} VM" if m.get("hypervisor") else ""
    return (f"{name}{fm}, {m['cores']} cores{vm}, {m.get('memory_gb', '?')} GB; CPU flags: "
            f"{' '.join(m['isa_flags'])}")


def result_stem(m, isa):
    """benchmarks/results/cpu_<model>_<uarch>_<cores>core_<isa>"""
    words = [m["model_name"]] + ([m["uarch"]] if m.get("uarch") else []) + [f"{m['cores']}core", isa]
    slug = re.sub(r"[^a-z0-9]+", "_", "_".join(words).lower()).strip("_")
    return Path(__file__).resolve().parent / "results" / f"cpu_{slug}"


def software():
    import torch
    out = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        import mlx.core as mx
        out["mlx"] = mx.__version__
    except ImportError:
        pass
    import mlx_attn
    out["mlx_attn"] = str(Path(mlx_attn.__file__).parent)
    try:
        out["commit"] = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                                       text=True, timeout=10,
                                       cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--full", action="store_true", help="L up to 16k, decode Lk 4k..32k")
    parser.add_argument("--isa", choices=("auto", "avx2"), default="auto",
                        help="force both sides down to this ISA (default: each its best)")
    parser.add_argument("--lengths", type=int, nargs="+", help="L of the dense tables")
    parser.add_argument("--decode-lengths", type=int, nargs="+", help="Lk of the decode table")
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--tables", nargs="+", default=["fwd", "bwd", "decode", "memory"],
                        choices=("fwd", "bwd", "decode", "memory"))
    parser.add_argument("--no-mlx", dest="mlx", action="store_false", help="skip MLX")
    parser.add_argument("--mlx-max-len", type=int, default=1024)
    parser.add_argument("--out", default=None,
                        help="also write the markdown table here, and the JSON beside it")
    parser.add_argument("--save", action="store_true",
                        help="--out benchmarks/results/cpu_<machine>_<isa>.md")
    parser.add_argument("--note", default="", help="a line for the results file (how it was run)")
    parser.add_argument("--settle-ms", type=float, default=0.0,
                        help="untimed pause before each timed call (default: none)")
    args = parser.parse_args()
    force_isa(args.isa)
    global SETTLE_S
    SETTLE_S = args.settle_ms / 1e3
    if args.lengths is None:
        args.lengths = [512] if args.quick else [1024, 4096] + ([8192, 16384] if args.full else [])
    if args.decode_lengths is None:
        args.decode_lengths = [2048] if args.quick else \
            ([4096, 8192, 16384, 32768] if args.full else [8192])
    args.memory_lengths = [] if args.quick else [2048, 4096, 8192] + ([16384] if args.full else [])
    args.mlx_memory_max_len = 4096  # MLX materialises H * L^2 floats: 2 GB at L=8k
    if args.mlx:
        try:
            import mlx.core  # noqa: F401
        except ImportError:
            args.mlx = False
    import torch
    torch.set_num_threads(args.threads)
    from mlx_attn.backends.cpu.status import native
    native().set_num_threads(args.threads)
    os.environ["MLX_ATTN_THREADS"] = str(args.threads)  # for the memory subprocesses
    ours_isa, torch_isa = native().isa(), torch.backends.cpu.get_cpu_capability()
    if args.isa != "auto" and (ours_isa != args.isa or torch_isa.lower() != args.isa):
        sys.exit(f"bench_cpu.py: --isa {args.isa} asked, but ours runs {ours_isa} and torch "
                 f"{torch_isa}")
    mach = machine()
    print(machine_line(mach), f"| ISA: ours {ours_isa}, torch {torch_isa}", flush=True)

    start = time.time()
    load_before = os.getloadavg()
    peaks = measure_peaks(native(), args.threads)
    print("fp32 FMA peak (GFLOP/s, all threads / one):",
          ", ".join(f"{k} {v['all']:.1f} / {v['one']:.1f}" for k, v in peaks.items()), flush=True)
    args.peak_isa = peak_isa(ours_isa)
    args.peak = peaks[args.peak_isa]["all"]
    fwd = dense_rows(args, backward=False) if "fwd" in args.tables else []
    bwd = dense_rows(args, backward=True) if "bwd" in args.tables else []
    dec = decode_rows(args) if "decode" in args.tables else []
    mem = memory_rows(args) if "memory" in args.tables else []
    after = measure_peaks(native(), args.threads)
    args.peak = max(args.peak, after[args.peak_isa]["all"])
    info = dict(
        machine=mach, software=software(), threads=args.threads,
        isa=dict(requested=args.isa, ours=ours_isa, torch=torch_isa,
                 env={k: os.environ.get(k) for k in ISA_ENV["avx2"]}),
        peak_gflops={k: dict(before=v["all"], after=after[k]["all"], one_thread=v["one"])
                     for k, v in peaks.items()},
        peak_isa=args.peak_isa, peak=args.peak, settle_ms=args.settle_ms,
        load_average=dict(before=load_before, after=os.getloadavg()),
        argv=sys.argv[1:], seconds=round(time.time() - start))
    table = markdown(fwd, bwd, dec, mem, info)
    table += f"\n\nRun took {info['seconds']} s."
    print("\n" + table)
    out = Path(args.out) if args.out else (result_stem(mach, ours_isa).with_suffix(".md")
                                           if args.save else None)
    if out:
        shown = [a for i, a in enumerate(sys.argv[1:]) if "--note" not in sys.argv[i:i + 2]]
        head = [f"# bench_cpu.py {' '.join(shown)}, {time.strftime('%Y-%m-%d')}", "",
                f"Machine: {machine_line(mach)}; torch {info['software']['torch']}, mlx "
                f"{info['software'].get('mlx', '-')}, mlx_attn at {info['software'].get('commit', '?')}. "
                f"Load average (1 min) {load_before[0]:.1f} before, {info['load_average']['after'][0]:.1f} "
                "after: this machine is shared, so cells move between runs; ratios come from "
                "interleaved repeats.", ""] + ([args.note, ""] if args.note else [])
        out.write_text("\n".join(head) + table + "\n")
        out.with_suffix(".json").write_text(json.dumps(
            dict(info, forward=fwd, backward=bwd, decode=dec, memory=mem), indent=1) + "\n")
        print(f"wrote {out} and {out.with_suffix('.json')}")

if __name__ == "__main__":
    main()
