"""Benchmark of the `cpu` backend against torch SDPA and MLX's CPU SDPA, all in one run with the
same thread count. Forward (fp32 / bf16, D 64 / 128, causal or not, L 512..16k), GQA decode
(Lq=1, Hq/Hkv = 32/8, Lk 4k..32k), backward, and peak extra memory at L=16k.

    PYTHONPATH=. python benchmarks/bench_cpu.py [--quick] [--threads N] [--out results.md]

Timings interleave the contenders and take the median of repeats (another process may share the
CPU). Throughput is FlashAttention's FLOP count: 4 B H Lq Lk D, halved when causal (forward), and
2.5x the forward's for the backward. (Minimal timing code of our own: the foundation's shared
timing helpers were not on main when this was written.)
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np


def median_time(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds per contender, alternating contenders on every repeat."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def fwd_flops(B, H, Lq, Lk, D, causal):
    return 4.0 * B * H * Lq * Lk * D / (2 if causal else 1)


def setup(threads):
    import torch
    torch.set_num_threads(threads)
    from mlx_attn import cpu_ops
    cpu_ops.native().set_num_threads(threads)
    return torch


def forward_rows(torch, args):
    import mlx.core as mx
    from mlx_attn import flash_attention
    F = torch.nn.functional.scaled_dot_product_attention
    mx.set_default_device(mx.cpu)
    rows = []
    grid = []
    Ls = [512, 1024, 2048] if args.quick else [512, 1024, 2048, 4096]
    for dtype in ("float32", "bfloat16"):
        for D in (64, 128):
            for causal in (False, True):
                for L in Ls:
                    grid.append((dtype, D, causal, L))
    if not args.quick:
        for causal in (False, True):
            for L in (8192, 16384):
                grid.append(("float32", 64, causal, L))
    for dtype, D, causal, L in grid:
        B, H = 1, 8
        tdt = getattr(torch, dtype)
        q, k, v = (torch.randn(B, H, L, D, dtype=tdt) for _ in range(3))
        # torch's is_causal is top-left aligned; with Lq == Lk it equals the SPEC's bottom-right
        fns = {"ours": lambda: flash_attention(q, k, v, causal=causal, backend="cpu"),
               "torch": lambda: F(q, k, v, is_causal=causal)}
        reps = 3 if L >= 8192 else args.repeats
        t = interleaved(fns, reps)
        mlx_t = None
        if L <= (1024 if args.quick else 2048) and D == 64:
            mq, mk, mv = (mx.array(x.float().numpy()).astype(getattr(mx, dtype)) for x in (q, k, v))
            mask = "causal" if causal else None

            def run_mlx():
                mx.eval(mx.fast.scaled_dot_product_attention(mq, mk, mv, scale=D ** -0.5, mask=mask))
            mlx_t = median_time(run_mlx, 1 if L >= 2048 else 2)
        fl = fwd_flops(B, H, L, L, D, causal)
        rows.append(dict(dtype=dtype, D=D, causal=causal, L=L, ours=fl / t["ours"] / 1e9,
                         torch=fl / t["torch"] / 1e9,
                         mlx=None if mlx_t is None else fl / mlx_t / 1e9))
        print_row("fwd", rows[-1])
    return rows


def decode_rows(torch, args):
    from mlx_attn import flash_attention
    F = torch.nn.functional.scaled_dot_product_attention
    rows = []
    for dtype in ("float32", "bfloat16"):
        for D in (64, 128):
            for Lk in (4096, 8192, 16384, 32768):
                tdt = getattr(torch, dtype)
                q = torch.randn(1, 32, 1, D, dtype=tdt)
                k, v = (torch.randn(1, 8, Lk, D, dtype=tdt) for _ in range(2))
                t = interleaved({"ours": lambda: flash_attention(q, k, v, backend="cpu"),
                                 "torch": lambda: F(q, k, v, enable_gqa=True)}, args.repeats + 2)
                rows.append(dict(dtype=dtype, D=D, Lk=Lk, ours_ms=t["ours"] * 1e3,
                                 torch_ms=t["torch"] * 1e3))
                print_row("decode", rows[-1])
    return rows


def backward_rows(torch, args):
    from mlx_attn import flash_attention
    F = torch.nn.functional.scaled_dot_product_attention
    rows = []
    for dtype in ("float32", "bfloat16"):
        for D in (64, 128):
            for causal in (False, True):
                for L in ([1024] if args.quick else [1024, 2048, 4096]):
                    tdt = getattr(torch, dtype)
                    q, k, v = (torch.randn(1, 8, L, D, dtype=tdt, requires_grad=True)
                               for _ in range(3))
                    go = torch.randn(1, 8, L, D, dtype=tdt)
                    ours = flash_attention(q, k, v, causal=causal, backend="cpu")
                    ref = F(q, k, v, is_causal=causal)
                    t = interleaved({
                        "ours": lambda: torch.autograd.grad(ours, (q, k, v), go, retain_graph=True),
                        "torch": lambda: torch.autograd.grad(ref, (q, k, v), go, retain_graph=True),
                    }, args.repeats)
                    fl = 2.5 * fwd_flops(1, 8, L, L, D, causal)
                    rows.append(dict(dtype=dtype, D=D, causal=causal, L=L,
                                     ours=fl / t["ours"] / 1e9, torch=fl / t["torch"] / 1e9))
                    print_row("bwd", rows[-1])
    return rows


MEMORY_CHILD = r"""
import resource, sys, numpy as np
which, L = sys.argv[1], int(sys.argv[2])
B, H, D = 1, 8, 64
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if which == "ours":
    from mlx_attn import flash_attention
    q, k, v = (np.random.standard_normal((B, H, L, D)).astype(np.float32) for _ in range(3))
    flash_attention(q[:, :, :8], k[:, :, :8], v[:, :, :8], backend="cpu")  # load, start threads
    before = rss()
    out = flash_attention(q, k, v, backend="cpu")
