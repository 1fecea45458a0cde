"""Fused varlen kernels under the emulator, checked with the SPEC criterion per sequence: the
float64 reference (reference_varlen, one sequence at a time) is the oracle, the math backend's
flash_attention_varlen in the same dtype (torch on the CPU) the baseline."""
from __future__ import annotations

import numpy as np
import torch

from contract.tolerance import assert_fused, assert_lse
from cuda_emu_cases import TORCH, _same_nans
from cuda_emulator import attention, varlen
from mlx_attn import flash_attention_varlen
from mlx_attn.reference import reference_grads, reference_varlen


def cu_seqlens(lengths) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


class VarlenProblem:
    """Random packed inputs rounded to `dtype` for sequences of query lengths `lq` and key
    lengths `lk`: `dev` (what the emulator takes), `f32` (their values), `t` (torch tensors)."""

    def __init__(self, dtype, lq, lk, Hq, Hkv, D, Dv=None, seed=0, **kw):
        rng = np.random.default_rng(seed)
        self.dtype, self.kw, self.rng = dtype, dict(kw), rng
        self.cu_q, self.cu_k = cu_seqlens(lq), cu_seqlens(lk)
        self.max_q, self.max_k = max(lq, default=0), max(lk, default=0)
        shapes = [(self.cu_q[-1], Hq, D), (self.cu_k[-1], Hkv, D), (self.cu_k[-1], Hkv, Dv or D)]
        self.dev = [attention._as_dtype(rng.standard_normal(s).astype(np.float32), dtype)
                    for s in shapes]

    @property
    def f32(self):
        return [attention.to_float(x, self.dtype) for x in self.dev]

    @property
    def seqlens(self):
        return self.cu_q, self.cu_k, self.max_q, self.max_k

    def torch(self, x):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(TORCH[self.dtype])

    def run(self, **run_kw):
        return varlen.forward_varlen(*self.dev, *self.seqlens, dtype=self.dtype, **self.kw,
                                     **run_kw)

    def math(self):
        cu = [torch.from_numpy(c) for c in (self.cu_q, self.cu_k)]
        return flash_attention_varlen(*(self.torch(x) for x in self.f32), *cu, self.max_q,
                                      self.max_k, backend="math", return_lse=True, **self.kw)


def check_forward_varlen(p: VarlenProblem, **run_kw):
    """One fused launch; asserts the SPEC criterion on out and lse; returns them."""
    out, lse = p.run(**run_kw)
    ref_out, ref_lse = reference_varlen(*p.f32, p.cu_q, p.cu_k, **p.kw)
    m_out, m_lse = p.math()
    assert_fused(*_same_nans(attention.to_float(out, p.dtype), ref_out, m_out.float(), "out"),
                 "out", dtype=p.dtype)
    assert_lse(*_same_nans(lse, ref_lse, m_lse, "lse"), "lse")
    return out, lse


def check_backward_varlen(p: VarlenProblem, with_dlse=False, **run_kw):
    """Fused forward then backward; asserts the SPEC criterion on dq, dk, dv per sequence."""
    out, lse = p.run()
    dout = attention._as_dtype(p.rng.standard_normal(out.shape).astype(np.float32), p.dtype)
    dout_f = attention.to_float(dout, p.dtype)
    dlse = p.rng.standard_normal(lse.shape).astype(np.float32) if with_dlse else None
    grads = varlen.backward_varlen(*p.dev, out, lse, dout, *p.seqlens, dlse=dlse, dtype=p.dtype,
                                   **p.kw, **run_kw)
    ref = [np.zeros(x.shape) for x in p.dev]
    for s in range(len(p.cu_q) - 1):
        (q0, q1), (k0, k1) = p.cu_q[s:s + 2], p.cu_k[s:s + 2]
        if q1 == q0 or k1 == k0:
            continue
        part = [x[a:b].swapaxes(0, 1)[None] for x, a, b in
                zip(p.f32 + [dout_f], (q0, k0, k0, q0), (q1, k1, k1, q1))]
        g = reference_grads(*part, dlse=None if dlse is None else dlse[None, :, q0:q1], **p.kw)
        for r, gi, a, b in zip(ref, g, (q0, k0, k0), (q1, k1, k1)):
            r[a:b] = gi[0].swapaxes(0, 1)
    q, k, v = (p.torch(x).requires_grad_() for x in p.f32)
    cu = [torch.from_numpy(c) for c in (p.cu_q, p.cu_k)]
    m_out, m_lse = flash_attention_varlen(q, k, v, *cu, p.max_q, p.max_k, backend="math",
                                          return_lse=True, **p.kw)
    loss = (m_out.float() * torch.from_numpy(dout_f)).sum()
    if dlse is not None:
        loss = loss + (torch.where(torch.isfinite(m_lse), m_lse, 0) * torch.from_numpy(dlse)).sum()
    math = torch.autograd.grad(loss, (q, k, v))
    for name, g, r, m in zip(("dq", "dk", "dv"), grads, ref, math):
        assert_fused(*_same_nans(attention.to_float(g, p.dtype), r, m.float(), name), name,
                     dtype=p.dtype)
    return grads
