"""Running one contract case on one backend, and checking it against the float64 reference.

Inputs are float32 standard normals (seeded per case), cast to the case's array kind and dtype;
the reference is evaluated on the rounded inputs. The math backend's result on the same inputs
(the SPEC's baseline) and the reference are cached for the last few cases, so that running one
case on every backend computes them once.
"""
from __future__ import annotations

import collections
import importlib.util

import numpy as np
import pytest

from mlx_attn import flash_attention, flash_attention_varlen
from mlx_attn.reference import reference, reference_grads, reference_varlen, to_f64

from .cases import MASK_SHAPES, Case
from .tolerance import assert_fused, assert_math, dtype_name

HAVE = {k: importlib.util.find_spec(k) is not None for k in ("mlx", "torch")}
HAVE["numpy"] = True


def cuda_visible() -> bool:
    if not HAVE["torch"]:
        return False
    import torch
    return torch.cuda.is_available()


def array_kinds() -> list[str]:
    """Array kinds present here: numpy, torch (CPU), mlx (CPU device), torch_cuda."""
    kinds = [k for k in ("numpy", "torch", "mlx") if HAVE[k]]
    return kinds + (["torch_cuda"] if cuda_visible() else [])


def make(kind: str, dtype: str, x: np.ndarray, grad: bool = False):
    """`x` (float32, bool or int32 host data) as an array of `kind`, cast to `dtype`."""
    if kind == "numpy":
        return x.astype(dtype)
    if kind.startswith("torch"):
        import torch
        t = torch.from_numpy(np.ascontiguousarray(x)).to(getattr(torch, dtype))
        if kind == "torch_cuda":
            t = t.cuda()
        return t.requires_grad_() if grad else t
    import mlx.core as mx
    return mx.array(x).astype(getattr(mx, "bool_" if dtype == "bool" else dtype))


def swap12(x):
    """bhld <-> blhd view of any kind."""
    return x.transpose(1, 2) if type(x).__module__.startswith("torch") else x.swapaxes(1, 2)


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _mask(case: Case, rng):
    kind, shape_name, seed = case.mask
    B, Hq, _, Lq, Lk, _, _ = case.shape
    shape = MASK_SHAPES[shape_name](B, Hq, Lq, Lk)
    rng = np.random.default_rng(seed)
    if kind == "bool":
        mask = rng.random(shape) > 0.3
        if len(shape) >= 2 and shape[-2] == Lq:
            mask[..., 0, :] = False  # a fully removed row: zeros and lse -inf
        return mask
    mask = (rng.standard_normal(shape) * 2).astype(np.float32)
    mask[rng.random(shape) < 0.2] = -np.inf
    return mask


