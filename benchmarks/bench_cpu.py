"""The `cpu` backend against torch's CPU SDPA and MLX's CPU `mx.fast.scaled_dot_product_attention`,
all measured in one run with mlx_attn.timing (median of repeats, same thread count for us and
torch; MLX uses its own CPU threading).

    python benchmarks/bench_cpu.py            # default grid (~5-10 min on 2 cores)
    python benchmarks/bench_cpu.py --quick    # smoke run
    python benchmarks/bench_cpu.py --full     # L up to 16k, decode Lk 4k..32k

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
import os
import time

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

def dense_rows(args, backward):
    rows = []
    mult = 3.5 if backward else 1.0
    for dtype in args.dtypes:
        for D in (64, 128):
            for causal in (False, True):
                for L in args.lengths:
                    shape = (1, 8, 8, L, L, D)
                    fl = mult * fwd_flops(1, 8, L, L, D, causal)
                    ours, sdpa = torch_pair(dtype, shape, causal, backward)
                    reps = 3 if L >= 4096 else args.repeats
                    t_ours, t_torch = timed([ours, sdpa], reps)
                    row = dict(dtype=dtype, D=D, causal=causal, L=L, ours=fl / t_ours / 1e9,
                               torch=fl / t_torch / 1e9)
                    row["vs_torch"] = row["ours"] / row["torch"]
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
        for D in (64, 128):
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


def markdown(fwd, bwd, dec, mem, threads, isa):
    def cell(r, key, fmt="{:.1f}"):
        return fmt.format(r[key]) if key in r else "-"

    lines = [f"Threads: {threads} (ours and torch); our ISA path: {isa}; pause before each timed "
             f"call: {SETTLE_S * 1e3:g} ms. GFLOP/s unless noted.", ""]
    for title, rows in (("Forward", fwd), ("Forward + backward (dq, dk, dv)", bwd)):
        lines += [f"### {title}, B=1 H=8 Lq=Lk=L", "",
                  "| dtype | D | causal | L | ours (torch) | torch SDPA | ours/torch | ours (MLX) "
                  "| MLX SDPA | ours/MLX |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['dtype']} | {r['D']} | {r['causal']} | {r['L']} | {cell(r, 'ours')} | "
                  f"{cell(r, 'torch')} | {cell(r, 'vs_torch', '{:.2f}x')} | {cell(r, 'ours_mlx')} | "
                  f"{cell(r, 'mlx')} | {cell(r, 'vs_mlx', '{:.0f}x')} |" for r in rows]
        lines.append("")
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--full", action="store_true", help="L up to 16k, decode Lk 4k..32k")
    parser.add_argument("--no-mlx", dest="mlx", action="store_false", help="skip MLX")
    parser.add_argument("--mlx-max-len", type=int, default=1024)
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    parser.add_argument("--settle-ms", type=float, default=0.0,
                        help="untimed pause before each timed call (default: none)")
    args = parser.parse_args()
    global SETTLE_S
    SETTLE_S = args.settle_ms / 1e3
    args.dtypes = ("float32", "bfloat16")
    args.lengths = [512] if args.quick else [1024, 4096] + ([8192, 16384] if args.full else [])
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

    start = time.time()
    fwd = dense_rows(args, backward=False)
    bwd = dense_rows(args, backward=True)
    dec = decode_rows(args)
    mem = memory_rows(args)
    table = markdown(fwd, bwd, dec, mem, args.threads, native().isa())
    table += f"\n\nRun took {time.time() - start:.0f} s."
    print("\n" + table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
