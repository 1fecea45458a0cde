"""Shared test helpers: random inputs as any array kind. The per-dtype tolerances are declared
once, in tests/contract/tolerance.py (re-exported here for the math tests)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from contract.tolerance import UNIT, lse_tolerance, out_tolerance  # noqa: F401 (re-exported)

HAVE = {kind: importlib.util.find_spec(kind) is not None for kind in ("mlx", "torch")}
HAVE["numpy"] = True

# every (array kind, dtype) the front end takes; numpy has no bfloat16
KIND_DTYPES = [("numpy", "float32"), ("numpy", "float16"), ("numpy", "float64"),
               ("torch", "float32"), ("torch", "float16"), ("torch", "bfloat16"),
               ("torch", "float64"),
               ("mlx", "float32"), ("mlx", "float16"), ("mlx", "bfloat16")]

def need(kind: str) -> None:
    if not HAVE[kind]:
        pytest.skip(f"{kind} is not installed")


def kind_params(pairs=KIND_DTYPES):
    """pytest params for (kind, dtype) with a skip mark when the framework is missing."""
    return [pytest.param(k, d, id=f"{k}-{d}",
                         marks=pytest.mark.skipif(not HAVE[k], reason=f"{k} is not installed"))
            for k, d in pairs]


def convert(x: np.ndarray, kind: str, dtype: str | None = None):
    """A host array as `kind` (on the CPU), cast to `dtype` (bool stays bool)."""
    if dtype is None:
        dtype = "bool" if x.dtype == np.bool_ else str(x.dtype)
    if kind == "numpy":
        return x.astype(dtype)
    if kind == "torch":
        import torch
        return torch.from_numpy(np.ascontiguousarray(x)).to(getattr(torch, dtype))
    import mlx.core as mx
    return mx.array(x).astype(getattr(mx, "bool_" if dtype == "bool" else dtype))


def randn(rng, shape, kind="numpy", dtype="float32"):
    return convert(rng.standard_normal(shape).astype(np.float32), kind, dtype)


def qkv(rng, B, Hq, Hkv, Lq, Lk, D, Dv=None, *, kind="numpy", dtype="float32",
        layout="bhld"):
    Dv = D if Dv is None else Dv
    shapes = [(B, Hq, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, Dv)]
    if layout == "blhd":
        shapes = [(s[0], s[2], s[1], s[3]) for s in shapes]
    return tuple(randn(rng, s, kind, dtype) for s in shapes)
