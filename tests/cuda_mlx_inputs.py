"""Random inputs of the `cuda` backend's MLX-path tests, shared by the emulator run
(tests/cuda_emulator/test_cuda_emu_mlx.py) and the GPU run (tests/test_cuda_gpu_mlx.py), so that
both check the same problems."""
from __future__ import annotations

import numpy as np


def mlx_inputs(rng, dtype, B, Hq, Hkv, Lq, Lk, D, Dv=None, mask=None):
    """q, k, v (bhld, MLX `dtype`) and a mask: None; "bool" [B, 1, Lq, Lk] with key 0 kept in
    every row (the SPEC's empty-row rules are tested elsewhere); "additive" [1, Hq, Lq, Lk]
    float32."""
    import mlx.core as mx

    mdt = getattr(mx, dtype)
    shapes = [(B, Hq, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, Dv or D)]
    q, k, v = (mx.array(rng.standard_normal(s).astype(np.float32)).astype(mdt) for s in shapes)
    m = None
    if mask == "bool":
        keep = rng.random((B, 1, Lq, Lk)) > 0.3
        keep[..., 0] = True
        m = mx.array(keep)
    elif mask == "additive":
        m = mx.array(rng.standard_normal((1, Hq, Lq, Lk)).astype(np.float32))
    return q, k, v, m
