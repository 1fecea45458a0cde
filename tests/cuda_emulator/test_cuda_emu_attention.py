"""The real CUDA kernels of cuda_bridge/ (forward in both planner configurations, split-KV with
the combine; the backward on strided inputs and its determinism across schedules) under the
emulator, against the float64 reference with the SPEC criterion. The backward's own matrix is
test_cuda_emu_backward.py. The longer matrix is marked slow."""
import numpy as np
import pytest

from cuda_emu_cases import INT32_MAX, Problem, check_backward, check_forward
from cuda_emulator import attention, emulator_options

DTYPES = ["float16", "bfloat16"]
HEAD_DIMS = [32, 64, 96, 128, 192, 256]


@pytest.fixture(scope="module", autouse=True)
def libraries():
    """Builds the 12 libraries up front, in parallel (2 cores on CI)."""
    import concurrent.futures
    import os
    with concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda a: attention.library(*a), [(t, d) for t in DTYPES for d in HEAD_DIMS]))


# -- every kernel, every head-dim bucket, both dtypes -------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", HEAD_DIMS)
def test_forward_prefill_every_head_dim(dtype, D):
    p = Problem(dtype, 1, 4, 2, 33, 40, D, causal=True)
    check_forward(p, config="prefill", splits=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", HEAD_DIMS)
def test_forward_split_kv_every_head_dim(dtype, D):
    # three key blocks (decode tiles: 128 keys for D <= 64, else 64), one per split
    p = Problem(dtype, 1, 8, 2, 7, 300 if D <= 64 else 150, D, seed=1)
    check_forward(p, config="decode", splits=3)


def test_head_dims_below_the_bucket_and_dv_different_from_d():  # backward: test_cuda_emu_backward
    check_forward(Problem("float16", 1, 2, 1, 17, 19, 40, Dv=24, seed=3), config="prefill", splits=1)


# -- sizes, configurations, the planner ----------------------------------------------------------
@pytest.mark.parametrize("L", [1, 7, 33, 113])
@pytest.mark.parametrize("config,splits", [("prefill", 1), ("decode", 1), ("decode", 2)])
def test_odd_sizes(L, config, splits):
    Lk = L + 140 if splits > 1 else L  # two key blocks for the two splits
    check_forward(Problem("float16", 2, 2, 1, L, Lk, 64, seed=L, causal=True), config=config, splits=splits)


def test_planner_configurations_run():
    p = Problem("bfloat16", 1, 4, 4, 200, 600, 64, seed=4, causal=True)
    assert attention.plan(*p.dev, causal=True, dtype="bfloat16", num_sms=1) == ("prefill", 1)
    config, splits = attention.plan(*p.dev, causal=True, dtype="bfloat16", num_sms=108)
    assert config == "decode" and splits > 1
    for sms in (1, 108):  # the planner's own choice, as api.cu would make it on such a GPU
        check_forward(p, num_sms=sms)


def test_gqa_groups():
    for Hq, Hkv in ((8, 1), (6, 3), (4, 4)):
        check_forward(Problem("float16", 1, Hq, Hkv, 9, 30, 32, seed=Hq), config="prefill", splits=1)
        check_forward(Problem("bfloat16", 1, Hq, Hkv, 9, 260, 32, seed=Hq), config="decode", splits=2)


# -- the SPEC's features ---------------------------------------------------------------------------
def _masks(rng, B, Hq, Lq, Lk):
    bool_mask = rng.random((B, 1, Lq, Lk)) > 0.3
    bool_mask[:, :, 2] = False  # a fully removed row
    add = (rng.standard_normal((1, Hq, Lq, Lk)) * 2).astype(np.float32)
    add[rng.random(add.shape) < 0.2] = -np.inf
    add[:, :, 3] = -np.inf
    return {"bool": bool_mask, "float32": add, "float16": add.astype(np.float16),
            "bfloat16": attention.bf16_from_float(add),
            "bool_keys": np.broadcast_to(rng.random((B, 1, 1, Lk)) > 0.5, (B, 1, 1, Lk))}


@pytest.mark.parametrize("kind", ["bool", "float32", "float16", "bfloat16", "bool_keys"])
@pytest.mark.parametrize("config,splits", [("prefill", 1), ("decode", 2)])
def test_masks(kind, config, splits):
    rng = np.random.default_rng(5)
    mask = _masks(rng, 2, 4, 11, 200)[kind]
    dtype = "bfloat16" if kind == "bfloat16" else "float16"
    check_forward(Problem(dtype, 2, 4, 2, 11, 200, 64, seed=5, mask=mask), config=config, splits=splits)


@pytest.mark.parametrize("window", [(3, 2), (0, 0), (5, -1), (-1, 4), (INT32_MAX, INT32_MAX), (INT32_MAX, 0),
                                    (0, INT32_MAX), (INT32_MAX - 1, 2 ** 40)])
@pytest.mark.parametrize("config,splits", [("prefill", 1), ("decode", 3)])
def test_windows(window, config, splits):
    check_forward(Problem("float16", 1, 2, 1, 20, 300, 32, seed=6, window=window), config=config, splits=splits)
    check_forward(Problem("bfloat16", 1, 2, 1, 20, 300, 32, seed=6, window=window, causal=True), config=config,
                  splits=splits)


@pytest.mark.parametrize("kw", [dict(softcap=5.0), dict(scale=-0.3), dict(scale=0.0), dict(softcap=2.0, scale=0.9)])
@pytest.mark.parametrize("config,splits", [("prefill", 1), ("decode", 2)])
def test_softcap_and_scales(kw, config, splits):
    check_forward(Problem("bfloat16", 1, 2, 2, 15, 77, 96, seed=7, causal=True, **kw), config=config, splits=splits)


@pytest.mark.parametrize("config,splits", [("prefill", 1), ("decode", 1), ("decode", 4)])
def test_rows_with_no_key_give_zeros_and_minus_inf_lse(config, splits):
    # causal with Lq > Lk: the first Lq - Lk queries see no key at all
    out, lse = check_forward(Problem("float16", 1, 2, 1, 40, 30, 64, seed=8, causal=True), config=config,
                             splits=splits)
    assert (out[:, :, :10] == 0).all() and np.isneginf(lse[:, :, :10]).all()
    assert np.isfinite(lse[:, :, 10:]).all()


@pytest.mark.parametrize("config,splits", [("prefill", 1), ("decode", 1), ("decode", 3)])
def test_nan_propagates(config, splits):
    p = Problem("float16", 1, 2, 1, 9, 300, 32, seed=9)
    p.dev[0][0, 1, 4, 7] = np.nan  # one query row
    p.dev[1][0, 0, 298, 3] = np.nan  # one key: the rows that see it (causal: the last two)
    p.kw["causal"] = True
    out, lse = check_forward(p, config=config, splits=splits)
    assert np.isnan(out[0, 1, 4]).all() and np.isnan(lse[0, 1, 4])
    assert np.isnan(lse[0, :, 7:]).all() and np.isfinite(lse[0, 0, :7]).all()


@pytest.mark.parametrize("layout", ["blhd", "sliced"])
def test_strided_inputs(layout):
    rng = np.random.default_rng(10)
    p = Problem("float16", 2, 4, 2, 13, 150, 64, seed=10, causal=True)
    if layout == "blhd":  # stored [B, L, H, D], passed as the [B, H, L, D] view
        p.dev = [np.ascontiguousarray(x.swapaxes(1, 2)).swapaxes(1, 2) for x in p.dev]
    else:  # every other head / key row of a bigger tensor
        big = [np.repeat(np.repeat(x, 2, axis=1), 2, axis=2) for x in p.dev]
        p.dev = [b[:, ::2, ::2] for b in big]
    assert not p.dev[0].flags.c_contiguous
    check_forward(p, config="prefill", splits=1)
    check_forward(p, config="decode", splits=2)
    check_backward(p)


# -- determinism: no races, bit-identical results --------------------------------------------------
def test_bit_identical_across_runs_schedules_and_workers():
    p = Problem("bfloat16", 1, 4, 2, 21, 260, 64, seed=13, causal=True)
    out, lse = attention.forward(*p.dev, dtype=p.dtype, causal=True, config="decode", splits=2)
    dout = attention._as_dtype(np.random.default_rng(1).standard_normal(out.shape).astype(np.float32), p.dtype)
    base = None
    for schedule, workers, seed in [("forward", 1, 0), ("forward", 4, 0), ("reverse", 2, 0), ("random", 3, 1),
                                    ("random", 1, 2)]:
        with emulator_options(schedule=schedule, workers=workers, seed=seed):
            f = attention.forward(*p.dev, dtype=p.dtype, causal=True, config="decode", splits=2)
            g = attention.backward(*p.dev, out, lse, dout, dtype=p.dtype, causal=True, deterministic=True)
        got = [x.view(np.uint8) for x in (*f, *g)]
        if base is None:
            base = got
        for a, b in zip(base, got):
            np.testing.assert_array_equal(a, b, err_msg=f"{schedule} {workers} workers")


# -- the longer matrix -------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", HEAD_DIMS)
@pytest.mark.parametrize("L", [113, 203])
def test_slow_matrix(dtype, D, L):
    rng = np.random.default_rng(D + L)
    Lk = L + 140
    mask = _masks(rng, 1, 4, L, Lk)["float32" if D % 64 else "bool"]
    for kw in (dict(causal=True), dict(window=(17, 9)), dict(mask=mask, softcap=4.0)):
        p = Problem(dtype, 1, 4, 2, L, Lk, D, seed=L, **kw)
        for config, splits in (("prefill", 1), ("decode", 1), ("decode", 3)):
            check_forward(p, config=config, splits=splits)
