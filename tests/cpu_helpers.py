"""Shared helpers of the cpu backend tests: arrays per kind, and the SPEC pass criterion applied
with mlx_attn.reference (float64) against the math backend's error in the same dtype."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from mlx_attn import flash_attention
from contract.tolerance import assert_fused
from mlx_attn.reference import reference, to_f64

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_MLX = importlib.util.find_spec("mlx") is not None


def run_child(code: str, **env: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter, with `env` added to the environment. The child must import
    the same mlx_attn as this process (installed, or the source tree with its in-place build),
    so that one goes first on the path and the child runs outside the source tree."""
    import mlx_attn
    home = os.path.dirname(os.path.dirname(os.path.abspath(mlx_attn.__file__)))
    env = dict(os.environ, **env, PYTHONPATH=home + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tempfile.gettempdir())


def native_or_skip():
    from mlx_attn.backends.cpu.status import kernel_reasons, native
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
    from mlx_attn.backends.cpu.status import mlx_reasons
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
    """SPEC criterion: max|got - ref64| <= 2 max|math - ref64| + 1e-5 (non-finite must match);
    the one definition is tests/contract/tolerance.py."""
    return assert_fused(got, ref, math_got, what)


def run_both(q, k, v, **kw):
    """(out, lse) of the cpu backend and of the math backend on the same inputs."""
    got = flash_attention(q, k, v, backend="cpu", return_lse=True, **kw)
    ref_math = flash_attention(q, k, v, backend="math", return_lse=True, **kw)
    return got, ref_math


def check_dense(kind, dtype, shape, seed=0, layout="bhld", **kw):
    """cpu backend vs the float64 reference on random inputs of `shape` = (B, Hq, Hkv, Lq, Lk,
    D, Dv), by the SPEC criterion against the math backend, for out and lse."""
    B, Hq, Hkv, Lq, Lk, D, Dv = shape
    rng = np.random.default_rng(seed)
    qn, kn, vn = rand(rng, B, Hq, Lq, D), rand(rng, B, Hkv, Lk, D), rand(rng, B, Hkv, Lk, Dv)
    q, k, v = (make(kind, dtype, x) for x in (qn, kn, vn))
    if kw.get("mask") is not None:
        mask = kw["mask"]
        kw["mask"] = make(kind, "bool" if mask.dtype == np.bool_ else dtype, mask)
    ref_out, ref_lse = reference(q, k, v, **kw)
    if layout == "blhd":
        q, k, v = swap12(q), swap12(k), swap12(v)
    (out, lse), (mout, mlse) = run_both(q, k, v, layout=layout, **kw)
    assert type(out) is type(q) and str(out.dtype) == str(q.dtype)
    assert str(lse.dtype).endswith("float32")
    if layout == "blhd":
        out, mout = swap12(out), swap12(mout)
    assert_close(out, ref_out, mout, "out")
    assert_close(lse, ref_lse, mlse, "lse")


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


__all__ = ["HAVE_MLX", "HAVE_TORCH", "assert_close", "check_dense", "kinds", "make", "mlx_ready",
           "native_or_skip", "rand", "run_both", "swap12", "to_f64"]
