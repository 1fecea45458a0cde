"""The tensor-core CUDA backward (cuda_bridge/.../bwd_kernel.cuh) under the emulator: the SPEC's
gradient matrix against the float64 reference with FlashAttention's criterion (dq, dk, dv
within 2x the float32 math path's error), in both dQ modes (float32 atomics into dq_accum,
the default; and the deterministic dQ kernel), plus fused varlen through a small driver of the
kernels' varlen interface (params.h cu_seqlens / Seq / lse_index).  The wider matrix is slow."""
import concurrent.futures
import os

import numpy as np
import pytest

from cuda_emu_cases import INT32_MAX, Problem, check_backward
from cuda_emulator import attention, emulator_options
from cuda_emulator.memory import DeviceArray

DTYPES = ["float16", "bfloat16"]
HEAD_DIMS = [32, 64, 96, 128, 192, 256]
MODES = {"atomic": dict(deterministic=False), "deterministic": dict(deterministic=True)}


@pytest.fixture(scope="module", autouse=True)
def libraries():
    with concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda a: attention.library(*a), [(t, d) for t in DTYPES for d in HEAD_DIMS]))


def _masks(rng, B, Hq, Lq, Lk):
    bool_mask = rng.random((B, 1, Lq, Lk)) > 0.3
    bool_mask[:, :, min(2, Lq - 1)] = False  # a fully removed row
    add = (rng.standard_normal((1, Hq, Lq, Lk)) * 2).astype(np.float32)
    add[rng.random(add.shape) < 0.2] = -np.inf
    add[:, :, min(3, Lq - 1)] = -np.inf
    return {"bool": bool_mask, "float32": add, "float16": add.astype(np.float16),
            "bfloat16": attention.bf16_from_float(add)}


# -- every head-dim bucket, both dtypes, both dQ modes --------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", HEAD_DIMS)
def test_every_head_dim(D, dtype, mode):
    # 70 queries / 75 keys: two tiles each way in every bucket; GQA 2; the lse gradient
    p = Problem(dtype, 1, 4, 2, 70, 75, D, seed=D, causal=True)
    check_backward(p, with_dlse=True, **MODES[mode])


@pytest.mark.parametrize("Hq,Hkv", [(2, 2), (4, 2), (8, 2)])
@pytest.mark.parametrize("mode", MODES)
def test_gqa_groups(Hq, Hkv, mode):
    check_backward(Problem("bfloat16", 2, Hq, Hkv, 64, 128, 64, seed=Hq), with_dlse=True, **MODES[mode])


# -- the SPEC's features ---------------------------------------------------------------------------
FEATURES = ["bool_mask", "float32_mask", "float16_mask", "bfloat16_mask", "window", "window_causal",
            "causal", "softcap", "softcap_mask", "scale", "dv_differs", "no_key_rows", "huge_window"]


def _feature_problem(feature, dtype, D=64):
    rng = np.random.default_rng(11)
    B, Hq, Hkv, Lq, Lk, Dv = 1, 4, 2, 21, 77, None
    kw = {}
    if feature.endswith("_mask"):
        kind = "bool" if feature == "softcap_mask" else feature.removesuffix("_mask")
        if kind == "bfloat16" and dtype != "bfloat16" or kind == "float16" and dtype != "float16":
            kind = "float32"
        kw["mask"] = _masks(rng, B, Hq, Lq, Lk)[kind]
        if feature == "softcap_mask":
            kw["softcap"] = 4.0
    elif feature == "window":
        kw["window"] = (9, 4)
    elif feature == "window_causal":
        kw.update(window=(5, 3), causal=True)
    elif feature == "causal":
        Lq, Lk = 77, 21  # Lq > Lk: bottom-right alignment leaves 56 rows with no key
        kw["causal"] = True
    elif feature == "softcap":
        kw.update(softcap=3.0, scale=0.4)
    elif feature == "scale":
        kw["scale"] = -0.3
    elif feature == "dv_differs":
        D, Dv = 40, 24
    elif feature == "no_key_rows":
        Lq, Lk = 40, 29
        kw["causal"] = True
    elif feature == "huge_window":
        kw["window"] = (INT32_MAX, 2 ** 40)
    return Problem(dtype, B, Hq, Hkv, Lq, Lk, D, Dv=Dv, seed=12, **kw)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("feature", FEATURES)
