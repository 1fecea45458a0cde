"""Hypothesis-generated calls to the `cpu` backend: any sizes (including 0 and head dims that are
not a multiple of the vector width), GQA, layouts, masks, windows, softcap, scale, dtypes and
array kinds; forward against mlx_attn.reference and gradients against reference_grads, each with
the SPEC criterion relative to the math backend on the same inputs.

Derandomized so that CI runs are reproducible.
"""
from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

from cpu_helpers import HAVE_TORCH, assert_close, kinds, make, native_or_skip, swap12  # noqa: E402
from mlx_attn import flash_attention  # noqa: E402
from mlx_attn.reference import reference, reference_grads  # noqa: E402

pytestmark = pytest.mark.usefixtures("native")
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, print_blob=True)


@pytest.fixture(scope="module")
def native():
    return native_or_skip()


@st.composite
def feature_kwargs(draw, max_side=40, min_softcap=0.5, scale=True):
    """causal, window, softcap (and scale) keywords, each drawn on or off."""
    kw = {}
    if draw(st.booleans()):
        kw["causal"] = True
    if draw(st.booleans()):
        kw["window"] = (draw(st.integers(-1, max_side)), draw(st.integers(-1, max_side)))
    if draw(st.booleans()):
        kw["softcap"] = draw(st.floats(min_softcap, 30.0))
    if scale and draw(st.booleans()):
        kw["scale"] = draw(st.floats(0.01, 2.0))
    return kw


@st.composite
def problems(draw, kinds_=None, dtypes=("float32", "float16", "bfloat16"), max_len=90,
             decode=False):
    """decode=True: at most 8 query rows per kv head (Lq <= 8 times the GQA group), the rows the
    decode kernel takes, against up to 4 * max_len keys."""
    kind = draw(st.sampled_from(kinds_ or kinds()))
    dtype = draw(st.sampled_from([d for d in dtypes if not (kind == "numpy" and d == "bfloat16")]))
    B = draw(st.integers(1, 2))
    Hkv = draw(st.integers(1, 3))
    if decode:
        Lq = draw(st.integers(1, 8))
        Hq = Hkv * draw(st.integers(1, 8 // Lq))
        Lk = draw(st.integers(0, 4 * max_len))
    else:
        Hq = Hkv * draw(st.integers(1, 4))
        Lq = draw(st.integers(0, max_len))
        Lk = draw(st.integers(0, max_len))
    D = draw(st.sampled_from([1, 8, 17, 40, 64, 72, 96, 128]))
    Dv = draw(st.sampled_from([D, 24, 33]))
    kw = draw(feature_kwargs())
    mask = draw(st.sampled_from([None, "bool", "additive"]))
    layout = draw(st.sampled_from(["bhld", "blhd"]))
    seed = draw(st.integers(0, 2 ** 16))
    return kind, dtype, (B, Hq, Hkv, Lq, Lk, D, Dv), kw, mask, layout, seed


def build(kind, dtype, shape, kw, mask, seed):
    B, Hq, Hkv, Lq, Lk, D, Dv = shape
    rng = np.random.default_rng(seed)
    data = [rng.standard_normal(s).astype(np.float32)
            for s in ((B, Hq, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, Dv))]
    q, k, v = (make(kind, dtype, x) for x in data)
    if mask is not None:
        # a random broadcastable shape: each of (B, Hq, Lq, Lk) kept or set to 1
        mshape = tuple(n if rng.random() < 0.6 else 1 for n in (B, Hq, Lq, Lk))
        if mask == "bool":
            m = rng.random(mshape) > 0.25
        else:
            m = (rng.standard_normal(mshape) * 3).astype(np.float32)
            m[rng.random(mshape) < 0.1] = -np.inf
        kw = dict(kw, mask=make(kind, "bool" if mask == "bool" else dtype, m))
    return q, k, v, kw


@SETTINGS
@given(problems())
def test_generated_forward(problem):
    check_generated_forward(problem)


@SETTINGS
@given(problems(decode=True))
def test_generated_decode_forward(problem):
    check_generated_forward(problem)


def check_generated_forward(problem):
    kind, dtype, shape, kw, mask, layout, seed = problem
    q, k, v, kw = build(kind, dtype, shape, kw, mask, seed)
    ref_out, ref_lse = reference(q, k, v, **kw)
    if layout == "blhd":
        q, k, v = swap12(q), swap12(k), swap12(v)
    out, lse = flash_attention(q, k, v, backend="cpu", return_lse=True, layout=layout, **kw)
    mout, mlse = flash_attention(q, k, v, backend="math", return_lse=True, layout=layout, **kw)
    if layout == "blhd":
        out, mout = swap12(out), swap12(mout)
    assert_close(out, ref_out, mout, "out")
    assert_close(lse, ref_lse, mlse, "lse")


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
@settings(max_examples=30, deadline=None, derandomize=True, print_blob=True)
@given(problems(kinds_=["torch"], dtypes=("float32", "bfloat16"), max_len=50))
def test_generated_torch_gradients(problem):
    import torch
    kind, dtype, shape, kw, mask, layout, seed = problem
    q, k, v, kw = build(kind, dtype, shape, kw, mask, seed)
    B, Hq, Hkv, Lq, Lk, D, Dv = shape
    go = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal((B, Hq, Lq, Dv)))
    ref = reference_grads(q, k, v, go.numpy(), **kw)

    def grads(backend):
        qq, kk, vv = (x.detach().requires_grad_() for x in (q, k, v))
        out = flash_attention(qq, kk, vv, backend=backend, **kw)
        return torch.autograd.grad((out.double() * go).sum(), (qq, kk, vv), allow_unused=True)
    got = grads("cpu")
    if Lq == 0 or Lk == 0:
        # nothing attends: zero gradients (the math backend's empty output is not connected to
        # its inputs' graph, so it gives no gradients to compare with)
        for g, x in zip(got, (q, k, v)):
            assert g.shape == x.shape and not g.any()
        return
    for name, g, r, m in zip("qkv", got, ref, grads("math")):
        assert_close(g, r, m, "d" + name)