# -- inputs and expected values ----------------------------------------------------------------
class Dense:
    """Inputs of a dense case (in the case's layout) and its float64 reference."""

    def __init__(self, case: Case, kind: str, dtype: str):
        B, Hq, Hkv, Lq, Lk, D, Dv = case.shape
        rng = np.random.default_rng(case.seed)
        host = [_rand(rng, B, Hq, Lq, D), _rand(rng, B, Hkv, Lk, D), _rand(rng, B, Hkv, Lk, Dv)]
        self.kw, self.lse = case.kw, case.lse
        if case.mask is not None:
            m = _mask(case, rng)
            self.kw["mask"] = make(kind, "bool" if m.dtype == np.bool_ else dtype, m)
        q, k, v = (make(kind, dtype, x) for x in host)
        if case.grad:
            self.dout = _rand(rng, B, Hq, Lq, Dv)
            self.dlse = _rand(rng, B, Hq, Lq) if case.lse else None
            self.ref = reference_grads(q, k, v, self.dout, dlse=self.dlse, **self.kw)
        else:
            self.ref = reference(q, k, v, **self.kw)
        if case.layout == "blhd":
            q, k, v = swap12(q), swap12(k), swap12(v)
            if case.grad:
                self.dout = self.dout.swapaxes(1, 2)
                self.ref = tuple(x.swapaxes(1, 2) for x in self.ref)
            else:
                self.ref = (self.ref[0].swapaxes(1, 2), self.ref[1])
        self.q, self.k, self.v = q, k, v
        self.kind, self.layout = kind, case.layout

    def forward(self, backend):
        got = flash_attention(self.q, self.k, self.v, backend=backend, return_lse=self.lse,
                              layout=self.layout, **self.kw)
        return got if self.lse else (got, None)

    def grads(self, backend):
        """dq, dk, dv of sum(out * dout) (+ sum(lse * dlse), lse's -inf rows counting as 0)."""
        q, k, v = self.q, self.k, self.v
        kw = dict(self.kw, layout=self.layout, return_lse=self.lse, backend=backend)
        if self.kind.startswith("torch"):
            import torch
            go = torch.from_numpy(self.dout).to(q.device)
            q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
            out = flash_attention(q, k, v, **kw)
            if not self.lse:
                return torch.autograd.grad((out.float() * go).sum(), (q, k, v))
            out, lse = out
            lse = torch.where(torch.isfinite(lse), lse, 0)
            gl = torch.from_numpy(self.dlse).to(q.device)
            loss = (out.float() * go).sum() + (lse * gl).sum()
            return torch.autograd.grad(loss, (q, k, v))
        import mlx.core as mx
        go = mx.array(self.dout)

        def f(q, k, v):
            out = flash_attention(q, k, v, **kw)
            if not self.lse:
                return (out.astype(mx.float32) * go).sum()
            out, lse = out
            lse = mx.where(mx.isinf(lse), 0, lse)
            return (out.astype(mx.float32) * go).sum() + (lse * mx.array(self.dlse)).sum()
        return mx.grad(f, argnums=(0, 1, 2))(q, k, v)


class Varlen:
    """Inputs of a packed case and its float64 reference (gradients: one sequence at a time)."""

    def __init__(self, case: Case, kind: str, dtype: str):
        lens_q, lens_k, Hq, Hkv, D, Dv = case.varlen
        rng = np.random.default_rng(case.seed)
        cu_q = np.cumsum([0, *lens_q]).astype(np.int32)
        cu_k = np.cumsum([0, *lens_k]).astype(np.int32)
        host = [_rand(rng, cu_q[-1], Hq, D), _rand(rng, cu_k[-1], Hkv, D),
                _rand(rng, cu_k[-1], Hkv, Dv)]
        self.q, self.k, self.v = (make(kind, dtype, x) for x in host)
        self.cu = (make(kind, "int32", cu_q), make(kind, "int32", cu_k))
        self.max = (max(lens_q), max(lens_k))
        self.kw, self.kind = case.kw, kind
        if not case.grad:
            self.ref = reference_varlen(self.q, self.k, self.v, cu_q, cu_k, **self.kw)
            return
        self.dout = _rand(rng, cu_q[-1], Hq, Dv)
        x64 = [to_f64(x) for x in (self.q, self.k, self.v)]
        self.ref = [np.zeros(x.shape) for x in x64]
        for s in range(len(lens_q)):
            rows = [(cu_q[s], cu_q[s + 1]), (cu_k[s], cu_k[s + 1]), (cu_k[s], cu_k[s + 1])]
            part = [x[a:b].swapaxes(0, 1)[None] for x, (a, b) in zip(x64, rows)]
            part.append(self.dout[cu_q[s]:cu_q[s + 1]].swapaxes(0, 1)[None])
            for r, g, (a, b) in zip(self.ref, reference_grads(*part, **self.kw), rows):
                r[a:b] = g[0].swapaxes(0, 1)

    def _call(self, backend, q, k, v, **extra):
        return flash_attention_varlen(q, k, v, *self.cu, *self.max, backend=backend,
                                      **self.kw, **extra)

    def forward(self, backend):
        return self._call(backend, self.q, self.k, self.v, return_lse=True)

    def grads(self, backend):
        if self.kind.startswith("torch"):
            import torch
            go = torch.from_numpy(self.dout).to(self.q.device)
            q, k, v = (x.detach().requires_grad_() for x in (self.q, self.k, self.v))
            return torch.autograd.grad((self._call(backend, q, k, v).float() * go).sum(),
                                       (q, k, v))
        import mlx.core as mx
        go = mx.array(self.dout)
        return mx.grad(lambda q, k, v: (self._call(backend, q, k, v).astype(mx.float32)
                                        * go).sum(), argnums=(0, 1, 2))(self.q, self.k, self.v)