def test_features(feature, dtype, mode):
    check_backward(_feature_problem(feature, dtype), with_dlse=True, **MODES[mode])


# -- sizes: odd and block multiples (tiles of 32 / 64) ---------------------------------------------
SIZES = [(1, 1), (1, 7), (7, 1), (113, 33), (33, 113), (64, 64), (128, 256), (257, 64), (203, 257)]


@pytest.mark.parametrize("Lq,Lk", SIZES)
def test_sizes(Lq, Lk):
    mode = MODES["deterministic" if (Lq + Lk) % 2 else "atomic"]
    check_backward(Problem("float16", 1, 2, 1, Lq, Lk, 64, seed=Lq + Lk, causal=Lq % 2 == 1), **mode)


@pytest.mark.parametrize("mode", MODES)
def test_rows_with_no_allowed_key_get_zero_gradient(mode):
    # causal with Lq > Lk: the first 10 queries see no key; a bool mask removes row 12 as well
    mask = np.ones((1, 1, 40, 30), bool)
    mask[..., 12, :] = False
    p = Problem("float16", 1, 2, 1, 40, 30, 64, seed=8, causal=True, mask=mask)
    dq, dk, dv = check_backward(p, with_dlse=True, **MODES[mode])
    assert (dq[:, :, :10] == 0).all() and (dq[:, :, 12] == 0).all()
    assert all(np.isfinite(attention.to_float(g, "float16")).all() for g in (dq, dk, dv))


@pytest.mark.parametrize("mode", MODES)
def test_nan_propagates(mode):
    p = Problem("float16", 1, 2, 1, 9, 70, 32, seed=9, causal=True)
    p.dev[0][0, 1, 4, 7] = np.nan  # one query row: its dq, and dk / dv of the keys it sees
    p.dev[1][0, 0, 68, 3] = np.nan  # one key: the rows that see it (causal: the last two)
    dq, dk, dv = check_backward(p, **MODES[mode])  # NaN exactly where the reference has NaN
    assert np.isnan(dq[0, 1, 4]).all() and np.isnan(dq[0, :, 7:]).all()
    # rows 0-6 of head 0 do not see key 68, but dq = dS K multiplies its NaN column by 0, as
    # IEEE arithmetic (and the reference) do: NaN only in that column
    assert np.isnan(dq[0, 0, :7, 3]).all() and np.isfinite(np.delete(dq[0, 0, :7], 3, axis=-1)).all()


# -- dQ modes: determinism -------------------------------------------------------------------------
def test_deterministic_mode_is_bit_identical_across_runs_and_schedules():
    p = Problem("bfloat16", 2, 4, 2, 70, 130, 64, seed=13, causal=True)
    out, lse = attention.forward(*p.dev, dtype=p.dtype, causal=True)
    dout = attention._as_dtype(np.random.default_rng(1).standard_normal(out.shape).astype(np.float32), p.dtype)
    base = None
    for schedule, workers, seed in [("forward", 1, 0), ("forward", 4, 0), ("reverse", 2, 0), ("random", 3, 1),
                                    ("random", 1, 2)]:
        with emulator_options(schedule=schedule, workers=workers, seed=seed):
            g = attention.backward(*p.dev, out, lse, dout, dtype=p.dtype, causal=True, deterministic=True)
        got = [x.view(np.uint8) for x in g]
        base = got if base is None else base
        for a, b in zip(base, got):
            np.testing.assert_array_equal(a, b, err_msg=f"{schedule} {workers} workers")


