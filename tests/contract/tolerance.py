"""Tolerances, declared once for every test: one unit-roundoff table and the SPEC criterion.

The float64 reference (mlx_attn.reference) is the only oracle. Two bounds are built on it:

- a fused backend (cpu, metal, cuda) passes when its error is at most 2x the error of the math
  backend in the same dtype on the same inputs, + 1e-5 (`mlx_attn.reference.passes`, as
  FlashAttention's own tests); fp32 may also be within 1e-4 absolute (SPEC: "where the math path
  is exact to rounding");
- the math backend itself (whose error is the baseline) passes when it is within a few
  roundings of the output dtype (`out_tolerance`, `lse_tolerance`).
"""
from __future__ import annotations

import numpy as np

from mlx_attn.reference import max_error, passes

# unit roundoff u = eps / 2 of each dtype: one rounding is off by at most u, relatively
UNIT = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11,
        "bfloat16": 2.0 ** -8}
# SPEC: fp32 may be within this absolute error where the math path is exact to rounding (our
# exp2-based kernels differ from the math path's exp by a few ulp, amplified in gradients)
FP32_ABSOLUTE = 1e-4
# lse is float32 for every input dtype, computed in float32
LSE_RELATIVE = 1e-5


def dtype_name(x) -> str:
    return str(x.dtype).rsplit(".", 1)[-1]


def _largest(ref) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.abs(ref[np.isfinite(ref)]).max(initial=0.0))


def out_tolerance(dtype: str, ref) -> float:
    """What the math path may be off from float64 by: SPEC's 1e-4 for fp32; two roundings of
    the largest output for fp16/bf16; tight for fp64."""
    big = max(1.0, _largest(ref))
    if dtype == "float32":
        return FP32_ABSOLUTE
    if dtype == "float64":
        return 1e-10 * big
    return 2 * UNIT[dtype] * big + 1e-5


def lse_tolerance(ref_lse) -> float:
    return LSE_RELATIVE * max(1.0, _largest(ref_lse))


def fused_ok(err: float, math_err: float, dtype: str) -> bool:
    """The SPEC criterion for a fused backend's error against the math path's."""
    return passes(err, math_err) or (dtype == "float32" and err <= FP32_ABSOLUTE)


def assert_fused(got, ref, math_got, what="out", dtype=None) -> float:
    """SPEC criterion: max|got - ref64| <= 2 max|math - ref64| + 1e-5 (non-finite must match).

    Where the math path itself is unusable (non-finite where the reference is finite), its
    error is replaced by two unit roundoffs of the output dtype relative to the largest
    reference value."""
    dtype = dtype or dtype_name(got)
    err, err_math = max_error(got, ref), max_error(math_got, ref)
    if err_math == float("inf"):
        err_math = 2 * UNIT.get(dtype, UNIT["float32"]) * (1.0 + _largest(ref))
    assert fused_ok(err, err_math, dtype), f"{what}: error {err:.3g} vs math path {err_math:.3g}"
    return err


def assert_lse(got, ref, math_got, what="lse") -> float:
    """lse of a fused backend: the SPEC criterion, or within float32 rounding of the reference."""
    err, err_math = max_error(got, ref), max_error(math_got, ref)
    assert passes(err, err_math) or err <= lse_tolerance(ref), \
        f"{what}: error {err:.3g} vs math path {err_math:.3g}"
    return err


def grad_tolerance(dtype: str, ref) -> float:
    """What the math path's gradients may be off from float64 by, relative to the largest
    gradient: float32 scores and softmax (2e-4), or GRAD_ROUNDINGS roundings of the dtype."""
    big = max(1.0, _largest(ref))
    if dtype == "float64":
        return 1e-9 * big
    return max(2e-4, GRAD_ROUNDINGS * UNIT[dtype]) * big


# fp16/bf16 gradients: the math path rounds q, k, v, p and dp to the input dtype
GRAD_ROUNDINGS = 16


def assert_math(got, ref, dtype, what="out", grad=False) -> float:
    """The math backend (the baseline itself) against the reference."""
    err = max_error(got, ref)
    if grad:
        tol = grad_tolerance(dtype, ref)
    else:
        tol = lse_tolerance(ref) if what.startswith("lse") else out_tolerance(dtype, ref)
    assert err <= tol, f"{what}: math backend error {err:.3g} > {tol:.3g}"
    return err