# the last few cases' inputs, reference and math-backend results, shared by the backends
_CACHE: collections.OrderedDict = collections.OrderedDict()


def prepared(case: Case, kind: str, dtype: str):
    key = (case, kind, dtype)
    if key not in _CACHE:
        data = (Varlen if case.varlen else Dense)(case, kind, dtype)
        data.math = data.grads("math") if case.grad else data.forward("math")
        _CACHE[key] = data
        while len(_CACHE) > 4:
            _CACHE.popitem(last=False)
    return _CACHE[key]


def placeholder_call(case: Case, kind: str, dtype: str):
    """The AttentionCall of the case (on zeros, in bhld), for backends' not_supported_reasons."""
    from mlx_attn.validate import check_dense, check_varlen
    grad = case.grad and kind.startswith("torch")
    if case.varlen:
        lens_q, lens_k, Hq, Hkv, D, Dv = case.varlen
        tq, tk = sum(lens_q), sum(lens_k)
        z = [make(kind, dtype, np.zeros(s, np.float32), grad)
             for s in ((tq, Hq, D), (tk, Hkv, D), (tk, Hkv, Dv))]
        cu = [make(kind, "int32", np.cumsum([0, *n]).astype(np.int32)) for n in (lens_q, lens_k)]
        return check_varlen(*z, *cu, max(lens_q), max(lens_k), return_lse=case.lse,
                            scale=case.kw.get("scale"), causal=case.kw.get("causal", False),
                            window=case.kw.get("window"), softcap=case.kw.get("softcap"))
    B, Hq, Hkv, Lq, Lk, D, Dv = case.shape
    z = [make(kind, dtype, np.zeros(s, np.float32), grad)
         for s in ((B, Hq, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, Dv))]
    kw = dict(scale=None, causal=False, mask=None, window=None, softcap=None)
    kw.update(case.kw)
    if case.mask is not None:
        m = _mask(case, None)
        kw["mask"] = make(kind, "bool" if m.dtype == np.bool_ else dtype, m)
    return check_dense(*z, return_lse=case.lse, layout="bhld", **kw)


def run(backend: str, case: Case, kind: str, dtype: str):
    """Run `case` on `backend`; assert the SPEC criterion for out and lse, or dq, dk, dv."""
    data = prepared(case, kind, dtype)
    if case.grad:
        got = data.math if backend == "math" else data.grads(backend)
        inputs = (data.q, data.k, data.v)
        for name, g, r, m, x in zip("qkv", got, data.ref, data.math, inputs):
            assert tuple(g.shape) == r.shape and dtype_name(g) == dtype_name(x), f"d{name}"
            if backend == "math":
                assert_math(g, r, dtype, "d" + name, grad=True)
            else:
                assert_fused(g, r, m, "d" + name)
        return
    out, lse = data.math if backend == "math" else data.forward(backend)
    assert type(out) is type(data.q) and dtype_name(out) == dtype, "output kind or dtype"
    assert lse is None or dtype_name(lse) == "float32", "lse dtype"
    if kind == "torch_cuda":
        assert out.device == data.q.device
    (ref_out, ref_lse), (math_out, math_lse) = data.ref, data.math
    if backend == "math":
        assert_math(out, ref_out, dtype, "out")
        if lse is not None:
            assert_math(lse, ref_lse, dtype, "lse")
    else:
        assert_fused(out, ref_out, math_out, "out")
        if lse is not None:
            assert_fused(lse, ref_lse, math_lse, "lse")


def skip_unless_supported(backend, case, kind, dtype):
    reasons = backend.not_supported_reasons(placeholder_call(case, kind, dtype))
    if reasons:
        pytest.skip(f"{backend.name}: " + "; ".join(reasons))