def test_atomic_mode_agrees_with_the_deterministic_dq_kernel():
    # dk, dv come from the same kernel in both modes: identical; dq differs only in the order of
    # its float32 sums (atomics): within a few units of the last place.
    p = Problem("float16", 1, 4, 1, 130, 70, 128, seed=14)
    out, lse = attention.forward(*p.dev, dtype=p.dtype)
    dout = attention._as_dtype(np.random.default_rng(2).standard_normal(out.shape).astype(np.float32), p.dtype)
    det = attention.backward(*p.dev, out, lse, dout, dtype=p.dtype, deterministic=True)
    with emulator_options(schedule="random", workers=3, seed=5):
        atom = attention.backward(*p.dev, out, lse, dout, dtype=p.dtype, deterministic=False)
    np.testing.assert_array_equal(det[1], atom[1])
    np.testing.assert_array_equal(det[2], atom[2])
    np.testing.assert_allclose(atom[0].astype(np.float32), det[0].astype(np.float32), rtol=2e-3, atol=2e-3)


# -- fused varlen: the kernels' varlen interface, driven directly ---------------------------------
def _packed(x):
    """[B=1, H, L, D] numpy -> device [L, H, D] (packed) and its bhld _Tensor (batch stride 0)."""
    d = DeviceArray.from_numpy(np.ascontiguousarray(x[0].swapaxes(0, 1)), "packed")
    L, H, D = d.shape
    return d, attention._Tensor(d.ptr, 0, D, H * D, 0)


def varlen_backward(seqs, dtype, *, deterministic, causal=False, window=None, softcap=None, with_dlse=True,
                    Hq=4, Hkv=2, D=64, seed=0):
    """Packs the dense problems of `seqs` [(lq, lk)] (empty ones allowed), runs the dense forward
    per sequence, then ONE varlen backward launch.  Returns per sequence (grads, dense_grads) or
    None for an empty side, where dense_grads is the dense backward of that sequence alone."""
    rng = np.random.default_rng(seed)
    kw = dict(causal=causal, window=window, softcap=softcap)
    per = []
    for lq, lk in seqs:
        q, k, v = (attention._as_dtype(rng.standard_normal(s).astype(np.float32), dtype)
                   for s in ((1, Hq, lq, D), (1, Hkv, lk, D), (1, Hkv, lk, D)))
        if lq and lk:
            out, lse = attention.forward(q, k, v, dtype=dtype, **kw)
        else:  # SPEC: no key -> zeros and lse -inf (and nothing at all without queries)
            out = np.zeros((1, Hq, lq, D), q.dtype)
            lse = np.full((1, Hq, lq), -np.inf, np.float32)
        dout = attention._as_dtype(rng.standard_normal(out.shape).astype(np.float32), dtype)
        dlse = rng.standard_normal(lse.shape).astype(np.float32) if with_dlse else None
        per.append((q, k, v, out, lse, dout, dlse))
    cat = lambda i, axis=2: np.concatenate([x[i] for x in per], axis=axis)  # noqa: E731
    cu_q = np.cumsum([0] + [lq for lq, _ in seqs]).astype(np.int32)
    cu_k = np.cumsum([0] + [lk for _, lk in seqs]).astype(np.int32)
    total_q, total_k = int(cu_q[-1]), int(cu_k[-1])
    a = attention._Attn()
    a.b, a.hq, a.hkv, a.d, a.dv_dim = len(seqs), Hq, Hkv, D, D
    a.lq, a.lk = max(lq for lq, _ in seqs), max(lk for _, lk in seqs)
    a.scale, a.softcap = 1.0 / np.sqrt(D), float(softcap or 0.0)
    a.causal = int(causal)
    a.window_left, a.window_right = attention._window(causal, window)
    a.num_splits, a.total_q = 1, total_q
    keep = []
    for name in ("q", "k", "v", "out", "dout"):
        d, t = _packed(cat("qkv".index(name) if name in "qkv" else {"out": 3, "dout": 5}[name]))
        keep.append(d)
        setattr(a, name, t)
    grads = []
    for name, L in (("dq", total_q), ("dk", total_k), ("dv", total_k)):
        d = DeviceArray((max(L, 1), Hq if name == "dq" else Hkv, D), per[0][0].dtype, name=name)
        grads.append(d)
        setattr(a, name, attention._Tensor(d.ptr, 0, D, (Hq if name == "dq" else Hkv) * D, 0))
    lse = DeviceArray.from_numpy(np.ascontiguousarray(cat(4)[0]), "lse")  # [Hq, total_q]
    delta = DeviceArray((Hq, max(total_q, 1)), np.float32, name="delta")
    keep += [lse, delta]
    a.lse, a.delta = lse.ptr, delta.ptr
    if with_dlse:
        dl = DeviceArray.from_numpy(np.ascontiguousarray(cat(6)[0]), "dlse")
        keep.append(dl)
        a.dlse = dl.ptr
    cu = [DeviceArray.from_numpy(c, n) for c, n in ((cu_q, "cu_seqlens_q"), (cu_k, "cu_seqlens_k"))]
    keep += cu
    a.cu_seqlens_q, a.cu_seqlens_k = cu[0].ptr, cu[1].ptr
    a.deterministic = int(deterministic)
    if not deterministic:
        acc = DeviceArray((Hq * max(total_q, 1), D), np.float32, name="dq_accum")
        keep.append(acc)
        a.dq_accum = acc.ptr
    attention._run(attention.library(dtype, attention.head_dim_bucket(D, D)), "emu_bwd", a)
    host = [g.copy_to_host() for g in grads]
    results = []
    for s, ((lq, lk), (q, k, v, out, lse_s, dout, dlse)) in enumerate(zip(seqs, per)):
        got = (host[0][cu_q[s]:cu_q[s + 1]], host[1][cu_k[s]:cu_k[s + 1]], host[2][cu_k[s]:cu_k[s + 1]])
        got = tuple(g.swapaxes(0, 1)[None] for g in got)  # back to [1, H, L, D]
        dense = None
        if lq and lk:
            dense = attention.backward(q, k, v, out, lse_s, dout, dlse=dlse, dtype=dtype, deterministic=True, **kw)
        results.append((got, dense))
    return results


