"""The `cuda` backend's MLX path end to end on the CUDA emulator: MLX CPU arrays stand for arrays
on a CUDA device under MLX_ATTN_CUDA_EMULATE=1, and the launcher's calls of
mx.fast.precompiled_cuda_kernel go to the emulator's stand-in (cuda_emulator/mlx_cuda.py), which
compiles the flat-argument entry points and launches them as MLX does. Forward and gradients
(mx.vjp through the custom function) against the float64 reference with the SPEC criterion
(at most 2x the error of the math path in the same dtype). A few cases by default; the wider
matrix is marked slow (MLX_ATTN_SLOW_TESTS=1). Two planted launcher bugs must be caught."""
from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from contract.tolerance import assert_fused, assert_lse  # noqa: E402
from cuda_emu_cases import _same_nans  # noqa: E402
from cuda_mlx_inputs import mlx_inputs  # noqa: E402
from cuda_emulator import CudaEmulatorError  # noqa: E402
from mlx_attn import config, explain, flash_attention, flash_attention_varlen  # noqa: E402
from mlx_attn.backends.cuda import mlx_launch  # noqa: E402
from mlx_attn.reference import reference, reference_grads, reference_varlen  # noqa: E402


@pytest.fixture(autouse=True)
def emulated(monkeypatch):
    monkeypatch.setenv("MLX_ATTN_CUDA_EMULATE", "1")
    config.reload()
    mx.set_default_device(mx.cpu)
    yield
    monkeypatch.delenv("MLX_ATTN_CUDA_EMULATE")
    config.reload()


@pytest.fixture
def launched(monkeypatch):
    """The entry names the launcher started, in order."""
    names = []
    run = mlx_launch.run

    def recording(launch, *args):
        names.append(launch.entry)
        return run(launch, *args)
    monkeypatch.setattr(mlx_launch, "run", recording)
    return names


def _f32(x) -> np.ndarray:
    return np.array(x.astype(mx.float32))


def check(dtype, B, Hq, Hkv, Lq, Lk, D, Dv=None, seed=0, grads=True, with_dlse=False,
          mask=None, **kw):
    """Runs the MLX path (backend="cuda") and checks out, lse and (with `grads`) dq, dk, dv."""
    rng = np.random.default_rng(seed)
    mdt = getattr(mx, dtype)
    q, k, v, m = mlx_inputs(rng, dtype, B, Hq, Hkv, Lq, Lk, D, Dv, mask)
    kw = dict(kw, mask=m)
    ref_kw = dict(kw, mask=None if m is None else np.array(m))
    f32 = [_f32(x) for x in (q, k, v)]

    out, lse = flash_attention(q, k, v, backend="cuda", return_lse=True, **kw)
    m_out, m_lse = flash_attention(q, k, v, backend="math", return_lse=True, **kw)
    r_out, r_lse = reference(*f32, **ref_kw)
    assert_fused(*_same_nans(_f32(out), r_out, _f32(m_out), "out"), "out", dtype=dtype)
    assert_lse(*_same_nans(np.array(lse), r_lse, np.array(m_lse), "lse"), "lse")
    if not grads:
        return
    dout = mx.array(rng.standard_normal(out.shape).astype(np.float32)).astype(mdt)
    dlse = mx.array(rng.standard_normal(lse.shape).astype(np.float32)) if with_dlse else None

    def grads_of(backend):
        def fn(q, k, v):
            o, l = flash_attention(q, k, v, backend=backend, return_lse=True, **kw)
            return (o, l) if with_dlse else (o,)
        cot = (dout, dlse) if with_dlse else (dout,)
        return mx.vjp(fn, [q, k, v], list(cot))[1]

    got, math = grads_of("cuda"), grads_of("math")
    ref = reference_grads(*f32, _f32(dout), dlse=None if dlse is None else np.array(dlse), **ref_kw)
    for name, g, r, mth in zip(("dq", "dk", "dv"), got, ref, math):
        assert g.dtype == mdt and g.shape == (q, k, v)["dq dk dv".split().index(name)].shape
        assert_fused(*_same_nans(_f32(g), r, _f32(mth), name), name, dtype=dtype)


