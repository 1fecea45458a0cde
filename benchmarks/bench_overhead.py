"""What one `flash_attention` call costs beyond its kernel, on shapes where that cost shows: a
tiny call (B1 H4 L8 D32) and decode steps (Lq=1). Measured in one run, per array kind:

- ours:     `flash_attention(q, k, v)` (validation, dispatch, glue, kernel), evaluated
- kernel:   the same kernel called directly with arguments prepared once (torch / numpy: the
            native entry point on preallocated outputs; MLX: the primitive, evaluated)
- native:   the platform's own SDPA on the same arrays (mx.fast / torch), evaluated
- overhead: ours - kernel, the Python cost of a repeated call (target <= 15 us); for MLX, whose
            calls are lazy, the same difference for the calls without evaluation
- ratio:    ours / native (target <= 1.2 at B1 H4 L8 D32 on the cpu path)

Each figure is the best over rounds of the per-call time of a batch of calls (as timeit does:
on a shared machine the slower rounds measure the neighbours); the contenders' rounds are
interleaved so that a drift in machine speed reaches them alike. Run it after
installing the package (`pip install .`), from any folder:

    python benchmarks/bench_overhead.py            # ~1 min
    python benchmarks/bench_overhead.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from mlx_attn import flash_attention

SHAPES = {  # name: (B, Hq, Hkv, Lq, Lk, D)
    "tiny B1 H4 L8 D32": (1, 4, 4, 8, 8, 32),
    "decode small model H4/2 Lk256 D32": (1, 4, 2, 1, 256, 32),
    "decode H32/8 Lk1k D128": (1, 32, 8, 1, 1024, 128),
}
TARGET_OVERHEAD_US = 15.0
TARGET_RATIO = 1.2
TARGET_SHAPE = "tiny B1 H4 L8 D32"


def per_call_us(fns: dict, calls: int, rounds: int) -> dict:
    """Best over `rounds` of the mean time of `calls` back-to-back calls, contenders in turn."""
    for fn in fns.values():  # warm-up: caches, lazy imports, allocator pools
        for _ in range(max(calls // 4, 20)):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: min(ts) for name, ts in samples.items()}


def host_inputs(shape, seed=0):
    B, Hq, Hkv, Lq, Lk, D = shape
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, Hq, Lq, D), dtype=np.float32),
            rng.standard_normal((B, Hkv, Lk, D), dtype=np.float32),
            rng.standard_normal((B, Hkv, Lk, D), dtype=np.float32))


def mlx_contenders(shape):
    import mlx.core as mx
    from mlx_attn.backends.cpu import _mlx_primitive
    q, k, v = (mx.array(x) for x in host_inputs(shape))
    mx.eval(q, k, v)
    scale = shape[-1] ** -0.5

    def kernel():
        return _mlx_primitive.attention(q, k, v, None, None, None, scale, 0.0, -1, -1, False, 0)[0]

    # MLX is lazy: the Python cost is the building of the graph ("lazy" rows), measured apart
    # from the evaluation, whose scheduling jitter (tens of microseconds) would swamp it
    return {
        "ours": lambda: mx.eval(flash_attention(q, k, v)),
        "kernel": lambda: mx.eval(kernel()),
        "native": lambda: mx.eval(mx.fast.scaled_dot_product_attention(q, k, v, scale=scale)),
        "ours lazy": lambda: flash_attention(q, k, v),
        "kernel lazy": kernel,
    }


def _direct_spec(q, k, v, lib):
    """The native kernel's keyword arguments for a dense bhld call, outputs preallocated."""
    from mlx_attn.backends.cpu.strided import base_spec, numpy_desc, torch_desc
    B, Hq, Lq, D = q.shape
    _, Hkv, Lk, Dv = v.shape
    if lib == "torch":
        import torch
        out, lse = torch.empty(B, Hq, Lq, Dv), torch.empty(B, Hq, Lq)
        desc = torch_desc
    else:
        out, lse = np.empty((B, Hq, Lq, Dv), np.float32), np.empty((B, Hq, Lq), np.float32)
        desc = numpy_desc
    spec = base_spec("float32", (B, Hq, Hkv, Lq, Lk, D, Dv), D ** -0.5, None, False, (-1, -1))
    spec.update(q=desc(q, 4), k=desc(k, 4), v=desc(v, 4), o=desc(out, 4), lse=desc(lse, 3),
                out_f32=False, mask=None, mask_kind=0, mask_type=0, cu_q=None, cu_k=None)
    return spec, (out, lse)


def torch_contenders(shape):
    import torch
    from mlx_attn.backends.cpu.openmp import torch_openmp
    from mlx_attn.backends.cpu.status import native
    q, k, v = (torch.from_numpy(x) for x in host_inputs(shape))
    spec, keep = _direct_spec(q, k, v, "torch")
    kernel, openmp = native().forward, torch_openmp()
    gqa = shape[1] != shape[2]
    sdpa = torch.nn.functional.scaled_dot_product_attention
    return {
        "ours": lambda: flash_attention(q, k, v),
        "kernel": lambda: (kernel(**spec, openmp=openmp), keep),
        "native": lambda: sdpa(q, k, v, enable_gqa=gqa),
    }


def numpy_contenders(shape):
    from mlx_attn.backends.cpu.status import native
    q, k, v = host_inputs(shape)
    spec, keep = _direct_spec(q, k, v, "numpy")
    kernel = native().forward
    return {"ours": lambda: flash_attention(q, k, v),
            "kernel": lambda: (kernel(**spec, openmp=False), keep)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per timed batch")
    parser.add_argument("--rounds", type=int, default=7, help="timed batches per contender")
    parser.add_argument("--arrays", default="mlx,torch,numpy")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    makers = {"mlx": mlx_contenders, "torch": torch_contenders, "numpy": numpy_contenders}
    rows = []
    print(f"{platform.machine()} {platform.processor() or ''}; per-call microseconds, fp32, "
          f"best of {args.rounds} batches of {args.calls} calls")
    print(f"{'arrays':<6} {'shape':<34} {'ours':>8} {'kernel':>8} {'overhead':>9} {'native':>8} "
          f"{'ours/native':>11}")
    for kind in args.arrays.split(","):
        for name, shape in SHAPES.items():
            calls = args.calls if shape[4] <= 256 else max(args.calls // 10, 50)
            t = per_call_us(makers[kind](shape), calls, args.rounds)
            row = dict(arrays=kind, shape=name, **{f"{k}_us": v for k, v in t.items()})
            lazy = "ours lazy" in t  # MLX: graph building, without the evaluation's jitter
            row["overhead_us"] = (t["ours lazy"] - t["kernel lazy"]) if lazy else \
                t["ours"] - t["kernel"]
            row["ratio"] = t["ours"] / t["native"] if "native" in t else None
            rows.append(row)
            native = f"{t['native']:8.1f}" if "native" in t else f"{'-':>8}"
            ratio = f"{row['ratio']:11.2f}" if row["ratio"] else f"{'-':>11}"
            print(f"{kind:<6} {name:<34} {t['ours']:8.1f} {t['kernel']:8.1f} "
                  f"{row['overhead_us']:9.1f} {native} {ratio}", flush=True)
    worst = max(r["overhead_us"] for r in rows)
    print(f"largest overhead {worst:.1f} us (target <= {TARGET_OVERHEAD_US:g} us)")
    for r in rows:
        if r["shape"] == TARGET_SHAPE and r["ratio"]:
            print(f"{r['arrays']}: ours / native at {TARGET_SHAPE} = {r['ratio']:.2f} "
                  f"(target <= {TARGET_RATIO:g})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
