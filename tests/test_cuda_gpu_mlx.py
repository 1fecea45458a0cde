"""MLX arrays on an NVIDIA GPU through the `cuda` backend (mlx[cuda]: the PTX entry points
launched with mx.fast.precompiled_cuda_kernel), against the float64 reference with the SPEC
criterion (tests/contract/tolerance.py). Skipped unless mlx has CUDA and the backend's MLX path
is ready (the bridge built, its PTX shipped); benchmarks/gpu_check.sh runs it when an mlx[cuda]
wheel is installed. The same checks run on the CPU under the CUDA emulator in
tests/cuda_emulator/test_cuda_emu_mlx.py.

Forward and gradients: fp16/bf16, D in {40, 64, 72, 128}, L in {1, 7, 113, 128}, causal + GQA,
bool/additive masks with window and softcap, lse with its gradient, split-KV (the planner's
choice for a single query row over many keys), the deterministic backward (bitwise equal runs),
fused varlen (forward; its gradients are checked on the emulator).
"""
from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from contract.tolerance import fused_ok  # noqa: E402
from cuda_mlx_inputs import mlx_inputs  # noqa: E402
from mlx_attn import config, flash_attention, flash_attention_varlen  # noqa: E402
from mlx_attn.backends.cuda import CudaBackend  # noqa: E402
from mlx_attn.reference import max_error, reference, reference_grads, reference_varlen  # noqa: E402


def _why_not() -> str | None:
    cuda = getattr(mx, "cuda", None)
    if cuda is None or not cuda.is_available():
        return f"mlx {mx.__version__} has no CUDA (install mlx[cuda13] on a Linux GPU machine)"
    reasons = CudaBackend().mlx_reasons()
    return "; ".join(reasons) if reasons else None


_SKIP = _why_not()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=f"MLX on CUDA unavailable: {_SKIP}")


@pytest.fixture(autouse=True)
def on_gpu():
    mx.set_default_device(mx.gpu)
    yield


def _f32(x) -> np.ndarray:
    return np.array(x.astype(mx.float32))


def _assert(got, ref, math, what, dtype):
    err, math_err = max_error(_f32(got), ref), max_error(_f32(math), ref)
    assert fused_ok(err, math_err, dtype), f"{what}: error {err} vs math {math_err} ({dtype})"


def check(dtype, B, Hq, Hkv, Lq, Lk, D, seed=0, mask=None, **kw):
    rng = np.random.default_rng(seed)
    mdt = getattr(mx, dtype)
    q, k, v, m = mlx_inputs(rng, dtype, B, Hq, Hkv, Lq, Lk, D, mask=mask)
    kw = dict(kw, mask=m)
    ref_kw = dict(kw, mask=None if m is None else np.array(m))
    f32 = [_f32(x) for x in (q, k, v)]
    dout = mx.array(rng.standard_normal((B, Hq, Lq, D)).astype(np.float32)).astype(mdt)
    dlse = mx.array(rng.standard_normal((B, Hq, Lq)).astype(np.float32))

    def run(backend):
        def fn(q, k, v):
            return flash_attention(q, k, v, backend=backend, return_lse=True, **kw)
        (out, lse), grads = mx.vjp(fn, [q, k, v], [dout, dlse])
        return out, lse, grads

    out, lse, grads = run("cuda")
    m_out, m_lse, m_grads = run("math")
    r_out, r_lse = reference(*f32, **ref_kw)
    _assert(out, r_out, m_out, "out", dtype)
    _assert(lse, r_lse, m_lse, "lse", dtype)
    refs = reference_grads(*f32, _f32(dout), dlse=np.array(dlse), **ref_kw)
    for name, g, r, mg in zip(("dq", "dk", "dv"), grads, refs, m_grads):
        _assert(g, r, mg, name, dtype)
    return grads


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("D", [40, 64, 72, 128])
@pytest.mark.parametrize("L", [1, 7, 113, 128])
def test_causal_gqa(dtype, D, L):
    check(dtype, 2, 4, 2, L, L + 3, D, causal=True, seed=L + D)


@pytest.mark.parametrize("mask", ["bool", "additive"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_masks_window_softcap(mask, dtype):
    check(dtype, 1, 4, 1, 33, 70, 64, mask=mask, window=(40, 3), softcap=30.0, seed=3)


def test_split_kv_decode():
    check("float16", 1, 8, 2, 1, 4000, 128, seed=4)


def test_deterministic_backward_is_bitwise_stable(monkeypatch):
    monkeypatch.setenv("MLX_ATTN_CUDA_DETERMINISTIC", "1")
    config.reload()
    try:
        a = check("bfloat16", 1, 4, 4, 200, 200, 64, causal=True, seed=5)
        b = check("bfloat16", 1, 4, 4, 200, 200, 64, causal=True, seed=5)
        for x, y in zip(a, b):
            assert np.array_equal(np.array(x.view(mx.uint16)), np.array(y.view(mx.uint16)))
    finally:
        monkeypatch.delenv("MLX_ATTN_CUDA_DETERMINISTIC")
        config.reload()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_varlen_forward(dtype):
    rng = np.random.default_rng(6)
    lens_q, lens_k, Hq, Hkv, D = [5, 1, 130, 17], [9, 4, 130, 0], 8, 2, 64
    mdt = getattr(mx, dtype)
    q, k, v = (mx.array(rng.standard_normal(sh).astype(np.float32)).astype(mdt)
               for sh in ((sum(lens_q), Hq, D), (sum(lens_k), Hkv, D), (sum(lens_k), Hkv, D)))
    cq, ck = (np.concatenate([[0], np.cumsum(x)]).astype(np.int32) for x in (lens_q, lens_k))
    args = (q, k, v, mx.array(cq), mx.array(ck), max(lens_q), max(lens_k))
    out, lse = flash_attention_varlen(*args, causal=True, backend="cuda", return_lse=True)
    m_out, m_lse = flash_attention_varlen(*args, causal=True, backend="math", return_lse=True)
    r_out, r_lse = reference_varlen(*(_f32(x) for x in (q, k, v)), cq, ck, causal=True)
    _assert(out, r_out, m_out, "out", dtype)
    finite = np.isfinite(r_lse)  # the empty sequence's rows: -inf
    assert np.array_equal(np.isfinite(np.array(lse)), finite)
    _assert(mx.array(np.where(finite, np.array(lse), 0)), np.where(finite, r_lse, 0),
            mx.array(np.where(finite, np.array(m_lse), 0)), "lse", dtype)
