"""The `metal` backend on torch tensors (the torch launcher, torch.mps.compile_shader): the test
matrix and checks, shared by the emulated run on Linux (test_metal_torch_emulated.py, torch CPU
tensors under MLX_ATTN_METAL_EMULATE=1) and the run on an Apple GPU (test_metal_torch_mps.py).

This module defines no tests. Every check compares the metal backend with the float64 SPEC
reference (mlx_attn.reference) by the SPEC criterion of tests/contract/tolerance.py: at most 2x
the same-dtype math path's error + 1e-5 (fp32: or within 1e-4). Gradients come from
torch.autograd through the backend's autograd.Function and are checked the same way against
mlx_attn.reference.reference_grads and the math path's autograd.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from arrays import convert
from contract.tolerance import assert_lse, fused_ok
from mlx_attn import flash_attention, flash_attention_varlen
from mlx_attn.reference import max_error, reference, reference_grads, reference_varlen


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple            # B, Hq, Hkv, Lq, Lk, D, Dv
    dtype: str = "float16"
    layout: str = "bhld"
    opts: dict = field(default_factory=dict)
    mask: str | None = None  # bool | additive | head_bias
    grad: bool = True
    lse_grad: bool = False   # also back-propagate through lse

    def __repr__(self):
        return self.name


# Odd L (1, 7, 33, 113) and a tile multiple (64: two 32-row query blocks, two key tiles); Lq <= 8
# runs the decode kernels (split-K + merge), longer queries the prefill kernels.
DENSE = [
    Case("prefill_gqa_causal_blhd", (1, 4, 2, 113, 113, 64, 64), layout="blhd",
         opts=dict(causal=True)),
    Case("decode1", (2, 2, 1, 1, 113, 64, 64), grad=False),
    Case("decode7_bool_mask", (1, 4, 2, 7, 33, 64, 64), mask="bool", opts=dict(causal=True)),
    Case("f32_additive_window_softcap", (1, 2, 1, 33, 47, 72, 72), "float32", mask="additive",
         opts=dict(window=(8, 2), softcap=5.0)),
    Case("f32_block_multiple_causal", (1, 2, 2, 64, 64, 64, 64), "float32",
         opts=dict(causal=True), lse_grad=True),
    Case("bf16_head_bias", (1, 2, 1, 33, 33, 64, 64), "bfloat16", mask="head_bias", grad=False),
]

# wider: under the slow marker in the emulated run
WIDE = [
    Case("f16_L128_d128", (1, 4, 1, 128, 128, 128, 128), opts=dict(causal=True)),
    Case("f32_L128_window", (2, 2, 2, 128, 128, 64, 64), "float32", layout="blhd",
         opts=dict(window=(16, 16))),
    Case("f16_dv_differs_decode", (1, 2, 1, 7, 40, 128, 64), "float16", mask="additive"),
    Case("f16_d256", (1, 1, 1, 33, 33, 256, 256), opts=dict(causal=True), grad=False),
    Case("f32_d256_decode1", (1, 2, 1, 1, 70, 256, 256), "float32"),
    Case("bf16_gqa_softcap", (1, 4, 2, 113, 60, 96, 96), "bfloat16",
         opts=dict(softcap=3.0, causal=True)),
]

# (lens_q, lens_k, Hq, Hkv, D, dtype, options)
VARLEN = {
    "varlen_causal_gqa": ([5, 0, 33, 17], [7, 3, 33, 40], 4, 2, 64, "float16",
                          dict(causal=True)),
    "varlen_decode_f32": ([1, 1, 1], [10, 50, 0], 2, 1, 64, "float32", dict(softcap=4.0)),
}


def _t(x, dtype, device):
    return convert(x, "torch", dtype).to(device)


def _mask(rng, case, device):
    B, Hq, _, Lq, Lk, _, _ = case.shape
    if case.mask == "bool":
        return _t(rng.random((B, 1, Lq, Lk)) < 0.7, "bool", device)
    if case.mask == "additive":
        m = rng.standard_normal((B, Hq, Lq, Lk)).astype(np.float32)
        m[rng.random(m.shape) < 0.1] = -np.inf
        return _t(m, "float32", device)
    if case.mask == "head_bias":              # broadcast over B and Lq
        return _t(rng.standard_normal((1, Hq, 1, Lk)).astype(np.float32), case.dtype, device)
    return None


def inputs(case, device, seed=0):
    rng = np.random.default_rng(seed)
    B, Hq, Hkv, Lq, Lk, D, Dv = case.shape
    shapes = [(B, Hq, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, Dv), (B, Hq, Lq, Dv)]
    if case.layout == "blhd":
        shapes = [(s[0], s[2], s[1], s[3]) for s in shapes]
    q, k, v, dout = (_t(rng.standard_normal(s).astype(np.float32), case.dtype, device)
                     for s in shapes)
    opts = dict(case.opts)
    mask = _mask(rng, case, device)
    if mask is not None:
        opts["mask"] = mask
    dlse = _t(rng.standard_normal((B, Hq, Lq)).astype(np.float32), "float32", device)
    return q, k, v, dout, dlse, opts


def _cpu(opts):
    return {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in opts.items()}


def check_forward(case, device):
    q, k, v, _, _, opts = inputs(case, device)
    out, lse = flash_attention(q, k, v, layout=case.layout, return_lse=True, backend="metal",
                               **opts)
    assert out.device == q.device and out.dtype == q.dtype
    cq, ck, cv, copts = q.cpu(), k.cpu(), v.cpu(), _cpu(opts)
    base, base_lse = flash_attention(cq, ck, cv, layout=case.layout, return_lse=True,
                                     backend="math", **copts)
    want, want_lse = reference(cq, ck, cv, layout=case.layout, **copts)
    out, lse = out.cpu(), lse.cpu()
    assert tuple(out.shape) == want.shape
    err, berr = max_error(out, want), max_error(base, want)
    assert fused_ok(err, berr, case.dtype), f"out error {err:.3g} vs math {berr:.3g}"
    assert_lse(lse, want_lse, base_lse)
    return out, lse


def _grads(case, backend, q, k, v, dout, dlse, opts):
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out, lse = flash_attention(q, k, v, layout=case.layout, return_lse=True, backend=backend,
                               **opts)
    loss = (out.float() * dout.float()).sum()
    if case.lse_grad:
        loss = loss + (lse * dlse).sum()
    return torch.autograd.grad(loss, (q, k, v)), out


def check_grad(case, device):
    q, k, v, dout, dlse, opts = inputs(case, device)
    grads, out = _grads(case, "metal", q, k, v, dout, dlse, opts)
    assert out.grad_fn is not None, "no autograd graph: the backend's Function was not used"
    cpu = [x.cpu() for x in (q, k, v, dout, dlse)]
    base, _ = _grads(case, "math", *cpu, _cpu(opts))
    want = reference_grads(*cpu[:4], layout=case.layout, dlse=cpu[4] if case.lse_grad else None,
                           **_cpu(opts))
    for name, g, b, w, x in zip("qkv", grads, base, want, (q, k, v)):
        assert g.dtype == x.dtype and g.shape == x.shape and g.device == x.device
        g = g.cpu()
        assert torch.isfinite(g.float()).all(), f"d{name}: non-finite gradient"
        err, berr = max_error(g, w), max_error(b, w)
        assert fused_ok(err, berr, case.dtype), f"d{name} error {err:.3g} vs math {berr:.3g}"
    return grads


def varlen_inputs(name, device, seed=0):
    lens_q, lens_k, Hq, Hkv, D, dtype, opts = VARLEN[name]
    rng = np.random.default_rng(seed)
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    q, k, v, dout = (_t(rng.standard_normal((n, h, D)).astype(np.float32), dtype, device)
                     for n, h in ((cu_q[-1], Hq), (cu_k[-1], Hkv), (cu_k[-1], Hkv),
                                  (cu_q[-1], Hq)))
    return (q, k, v, _t(cu_q, "int32", device), _t(cu_k, "int32", device), max(lens_q),
            max(lens_k), dout, dtype, opts)


def check_varlen(name, device):
    q, k, v, cu_q, cu_k, mq, mk, dout, dtype, opts = varlen_inputs(name, device)

    def run(backend, *xs):
        return flash_attention_varlen(*xs, mq, mk, return_lse=True, backend=backend, **opts)

    cpu = [x.cpu() for x in (q, k, v, cu_q, cu_k, dout)]
    out, lse = run("metal", q, k, v, cu_q, cu_k)
    base, base_lse = run("math", *cpu[:5])
    want, want_lse = reference_varlen(*cpu[:5], **opts)
    out, lse = out.cpu(), lse.cpu()
    assert tuple(out.shape) == want.shape and tuple(lse.shape) == want_lse.shape
    err, berr = max_error(out, want), max_error(base, want)
    assert fused_ok(err, berr, dtype), f"out error {err:.3g} vs math {berr:.3g}"
    assert_lse(lse, want_lse, base_lse)

    def grads(backend, q, k, v, cu_q, cu_k, dout):
        q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
        o, _ = run(backend, q, k, v, cu_q, cu_k)
        return [g.cpu() for g in torch.autograd.grad((o.float() * dout.float()).sum(),
                                                     (q, k, v))]

    got, base = grads("metal", q, k, v, cu_q, cu_k, dout), grads("math", *cpu)
    cq, ck = cpu[3].tolist(), cpu[4].tolist()
    for s in range(len(cq) - 1):
        rows = [(cq[s], cq[s + 1]), (ck[s], ck[s + 1]), (ck[s], ck[s + 1])]
        if cq[s] == cq[s + 1] or ck[s] == ck[s + 1]:
            for g, (a, b) in zip(got, rows):      # nothing to attend: zero gradient
                assert torch.all(g[a:b] == 0)
            continue
        part = [x[a:b].transpose(0, 1)[None] for x, (a, b) in
                zip(cpu[:3] + [cpu[5]], rows + [(cq[s], cq[s + 1])])]
        want = reference_grads(*part, **opts)
        for nm, g, bg, w, (a, b) in zip("qkv", got, base, want, rows):
            err = max_error(g[a:b].transpose(0, 1)[None], w)
            berr = max_error(bg[a:b].transpose(0, 1)[None], w)
            assert fused_ok(err, berr, dtype), f"seq {s} d{nm}: {err:.3g} vs math {berr:.3g}"


def params(items):
    return [pytest.param(c, id=c.name) for c in items]
