"""The metal backend against MLX's own fused attention (mx.fast.scaled_dot_product_attention).

For each shape: forward time, forward+backward time (mx.grad of q, k, v) and the peak GPU
memory of forward+backward (mx.get_peak_memory after mx.reset_peak_memory), for both
implementations measured in the same run with mlx_attn.timing.measure. MLX's SDPA has a fused
forward but no fused backward: under mx.grad it differentiates the unfused graph, whose memory
grows as B*H*L^2; ours recomputes the scores tile by tile from the saved lse.

    python benchmarks/bench_metal.py                 # default shape table
    python benchmarks/bench_metal.py --L 1024,4096 --D 64,128 --dtype float16 --causal

Exits with a message (status 2) on a machine without a Metal GPU.
"""
from __future__ import annotations

import argparse
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--B", type=int, default=1)
    parser.add_argument("--H", type=int, default=16)
    parser.add_argument("--Hkv", type=int, default=0, help="kv heads (GQA); 0 means H")
    parser.add_argument("--L", default="512,1024,2048,4096")
    parser.add_argument("--D", default="64,128")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--decode", action="store_true", help="Lq = 1 against Lk = L")
    parser.add_argument("--no-backward", action="store_true")
    args = parser.parse_args()

    try:
        import mlx.core as mx
    except ImportError:
        print("bench_metal: mlx is not installed; this benchmark needs MLX on an Apple-silicon "
              "Mac", file=sys.stderr)
        return 2
    if not mx.metal.is_available():
        print("bench_metal: no Metal GPU on this machine (mx.metal.is_available() is False); "
              "run it on an Apple-silicon Mac. The kernels are checked on Linux by "
              "tests/test_metal_emulated.py, but timings need the real GPU.", file=sys.stderr)
        return 2
    mx.set_default_device(mx.gpu)

    from mlx_attn import flash_attention
    from mlx_attn.timing import measure

    dtype = getattr(mx, args.dtype)
    Hkv = args.Hkv or args.H
    try:
        name = mx.metal.device_info().get("device_name", "Apple GPU")
    except Exception:  # the info call moved between MLX versions
        name = "Apple GPU"
    print(f"device: {name}, dtype "
          f"{args.dtype}, B={args.B} H={args.H} Hkv={Hkv} causal={args.causal}"
          f"{' decode (Lq=1)' if args.decode else ''}")
    header = (f"{'L':>6} {'D':>4} | {'fwd ours ms':>11} {'fwd sdpa ms':>11} {'ratio':>6} | "
              f"{'f+b ours ms':>11} {'f+b sdpa ms':>11} {'ratio':>6} | "
              f"{'peak ours MB':>12} {'peak sdpa MB':>12}")
    print(header)
    print("-" * len(header))
    for D in (int(d) for d in args.D.split(",")):
        for L in (int(n) for n in args.L.split(",")):
            Lq = 1 if args.decode else L
            q = mx.random.normal((args.B, args.H, Lq, D)).astype(dtype)
            k = mx.random.normal((args.B, Hkv, L, D)).astype(dtype)
            v = mx.random.normal((args.B, Hkv, L, D)).astype(dtype)
            mx.eval(q, k, v)
            scale = D ** -0.5
            mask = "causal" if args.causal else None

            def ours(a, b, c):
                return flash_attention(a, b, c, causal=args.causal, backend="metal")

            def sdpa(a, b, c):  # takes GQA (Hkv < H) directly
                return mx.fast.scaled_dot_product_attention(a, b, c, scale=scale, mask=mask)

            row = [f"{L:>6} {D:>4} |"]
            fwd = [measure(lambda f=f: f(q, k, v)).median_s * 1e3 for f in (ours, sdpa)]
            row.append(f"{fwd[0]:>11.3f} {fwd[1]:>11.3f} {fwd[1] / fwd[0]:>6.2f} |")
            if args.no_backward:
                print(" ".join(row))
                continue
            both, peaks = [], []
            for f in (ours, sdpa):
                grad = mx.grad(lambda a, b, c, f=f: f(a, b, c).astype(mx.float32).sum(),
                               argnums=(0, 1, 2))
                try:
                    both.append(measure(lambda g=grad: g(q, k, v), repeats=5).median_s * 1e3)
                    mx.reset_peak_memory()
                    base = mx.get_active_memory()
                    mx.eval(grad(q, k, v))
                    peaks.append((mx.get_peak_memory() - base) / 2 ** 20)
                except (RuntimeError, ValueError, MemoryError) as error:  # e.g. out of memory
                    print(f"  ({f.__name__} forward+backward failed: {error})")
                    both.append(float("nan"))
                    peaks.append(float("nan"))
            row.append(f"{both[0]:>11.3f} {both[1]:>11.3f} {both[1] / both[0]:>6.2f} |")
            row.append(f"{peaks[0]:>12.1f} {peaks[1]:>12.1f}")
            print(" ".join(row))
    print("ratio = sdpa time / ours (> 1: ours is faster). Peak = extra GPU memory of one "
          "forward+backward.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
