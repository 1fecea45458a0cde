"""Peak memory of the math backend with and without query chunking (issue 2's memory target).

Each configuration runs in a fresh process (mlx_attn.timing.isolated_peak) so high-water marks
do not mix; "extra" is the peak RSS minus the RSS once the inputs exist. Unchunked, B=1, H=8,
L=8192 materialises an 8x8192x8192 float32 score matrix (2 GiB) and its exp/softmax copies;
with MLX_ATTN_CHUNK=512 the extra memory is O(512 x L).

    python benchmarks/bench_math_memory.py [--L 8192] [--arrays numpy,torch,mlx]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import time

import numpy as np

from mlx_attn.timing import isolated_peak

GIB = 2.0 ** 30


def attention_job(kind, L, H, D, chunk, causal, *, phase, state=None):
    """Setup: build q/k/v. Run: one math-backend forward, fully evaluated."""
    if phase == "setup":
        os.environ["MLX_ATTN_CHUNK"] = chunk
        rng = np.random.default_rng(0)
        host = [rng.standard_normal((1, H, L, D), dtype=np.float32) for _ in range(3)]
        if kind == "torch":
            import torch
            return [torch.from_numpy(x) for x in host]
        if kind == "mlx":
            import mlx.core as mx
            arrays = [mx.array(x) for x in host]
            mx.eval(arrays)
            return arrays
        return host
    import mlx_attn
    from mlx_attn.timing import sync
    start = time.perf_counter()
    sync(mlx_attn.flash_attention(*state, causal=causal, backend="math"))
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--L", type=int, default=8192)
    parser.add_argument("--H", type=int, default=8)
    parser.add_argument("--D", type=int, default=64)
    parser.add_argument("--chunk", default="512")
    parser.add_argument("--arrays", default="numpy,torch,mlx")
    args = parser.parse_args()
    kinds = [k for k in args.arrays.split(",")
             if k == "numpy" or importlib.util.find_spec(k) is not None]
    score_gib = args.H * args.L * args.L * 4 / GIB
    print(f"math backend, B=1 H={args.H} L={args.L} D={args.D} float32; one full score matrix "
          f"would be {score_gib:.2f} GiB")
    print(f"{'arrays':<7} {'chunk':<6} {'causal':<7} {'extra peak GiB':>15} {'x scores':>9}")
    for kind in kinds:
        for chunk in (args.chunk, "off"):
            for causal in (False, True):
                before, peak = isolated_peak(attention_job, kind, args.L, args.H, args.D, chunk,
                                             causal)
                extra = (peak - before) / GIB
                print(f"{kind:<7} {chunk:<6} {str(causal):<7} {extra:>15.3f} "
                      f"{extra / score_gib:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
