"""torch and MLX in one process: does either of our paths get slower?

Times the `cpu` backend's forward (B1 H8 L1024 D64, float32) on MLX arrays and on torch tensors:
- alone:        in a fresh process that imports only that framework,
- together:     in a process that has imported and used the other framework,
- right after:  immediately after one of the other framework's parallel ops (a 256x256 matmul),
- settled:      the same, 20 ms later.

"right after" shows other runtimes' worker threads spin-waiting after their parallel region
(torch's libgomp team, numpy's OpenBLAS): on a 2-core machine they share the cores with whatever
runs next, for a few milliseconds. Our own pool never spins (its workers block on a condition
variable), and torch tensors run on torch's own OpenMP team, so neither of our paths adds to it.

    python benchmarks/bench_mixed.py          # ~1 min; run it after `pip install .`
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

SHAPE = (1, 8, 1024, 64)
CHILD = r"""
import statistics, sys, time
import numpy as np
mode, kind = sys.argv[1], sys.argv[2]
other = "torch" if kind == "mlx" else "mlx"
from mlx_attn import flash_attention
x = np.random.default_rng(0).standard_normal(%r, dtype=np.float32)
if kind == "mlx":
    import mlx.core as mx
    q = mx.array(x); mx.eval(q)
    run = lambda: mx.eval(flash_attention(q, q, q))
else:
    import torch
    q = torch.from_numpy(x)
    run = lambda: flash_attention(q, q, q)
if mode != "alone":
    if other == "torch":
        import torch
        a = torch.randn(256, 256)
        other_op = lambda: a @ a
    else:
        import mlx.core as mx
        a = mx.random.normal((256, 256))
        other_op = lambda: mx.eval(a @ a)
    other_op()
for _ in range(3):
    run()
times = []
for _ in range(15):
    if mode == "right after":
        other_op()
    elif mode == "settled":
        other_op(); time.sleep(0.02)
    else:
        time.sleep(0.02)
    t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
print(statistics.median(times) * 1e3)
""" % (SHAPE,)


def child(mode: str, kind: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, kind], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    modes = ("alone", "together", "right after", "settled")
    print(f"cpu backend forward {SHAPE}, float32, median ms of 15 calls (each mode: 3 processes, "
          f"median)")
    print(f"{'arrays':<7}" + "".join(f"{m:>13}" for m in modes))
    for kind in ("mlx", "torch"):
        cells = []
        for mode in modes:
            cells.append(statistics.median(child(mode, kind) for _ in range(3)))
            time.sleep(0.1)
        print(f"{kind:<7}" + "".join(f"{c:13.2f}" for c in cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