# -- default: a few small cases -------------------------------------------------------------------
def test_explain_chooses_cuda_for_mlx_arrays():
    q = mx.zeros((1, 2, 7, 64), dtype=mx.float16)
    line = next(x for x in explain(q, q, q).splitlines() if x.strip().startswith("cuda"))
    assert "chosen" in line, line


def test_gqa_causal_lse_and_grads_fp16(monkeypatch, launched):
    # small problems get the 64-row tiles from the planner (fewer CTAs than SMs): force prefill
    monkeypatch.setenv("MLX_ATTN_CUDA_CONFIG", "prefill")
    check("float16", 1, 4, 2, 7, 9, 64, causal=True, with_dlse=True)
    assert launched[0] == "ma_fwd_prefill_fp16_64"
    assert launched[-3:] == ["ma_bwd_delta_fp16_64", "ma_bwd_dkdv_fp16_64", "ma_bwd_convert_fp16_64"]


def test_mask_window_softcap_bf16_odd_sizes():
    check("bfloat16", 2, 2, 1, 113, 120, 40, mask="bool", window=(30, 5), softcap=20.0, seed=1)


def test_split_kv_decode_d72(launched):
    # one query row, 300 keys: the planner picks the 64-row tiles with the key range split
    check("float16", 1, 2, 2, 1, 300, 72, causal=True, seed=2)
    assert launched[:2] == ["ma_fwd_decode_fp16_96", "ma_fwd_combine_fp16_96"]


def test_block_multiple_additive_mask_deterministic(monkeypatch, launched):
    monkeypatch.setenv("MLX_ATTN_CUDA_DETERMINISTIC", "1")
    config.reload()
    check("bfloat16", 1, 2, 2, 64, 64, 64, mask="additive", seed=3)
    assert "ma_bwd_dq_bf16_64" in launched and "ma_bwd_delta_bf16_64" not in launched


def test_blhd_layout_and_dv_different_from_d():
    rng = np.random.default_rng(5)
    q, k = (mx.array(rng.standard_normal((1, 7, 2, 64)).astype(np.float16)) for _ in range(2))
    v = mx.array(rng.standard_normal((1, 7, 2, 32)).astype(np.float16))
    out = flash_attention(q, k, v, layout="blhd", backend="cuda")
    ref, _ = reference(*(np.array(x.astype(mx.float32)) for x in (q, k, v)), layout="blhd")
    math = flash_attention(q, k, v, layout="blhd", backend="math")
    assert out.shape == (1, 7, 2, 32)
    assert_fused(_f32(out), ref, _f32(math), "out", dtype="float16")


