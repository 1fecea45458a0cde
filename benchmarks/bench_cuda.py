"""CUDA benchmark: our kernels (backend="cuda") vs torch SDPA's backends, in one run.

    python benchmarks/bench_cuda.py                 # forward, fwd+bwd, decode, varlen tables
    python benchmarks/bench_cuda.py --quick         # a few rows of each (smoke test)
    python benchmarks/bench_cuda.py --only fwd      # one table: fwd | fwdbwd | decode | varlen

FlashAttention's conventions: hidden 2048 (H = 2048 / D), batch = 16k / L, FLOPs
4 * B * H * L^2 * D (halved when causal), backward = 2.5x forward.  torch's is_causal is
top-left aligned while ours is bottom-right; with Lq == Lk they coincide.  Decode: Lq = 1,
GQA 32/8, Lk up to 128k, reported in GB/s of K/V read and as time.  varlen: ragged lengths
packed vs the same batch padded to the longest sequence (ours dense and torch SDPA flash).
--deterministic measures the backward's atomics-free dQ mode.
Times come from mlx_attn.timing.measure (median).  Prints a markdown table per section and
the ratio ours / best SDPA backend in the same run.  Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import itertools
import random
import sys

from mlx_attn import flash_attention, flash_attention_varlen
from mlx_attn.timing import measure


def _sdpa_backends(torch):
    from torch.nn.attention import SDPBackend

    return {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


def _sdpa(torch, name, q, k, v, causal, gqa=False):
    from torch.nn.attention import sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    backend = _sdpa_backends(torch)[name]

    def run():
        with sdpa_kernel([backend]):
            return sdpa(q, k, v, is_causal=causal, enable_gqa=gqa)
    return run


def _time(fn, flops=None):
    """(ms, TFLOP/s) or (None, reason) if the backend refuses these inputs."""
    try:
        t = measure(fn, warmup=3, repeats=10, max_seconds=10.0)
    except Exception as error:  # an SDPA backend that does not take this shape/dtype
        return None, f"{type(error).__name__}"
    return t.median_s * 1e3, (t.tflops(flops) if flops else None)


def _grad_fn(torch, fwd, inputs):
    def run():
        out = fwd()
        return torch.autograd.grad(out, inputs, torch.ones_like(out))
    return run


def _row(cells):
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def _fmt(ms, tf):
    if ms is None:
        return f"n/a ({tf})"
    return f"{ms:.3f} ms" + (f" / {tf:.0f}" if tf is not None else "")


def bench_dense(torch, dtype, quick, backward):
    names = list(_sdpa_backends(torch))
    title = "forward+backward" if backward else "forward"
    print(f"\n### {title}, {dtype}, hidden 2048, batch = 16k/L  (ms / TFLOP/s)\n")
    _row(["D", "L", "causal", "ours"] + [f"sdpa {n}" for n in names] + ["ours / best"])
    _row(["---"] * (5 + len(names)))
    lengths = [512, 4096] if quick else [512, 1024, 2048, 4096, 8192, 16384]
    for D in (64, 128):
        for L in lengths:
            for causal in (False, True):
                H, B = 2048 // D, max(16384 // L, 1)
                g = torch.Generator(device="cuda").manual_seed(0)
                q, k, v = (torch.randn(B, H, L, D, generator=g, device="cuda", dtype=dtype)
                           .requires_grad_(backward) for _ in range(3))
                flops = 4.0 * B * H * L * L * D / (2 if causal else 1)
                flops *= 3.5 if backward else 1.0
                ours = lambda: flash_attention(q, k, v, causal=causal, backend="cuda")  # noqa
                fns = [ours] + [_sdpa(torch, n, q, k, v, causal) for n in names]
                if backward:
                    fns = [_grad_fn(torch, f, (q, k, v)) for f in fns]
                if L >= 8192:  # the math backend materialises B*H*L*L scores
                    fns[-1] = None
                res = [(_time(f, flops) if f is not None else (None, "skipped")) for f in fns]
                best = min((r[0] for r in res[1:] if r[0] is not None), default=None)
                ratio = f"{best / res[0][0]:.2f}x" if best and res[0][0] else "n/a"
                _row([D, L, causal] + [_fmt(*r) for r in res] + [ratio])
                del q, k, v
                torch.cuda.empty_cache()


def bench_decode(torch, dtype, quick):
    names = ["flash", "efficient", "cudnn", "math"]
    print(f"\n### decode, {dtype}: Lq = 1, Hq = 32, Hkv = 8, D = 128, batch 1 "
          f"(ms / K+V GB/s)\n")
    _row(["Lk", "ours"] + [f"sdpa {n}" for n in names] + ["ours / best"])
    _row(["---"] * (3 + len(names)))
    for Lk in ([8192, 131072] if quick else [1024, 4096, 8192, 32768, 131072]):
        g = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(1, 32, 1, 128, generator=g, device="cuda", dtype=dtype)
        k, v = (torch.randn(1, 8, Lk, 128, generator=g, device="cuda", dtype=dtype)
                for _ in range(2))
        kv_bytes = 2 * k.numel() * k.element_size()
        ours = lambda: flash_attention(q, k, v, backend="cuda")  # noqa: E731
        fns = [ours] + [_sdpa(torch, n, q, k, v, False, gqa=True) for n in names]
        res = []
        for f in fns:
            ms, why = _time(f)
            res.append((ms, kv_bytes / (ms * 1e-3) / 1e9) if ms else (None, why))
        best = min((r[0] for r in res[1:] if r[0] is not None), default=None)
        ratio = f"{best / res[0][0]:.2f}x" if best and res[0][0] else "n/a"
        _row([Lk] + [_fmt(*r) for r in res] + [ratio])


def bench_varlen(torch, dtype, quick):
    print(f"\n### varlen, {dtype}, H = 16, D = 128, causal, forward+backward "
          f"(ours packed vs padded to the longest sequence: ours and torch SDPA flash)\n")
    _row(["sequences", "total tokens", "ours packed", "ours padded", "sdpa flash padded",
          "packed / best padded"])
    _row(["---"] * 6)
    rng = random.Random(0)
    for n, longest in ([(8, 2048)] if quick else [(8, 2048), (32, 1024), (64, 4096)]):
        lens = [rng.randint(1, longest) for _ in range(n)]
        cu = torch.tensor([0] + list(itertools.accumulate(lens)),
                          dtype=torch.int32, device="cuda")
        total, L = int(cu[-1]), max(lens)
        q, k, v = (torch.randn(total, 16, 128, device="cuda", dtype=dtype).requires_grad_()
                   for _ in range(3))
        qp, kp, vp = (torch.randn(n, 16, L, 128, device="cuda", dtype=dtype).requires_grad_()
                      for _ in range(3))
        ours = _grad_fn(torch, lambda: flash_attention_varlen(q, k, v, cu, cu, L, L, causal=True,
                                                              backend="cuda"), (q, k, v))
        ours_padded = _grad_fn(torch, lambda: flash_attention(qp, kp, vp, causal=True,
                                                              backend="cuda"), (qp, kp, vp))
        padded = _grad_fn(torch, _sdpa(torch, "flash", qp, kp, vp, True), (qp, kp, vp))
        a, b, c = _time(ours)[0], _time(ours_padded)[0], _time(padded)[0]
        best = min((x for x in (b, c) if x), default=None)
        _row([n, total, _fmt(a, None), _fmt(b, None), _fmt(c, None),
              f"{best / a:.2f}x" if a and best else "n/a"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["fwd", "fwdbwd", "decode", "varlen"])
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    parser.add_argument("--deterministic", action="store_true",
                        help="torch.use_deterministic_algorithms(True): our backward then runs "
                             "its dQ pass without atomics (SDPA backends may refuse)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench_cuda: no CUDA device visible to torch; nothing to measure")
        return 0
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}"
          f"{'  deterministic' if args.deterministic else ''}")
    if args.only in (None, "fwd"):
        bench_dense(torch, dtype, args.quick, backward=False)
    if args.only in (None, "fwdbwd"):
        bench_dense(torch, dtype, args.quick, backward=True)
    if args.only in (None, "decode"):
        bench_decode(torch, dtype, args.quick)
    if args.only in (None, "varlen"):
        bench_varlen(torch, dtype, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