else:
    import torch
    q, k, v = (torch.randn(B, H, L, D) for _ in range(3))
    torch.nn.functional.scaled_dot_product_attention(q[:, :, :8], k[:, :, :8], v[:, :, :8])
    before = rss()
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
print((rss() - before - out.nbytes if which == "ours" else
       rss() - before - out.numel() * 4) / 2**20)
"""


def memory_rows(args):
    rows = []
    env = dict(os.environ, MLX_ATTN_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    for which in ("ours", "torch"):
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, which, "16384"], env=env,
                             capture_output=True, text=True, check=True)
        rows.append(dict(contender=which, extra_mb=float(out.stdout.strip().splitlines()[-1])))
        print(f"memory L=16k H=8 D=64 fp32 {which}: {rows[-1]['extra_mb']:.1f} MB extra")
    return rows


def print_row(kind, row):
    print(kind, " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in row.items()), flush=True)


def markdown(fwd, dec, bwd, mem, threads, isa):
    lines = [f"Threads: {threads} for every contender; our ISA path: {isa}. GFLOP/s unless noted.",
             "", "### Forward (B=1, H=8, Lq=Lk=L)", "",
             "| dtype | D | causal | L | ours | torch SDPA | ours/torch | MLX SDPA | ours/MLX |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in fwd:
        m = "" if r["mlx"] is None else f"{r['mlx']:.1f}"
        mr = "" if r["mlx"] is None else f"{r['ours'] / r['mlx']:.0f}x"
        lines.append(f"| {r['dtype']} | {r['D']} | {r['causal']} | {r['L']} | {r['ours']:.1f} | "
                     f"{r['torch']:.1f} | {r['ours'] / r['torch']:.2f}x | {m} | {mr} |")
    lines += ["", "### Decode (B=1, Hq=32, Hkv=8, Lq=1), milliseconds", "",
              "| dtype | D | Lk | ours ms | torch SDPA ms | speed-up |", "|---|---|---|---|---|---|"]
    for r in dec:
        lines.append(f"| {r['dtype']} | {r['D']} | {r['Lk']} | {r['ours_ms']:.2f} | "
                     f"{r['torch_ms']:.2f} | {r['torch_ms'] / r['ours_ms']:.2f}x |")
    lines += ["", "### Backward (B=1, H=8, dq+dk+dv), GFLOP/s (2.5x forward FLOPs)", "",
              "| dtype | D | causal | L | ours | torch SDPA | ours/torch |", "|---|---|---|---|---|---|---|"]
    for r in bwd:
        lines.append(f"| {r['dtype']} | {r['D']} | {r['causal']} | {r['L']} | {r['ours']:.1f} | "
                     f"{r['torch']:.1f} | {r['ours'] / r['torch']:.2f}x |")
    if mem:
        lines += ["", "### Peak extra memory, forward L=16k H=8 D=64 fp32 (beyond inputs and output)",
                  "", "| contender | MB |", "|---|---|"]
        lines += [f"| {r['contender']} | {r['extra_mb']:.1f} |" for r in mem]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args()
    torch = setup(args.threads)
    from mlx_attn import cpu_ops
    start = time.time()
    fwd = forward_rows(torch, args)
    dec = decode_rows(torch, args)
    bwd = backward_rows(torch, args)
    mem = [] if args.quick else memory_rows(args)
    table = markdown(fwd, dec, bwd, mem, args.threads, cpu_ops.native().isa())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table += f"\n\nBenchmark process peak RSS: {peak:.0f} MB; run took {time.time() - start:.0f} s."
    print("\n" + table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