def check_varlen(dtype, lens_q, lens_k, Hq, Hkv, D, seed=0, **kw):
    """Fused varlen (one launch for all sequences): out and lse against reference_varlen, and
    dq, dk, dv against reference_grads per sequence."""
    rng = np.random.default_rng(seed)
    mdt = getattr(mx, dtype)
    Tq, Tk = sum(lens_q), sum(lens_k)
    q, k, v = (mx.array(rng.standard_normal(sh).astype(np.float32)).astype(mdt)
               for sh in ((Tq, Hq, D), (Tk, Hkv, D), (Tk, Hkv, D)))
    cq, ck = (np.concatenate([[0], np.cumsum(x)]).astype(np.int32) for x in (lens_q, lens_k))
    cu = (mx.array(cq), mx.array(ck), max(lens_q), max(lens_k))
    f32 = [_f32(x) for x in (q, k, v)]
    dout = mx.array(rng.standard_normal((Tq, Hq, D)).astype(np.float32)).astype(mdt)

    def run(backend):
        def fn(q, k, v):
            return flash_attention_varlen(q, k, v, *cu, backend=backend, return_lse=True, **kw)
        (out, lse), grads = mx.vjp(fn, [q, k, v], [dout, mx.zeros((Hq, Tq))])
        return out, lse, grads

    out, lse, grads = run("cuda")
    m_out, m_lse, m_grads = run("math")
    r_out, r_lse = reference_varlen(*f32, cq, ck, **kw)
    assert_fused(*_same_nans(_f32(out), r_out, _f32(m_out), "out"), "out", dtype=dtype)
    assert_lse(*_same_nans(np.array(lse), r_lse, np.array(m_lse), "lse"), "lse")
    ref = [np.zeros(x.shape) for x in f32]
    for i in range(len(lens_q)):
        part = [x[a:b].swapaxes(0, 1)[None] for x, a, b in
                ((f32[0], cq[i], cq[i + 1]), (f32[1], ck[i], ck[i + 1]), (f32[2], ck[i], ck[i + 1]),
                 (_f32(dout), cq[i], cq[i + 1]))]
        for r, g, (a, b) in zip(ref, reference_grads(*part, **kw),
                                ((cq[i], cq[i + 1]), (ck[i], ck[i + 1]), (ck[i], ck[i + 1]))):
            r[a:b] = g[0].swapaxes(0, 1)
    for name, g, r, mth in zip(("dq", "dk", "dv"), grads, ref, m_grads):
        assert_fused(*_same_nans(_f32(g), r, _f32(mth), name), name, dtype=dtype)


def test_varlen_fused_forward_and_grads(launched):
    check_varlen("float16", [5, 1, 17], [9, 4, 17], 4, 2, 64, causal=True, seed=9)
    assert launched[0] in ("ma_fwd_decode_fp16_64", "ma_fwd_prefill_fp16_64")
    assert "ma_fwd_combine_fp16_64" not in launched  # varlen is never split


def test_varlen_window_softcap_bf16_d72():
    check_varlen("bfloat16", [7, 30], [40, 30], 2, 1, 72, window=(8, 2), softcap=15.0, seed=10)


# -- planted launcher bugs: the checks above must catch them --------------------------------------
def test_planted_bug_swapped_entry_arguments(monkeypatch):
    order = list(mlx_launch.FWD_SCALARS)
    i, j = order.index("q_sh"), order.index("q_sl")
    order[i], order[j] = order[j], order[i]
    monkeypatch.setattr(mlx_launch, "FWD_SCALARS", tuple(order))
    # q read with its head and row strides exchanged: wrong values, or reads past q's end
    with pytest.raises((AssertionError, CudaEmulatorError)):
        check("float16", 1, 2, 2, 7, 9, 64, grads=False, seed=6)


def test_planted_bug_grid_too_small(monkeypatch):
    real = mlx_launch.launch_dims

    def doubled_rows(bucket):  # twice the rows per CTA: half the CTAs, rows left unwritten
        dims = dict(real(bucket))
        rows, threads, smem = dims["prefill"]
        dims["prefill"] = (2 * rows, threads, smem)
        return dims
    monkeypatch.setattr(mlx_launch, "launch_dims", doubled_rows)
    monkeypatch.setenv("MLX_ATTN_CUDA_CONFIG", "prefill")
    with pytest.raises(AssertionError):
        check("float16", 1, 1, 1, 200, 9, 64, grads=False, seed=7)


# -- slow: the wider matrix -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("D", [64, 40, 72, 128])
@pytest.mark.parametrize("L", [1, 7, 113, 128])
def test_matrix(dtype, D, L):
    check(dtype, 2, 4, 2, L, L + 5, D, causal=L > 1, seed=L + D, with_dlse=True)


@pytest.mark.slow
@pytest.mark.parametrize("mask", ["bool", "additive"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_masks_with_window_and_softcap(mask, dtype):
    check(dtype, 1, 4, 1, 33, 70, 64, mask=mask, window=(40, 3), softcap=30.0, seed=8)
