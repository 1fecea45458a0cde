"""Running the real CUDA attention kernels under the emulator and checking them with the SPEC
criterion: the float64 reference is the oracle, the math backend in the same dtype (torch on
the CPU) the baseline (tests/contract/tolerance.py)."""
from __future__ import annotations

import numpy as np
import torch

from contract.tolerance import assert_fused, assert_lse
from cuda_emulator import attention
from mlx_attn import flash_attention
from mlx_attn.reference import reference, reference_grads, to_f64

INT32_MAX = 2 ** 31 - 1
TORCH = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class Problem:
    """Random inputs rounded to `dtype`: `dev` (what the emulator takes: float16, or bf16 bits
    as uint16), `f32` (their values) and `t` (torch tensors for the math baseline)."""

    def __init__(self, dtype, B, Hq, Hkv, Lq, Lk, D, Dv=None, seed=0, mask=None, **kw):
        rng = np.random.default_rng(seed)
        self.dtype = dtype
        shapes = [(B, Hq, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, Dv or D)]
        self.dev = [attention._as_dtype(rng.standard_normal(s).astype(np.float32), dtype) for s in shapes]
        self.kw = dict(kw)
        self.mask = mask
        self.rng = rng

    @property
    def f32(self):
        return [attention.to_float(x, self.dtype) for x in self.dev]

    def torch(self, x):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(TORCH[self.dtype])

    def mask_values(self):
        """The mask as the reference and the math backend see it."""
        m = self.mask
        if m is None or m.dtype == np.bool_:
            return m, None if m is None else torch.from_numpy(np.array(m))
        if m.dtype == np.uint16:  # bf16 bits
            f = attention.bf16_to_float(m)
            return f, torch.from_numpy(np.ascontiguousarray(f)).to(torch.bfloat16)
        return m.astype(np.float32), torch.from_numpy(np.array(m))

    def reference_kw(self):
        kw = dict(self.kw)
        kw["mask"] = self.mask_values()[0]
        return kw

    def math_kw(self):
        kw = dict(self.kw)
        kw["mask"] = self.mask_values()[1]
        return kw


def _same_nans(got, ref, math, what):
    """NaN where the reference has NaN (SPEC: NaN propagates), then those entries set to 0:
    reference.max_error counts NaN == NaN as a mismatch."""
    got, ref, math = (np.array(to_f64(x), dtype=np.float64) for x in (got, ref, math))
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=f"{what}: NaN pattern")
    for x in (got, ref, math):
        x[nan] = 0
    return got, ref, math


def check_forward(p: Problem, **run_kw):
    """Runs the forward kernels; asserts the SPEC criterion on out and lse; returns them."""
    out, lse = attention.forward(*p.dev, mask=p.mask, dtype=p.dtype, **p.kw, **run_kw)
    ref_out, ref_lse = reference(*p.f32, **p.reference_kw())
    m_out, m_lse = flash_attention(*(p.torch(x) for x in p.f32), backend="math", return_lse=True,
                                   **p.math_kw())
    assert_fused(*_same_nans(attention.to_float(out, p.dtype), ref_out, m_out.float(), "out"), "out",
                 dtype=p.dtype)
    assert_lse(*_same_nans(lse, ref_lse, m_lse, "lse"), "lse")
    return out, lse


def check_backward(p: Problem, with_dlse=False, **run_kw):
    """Forward then backward kernels; asserts the SPEC criterion on dq, dk, dv; returns them."""
    out, lse = attention.forward(*p.dev, mask=p.mask, dtype=p.dtype, **p.kw)
    dout = attention._as_dtype(p.rng.standard_normal(out.shape).astype(np.float32), p.dtype)
    dout_f = attention.to_float(dout, p.dtype)
    dlse = p.rng.standard_normal(lse.shape).astype(np.float32) if with_dlse else None
    grads = attention.backward(*p.dev, out, lse, dout, dlse=dlse, mask=p.mask, dtype=p.dtype, **p.kw, **run_kw)
    ref = reference_grads(*p.f32, dout_f, dlse=dlse, **p.reference_kw())
    q, k, v = (p.torch(x).requires_grad_() for x in p.f32)
    m_out, m_lse = flash_attention(q, k, v, backend="math", return_lse=True, **p.math_kw())
    loss = (m_out.float() * torch.from_numpy(dout_f)).sum()
    if dlse is not None:
        loss = loss + (torch.where(torch.isfinite(m_lse), m_lse, 0) * torch.from_numpy(dlse)).sum()
    math = torch.autograd.grad(loss, (q, k, v))
    for name, g, r, m in zip(("dq", "dk", "dv"), grads, ref, math):
        assert_fused(*_same_nans(attention.to_float(g, p.dtype), r, m.float(), name), name, dtype=p.dtype)
    return grads