VARLEN_SEQS = [(70, 75), (0, 9), (1, 1), (33, 0), (130, 64), (5, 100)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kw", [dict(causal=True), dict(window=(7, 3), softcap=5.0)], ids=["causal", "window"])
def test_varlen_matches_dense_per_sequence(mode, kw):
    det = MODES[mode]["deterministic"]
    for (lq, lk), (got, dense) in zip(VARLEN_SEQS, varlen_backward(VARLEN_SEQS, "bfloat16", deterministic=det,
                                                                     **kw)):
        if dense is None:  # an empty side: every gradient of the other side is exactly 0
            assert all((attention.to_float(g, "bfloat16") == 0).all() for g in got), (lq, lk)
            continue
        # dk, dv: the same tiles in the same order as the dense launch, bit for bit; dq too in the
        # deterministic mode (the atomics' order may differ: a few float32 ulps before rounding)
        for name, g, d in zip(("dq", "dk", "dv"), got, dense):
            if name == "dq" and not det:
                np.testing.assert_allclose(attention.to_float(g, "bfloat16"), attention.to_float(d, "bfloat16"),
                                           rtol=1e-2, atol=1e-2, err_msg=f"{name} {(lq, lk)}")
            else:
                np.testing.assert_array_equal(g, d, err_msg=f"{name} {(lq, lk)}")


# -- the wider matrix ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", HEAD_DIMS)
def test_slow_matrix(D, dtype, mode):
    rng = np.random.default_rng(D)
    for L, Lk in ((113, 253), (203, 64), (256, 257)):
        mask = _masks(rng, 1, 4, L, Lk)["float32" if D % 64 else "bool"]
        for kw in (dict(causal=True), dict(window=(17, 9)), dict(mask=mask, softcap=4.0)):
            check_backward(Problem(dtype, 1, 4, 2, L, Lk, D, seed=L, **kw), with_dlse=True, **MODES[mode])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("feature", FEATURES)
@pytest.mark.parametrize("D", [32, 128, 256])
def test_slow_features_other_head_dims(D, feature, dtype):
    check_backward(_feature_problem(feature, dtype, D=D if feature != "dv_differs" else 64), with_dlse=True,
                   deterministic=D == 128)
