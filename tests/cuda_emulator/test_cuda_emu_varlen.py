"""The fused varlen forward and backward (one launch, the kernels read cu_seqlens) under the emulator, against
the float64 reference per sequence with the SPEC criterion: ragged and empty sequences, Lq != Lk,
causal bottom-right per sequence, window, softcap, GQA, head-dim buckets, lse, isolation between
sequences, the shared-memory epilogue with strided out; gradients in both dQ modes.  The longer
matrix is marked slow."""
import numpy as np
import pytest

from cuda_emu_varlen_cases import VarlenProblem, check_backward_varlen, check_forward_varlen
from cuda_emulator import attention, emulator_options, varlen

# query / key lengths per sequence: empty ones (lq = 0, lk = 0, both), Lq != Lk both ways
RAGGED_Q = [5, 0, 17, 3, 0, 9, 12]
RAGGED_K = [9, 4, 0, 30, 0, 9, 2]
CONFIGS = ["prefill", "decode"]


@pytest.fixture(scope="module", autouse=True)
def libraries():
    import concurrent.futures
    import os
    with concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda a: attention.library(*a),
                      [("float16", 64), ("bfloat16", 64), ("float16", 32), ("bfloat16", 128)]))


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_ragged_sequences_with_empty_ones_causal_gqa(dtype, config):
    p = VarlenProblem(dtype, RAGGED_Q, RAGGED_K, 4, 2, 64, seed=1, causal=True)
    out, lse = check_forward_varlen(p, config=config)
    # SPEC: a sequence without keys gives zeros and lse -inf; without queries, nothing
    q0, q1 = p.cu_q[2:4]
    assert np.all(attention.to_float(out[q0:q1], dtype) == 0) and np.all(lse[:, q0:q1] == -np.inf)


@pytest.mark.parametrize("kw", [dict(), dict(window=(3, 2)), dict(window=(0, 4), causal=False),
                                dict(softcap=2.5, causal=True), dict(scale=0.7, window=5)],
                         ids=["plain", "window", "window_right", "softcap_causal", "scale_window"])
def test_features_per_sequence(kw):
    check_forward_varlen(VarlenProblem("float16", RAGGED_Q, RAGGED_K, 6, 3, 64, seed=2, **kw),
                         config="prefill")


def test_causal_is_bottom_right_per_sequence():
    # Lq > Lk: the first Lq - Lk rows of each such sequence see no key (zeros, lse -inf)
    p = VarlenProblem("bfloat16", [10, 4, 7], [3, 9, 7], 2, 2, 64, seed=3, causal=True)
    out, lse = check_forward_varlen(p, config="decode")
    assert np.all(lse[:, :7] == -np.inf) and np.all(np.isfinite(lse[:, 7:]))


@pytest.mark.parametrize("dtype,D,Dv", [("float16", 32, 32), ("bfloat16", 128, 128),
                                        ("float16", 40, 24)])
def test_head_dim_buckets(dtype, D, Dv):
    p = VarlenProblem(dtype, [7, 0, 20], [11, 5, 20], 4, 1, D, Dv, seed=4, causal=True)
    for config in CONFIGS:
        check_forward_varlen(p, config=config)


def test_long_sequence_beside_short_ones():
    """One sequence spans several 128-row query blocks; the CTAs of the short ones past their
    rows exit at once (the grid is sized by the longest)."""
    p = VarlenProblem("float16", [1, 150, 2, 0], [70, 140, 3, 5], 2, 1, 64, seed=5, causal=True)
    check_forward_varlen(p, config="prefill")


def test_nothing_attends_across_sequences():
    p = VarlenProblem("float16", [6, 9, 4], [8, 12, 5], 4, 2, 64, seed=6)
    base_out, base_lse = p.run(config="prefill")
    k0, k1 = p.cu_k[1:3]
    for x in p.dev[1:]:  # perturb sequence 1's keys and values only
        x[k0:k1] = attention._as_dtype(p.rng.standard_normal(x[k0:k1].shape), "float16")
    out, lse = p.run(config="prefill")
    q0, q1 = p.cu_q[1:3]
    others = np.r_[0:q0, q1:p.cu_q[-1]]
    np.testing.assert_array_equal(out[others], base_out[others])
    np.testing.assert_array_equal(lse[:, others], base_lse[:, others])
    assert not np.array_equal(out[q0:q1], base_out[q0:q1])


