"""Shared helpers of the cpu backend tests: arrays per kind, and the SPEC pass criterion applied
with mlx_attn.reference (float64) against the math backend's error in the same dtype."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from mlx_attn.reference import max_error, passes, to_f64

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_MLX = importlib.util.find_spec("mlx") is not None


def native_or_skip():
    from mlx_attn.cpu.status import kernel_reasons, native
    reasons = kernel_reasons()
    if reasons:
        pytest.skip("; ".join(reasons))
    return native()


def kinds():
    out = ["numpy"]
    if HAVE_TORCH:
        out.append("torch")
    if HAVE_MLX:
        out.append("mlx")
    return out


def mlx_ready():
    from mlx_attn.cpu.status import mlx_reasons
    reasons = mlx_reasons()
    if reasons:
        pytest.skip("MLX primitive unavailable: " + "; ".join(reasons))
    import mlx.core as mx
    mx.set_default_device(mx.cpu)


def make(kind, dtype, x):
    """Array of `kind` and `dtype` from float32/bool/int numpy data."""
    if kind == "numpy":
        if dtype == "bfloat16":
            pytest.skip("numpy has no bfloat16")
        return x.astype(dtype)
    if kind == "torch":
        import torch
        return torch.from_numpy(np.ascontiguousarray(x)).to(getattr(torch, dtype))
    mlx_ready()
    import mlx.core as mx
    return mx.array(x).astype(getattr(mx, "bool_" if dtype == "bool" else dtype))


def swap12(x):
    """bhld <-> blhd view of any kind."""
    return x.transpose(1, 2) if type(x).__module__.startswith("torch") else x.swapaxes(1, 2)


def assert_close(got, ref, math_got, what="out"):
    """SPEC criterion: max|got - ref64| <= 2 max|math - ref64| + 1e-5 (non-finite must match)."""
    err = max_error(got, ref)
    err_math = max_error(math_got, ref)
    if err_math == float("inf"):
        # the math path itself is unusable here (NaN where the reference is finite): fall back
        # to 4 units of the output dtype's rounding relative to the largest reference value
        scale = 1.0 + float(np.abs(np.nan_to_num(np.asarray(ref), neginf=0)).max(initial=0))
        err_math = 2 * ULP.get(_dtype_name(got), 2.0 ** -23) * scale
    # SPEC: "fp32: <= 1e-4 absolute where the math path is exact to rounding" (our exp2-based
    # softmax differs from the math path's exp by a few ulp, amplified in fp32 gradients)
    fp32_ok = _dtype_name(got) == "float32" and err <= 1e-4
    assert fp32_ok or passes(err, err_math), \
        f"{what}: error {err:.3g} vs math path {err_math:.3g}"
    return err


ULP = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11, "float32": 2.0 ** -23}


def _dtype_name(x) -> str:
    return str(x.dtype).rsplit(".", 1)[-1]


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


__all__ = ["HAVE_MLX", "HAVE_TORCH", "assert_close", "kinds", "make", "mlx_ready",
           "native_or_skip", "rand", "swap12", "to_f64"]
