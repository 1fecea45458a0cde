"""Shared helpers of the cpu backend tests: array construction per kind and the pass criterion."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_MLX = importlib.util.find_spec("mlx") is not None


def native_or_skip():
    try:
        from mlx_attn import cpu_ops
        return cpu_ops.native()
    except ImportError as error:
        pytest.skip(f"the native extension mlx_attn._cpu is not built ({error})")


def kinds():
    out = ["numpy"]
    if HAVE_TORCH:
        out.append("torch")
    if HAVE_MLX:
        out.append("mlx")
    return out


def mlx_ready():
    from mlx_attn.backends.cpu import mlx_reasons
    reasons = mlx_reasons()
    if reasons:
        pytest.skip("MLX primitive unavailable: " + "; ".join(reasons))


def make(kind, dtype, x):
    """Array of `kind` and `dtype` from float32/bool numpy data."""
    if kind == "numpy":
        if dtype == "bfloat16":
            pytest.skip("numpy has no bfloat16")
        return x.astype(dtype)
    if kind == "torch":
        import torch
        return torch.from_numpy(np.ascontiguousarray(x)).to(getattr(torch, dtype))
    import mlx.core as mx
    mx.set_default_device(mx.cpu)
    return mx.array(x).astype(getattr(mx, "bool_" if dtype == "bool" else dtype))


def to64(x):
    """float64 numpy copy of any kind's array."""
    module = type(x).__module__
    if module.startswith("torch"):
        return x.detach().double().numpy()
    if module.startswith("mlx"):
        import mlx.core as mx
        return np.array(x.astype(mx.float32)).astype(np.float64)
    return np.asarray(x, np.float64)


def assert_close(got, ref, math_got, what="out"):
    """SPEC criterion: max|got - ref64| <= 2 max|math - ref64| + 1e-5 (with matching -inf)."""
    got, math_got = to64(got), to64(math_got)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    inf = np.isneginf(ref)
    assert np.array_equal(np.isneginf(got), inf), f"{what}: -inf positions differ"
    fin = ~inf
    if not fin.any():
        return
    err = np.max(np.abs(got[fin] - ref[fin]))
    err_math = np.max(np.abs(math_got[fin] - ref[fin]))
    assert err <= 2 * err_math + 1e-5, f"{what}: error {err:.3g} vs math {err_math:.3g}"


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)