@pytest.mark.parametrize("dtype,D,Dv", [("float16", 64, 40), ("bfloat16", 128, 128)])
def test_staged_epilogue_strided_out_and_dv_below_bucket(dtype, D, Dv):
    """out rows wider than Dv (row stride Hq * (Dv + 16)): the 16-byte stores write Dv columns
    and no byte of the padding (which starts as NaN)."""
    p = VarlenProblem(dtype, [13, 0, 33], [13, 6, 40], 4, 2, D, Dv, seed=7, causal=True)
    check_forward_varlen(p, config="prefill", out_row_pad=16)
    check_forward_varlen(p, config="decode", out_row_pad=16)


def test_results_do_not_depend_on_the_schedule():
    p = VarlenProblem("bfloat16", RAGGED_Q, RAGGED_K, 4, 2, 64, seed=8, causal=True)
    base = p.run(config="prefill")
    with emulator_options(schedule="reverse"):
        again = p.run(config="prefill")
    for a, b in zip(base, again):
        np.testing.assert_array_equal(a, b)


def test_dense_problem_as_one_sequence_matches_the_dense_kernel():
    """A single sequence is the dense problem with B = 1: the same bits as the dense launch."""
    p = VarlenProblem("float16", [37], [45], 4, 2, 64, seed=9, causal=True)
    out, lse = p.run(config="prefill")
    q, k, v = (x.swapaxes(0, 1)[None] for x in p.dev)
    d_out, d_lse = attention.forward(q, k, v, causal=True, config="prefill", splits=1)
    np.testing.assert_array_equal(out, d_out[0].swapaxes(0, 1))
    np.testing.assert_array_equal(lse, d_lse[0])


def test_planner_never_splits_and_prefers_64_row_tiles_for_short_sequences():
    assert varlen.plan_shapes(64, 32, 8, 1, 4000, 128, 128) == "decode"      # decode batch
    assert varlen.plan_shapes(2, 8, 8, 100, 100, 64, 64) == "decode"         # few CTAs
    assert varlen.plan_shapes(64, 16, 16, 2048, 2048, 64, 64) == "prefill"   # many long rows


def test_bad_cu_seqlens_are_refused():
    p = VarlenProblem("float16", [3, 4], [3, 4], 2, 2, 64)
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        varlen.forward_varlen(*p.dev, np.array([0, 5, 6], np.int32), p.cu_k, 5, 4)
    with pytest.raises(ValueError, match="cu_seqlens_k"):
        varlen.forward_varlen(*p.dev, p.cu_q, p.cu_k.astype(np.int64), 4, 4)


# -- backward (fused: the kernels read cu_seqlens) ----------------------------------------------
@pytest.mark.parametrize("deterministic", [False, True])
def test_backward_ragged_with_empty_sequences(deterministic):
    p = VarlenProblem("float16", RAGGED_Q, RAGGED_K, 4, 2, 64, seed=10, causal=True)
    check_backward_varlen(p, with_dlse=True, deterministic=deterministic)


def test_backward_window_softcap_bf16():
    p = VarlenProblem("bfloat16", [7, 0, 20], [11, 5, 20], 4, 1, 128, seed=11, window=(4, 1),
                      softcap=3.0)
    check_backward_varlen(p)


# -- the longer matrix ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("D", [32, 64, 96, 128, 192, 256])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_every_head_dim_slow(dtype, D, config):
    p = VarlenProblem(dtype, RAGGED_Q, RAGGED_K, 6, 2, D, seed=D, causal=D % 64 == 0,
                      window=(7, 3) if D in (96, 192) else None)
    check_forward_varlen(p, config=config, out_row_pad=8)


@pytest.mark.slow
@pytest.mark.parametrize("D", [64, 128])
def test_backward_every_config_slow(D):
    p = VarlenProblem("bfloat16", RAGGED_Q, RAGGED_K, 4, 2, D, seed=D + 1, causal=True)
    check_backward_varlen(p, with_dlse=True)
