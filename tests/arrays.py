"""Shared test helpers: random inputs as any array kind, and per-dtype tolerances.

Tolerances compare against the float64 reference evaluated on the *rounded* inputs, so they
only need to cover the computation and the final rounding of the output.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

HAVE = {kind: importlib.util.find_spec(kind) is not None for kind in ("mlx", "torch")}
HAVE["numpy"] = True

# every (array kind, dtype) the front end takes; numpy has no bfloat16
KIND_DTYPES = [("numpy", "float32"), ("numpy", "float16"), ("numpy", "float64"),
               ("torch", "float32"), ("torch", "float16"), ("torch", "bfloat16"),
               ("torch", "float64"),
               ("mlx", "float32"), ("mlx", "float16"), ("mlx", "bfloat16")]

# unit roundoff of each dtype: an output rounded once is off by at most this, relatively
UNIT = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11,
        "bfloat16": 2.0 ** -8}


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


def out_tolerance(dtype: str, ref: np.ndarray) -> float:
    """What the math path may be off from float64 by: SPEC's 1e-4 for fp32; two roundings of
    the largest output for fp16/bf16; tight for fp64."""
    big = max(1.0, float(np.abs(ref).max(initial=0.0)))
    if dtype == "float32":
        return 1e-4
    if dtype == "float64":
        return 1e-10 * big
    return 2 * UNIT[dtype] * big + 1e-5


def lse_tolerance(ref_lse: np.ndarray) -> float:
    """lse is float32 for every input dtype, computed in float32."""
    finite = ref_lse[np.isfinite(ref_lse)]
    return 1e-5 * max(1.0, float(np.abs(finite).max(initial=0.0)))
