"""The whole Python Metal path on Linux: the `metal` backend with MLX's metal_kernel replaced
by the project's MSL emulator (emulators/msl_emulator), checked against the float64 reference.

Every kernel launch runs under the emulator's hazard checks (divergent barriers and SIMD
functions, out-of-bounds device accesses, threadgroup memory over 32 KB): a hazard raises
MetalEmulatorError and fails the test. Compiled variants are cached by the emulator, and the
matrix reuses a few (dtype, head dim, mask kind) variants so the file runs in a few minutes.
"""
from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from mlx_attn import explain, flash_attention  # noqa: E402
from mlx_attn.backends import by_name  # noqa: E402
from mlx_attn.backends.metal import MetalBackend  # noqa: E402
from msl_emulator import emulator_options, metal_kernel  # noqa: E402
from test_metal_cases import (DENSE, VARLEN, Case, check_forward, check_grad,  # noqa: E402
                              check_varlen, params)


@pytest.fixture(scope="module", autouse=True)
def emulated_metal():
    """Point the registered `metal` backend at the emulator's kernel factory."""
    backend = by_name("metal")
    saved = dict(backend.__dict__)
    backend.kernel_factory = metal_kernel
    for cached in ("availability_reasons", "kernels"):
        backend.__dict__.pop(cached, None)
    assert backend.available
    yield backend
    backend.__dict__.clear()
    backend.__dict__.update(saved)


@pytest.mark.parametrize("case", params(DENSE))
def test_forward_matches_reference(case):
    check_forward(case)


@pytest.mark.parametrize("case", params([c for c in DENSE if c.grad]))
def test_gradients_match_reference(case):
    check_grad(case)


@pytest.mark.parametrize("name", list(VARLEN))
def test_varlen_matches_reference(name):
    check_varlen(name)


@pytest.mark.parametrize("schedule", ["reverse", "random"])
def test_other_fiber_schedules_give_the_same_answers(schedule):
    """A missing barrier shows up as a different result when threads run in another order."""
    case = DENSE[1]
    with emulator_options(schedule=schedule, seed=7):
        check_forward(case)
        check_grad(case)


def test_dead_rows_give_zeros_and_minus_inf_lse():
    case = next(c for c in DENSE if c.name == "dead_rows_causal")
    out, lse = check_forward(case)
    lse = np.array(lse)
    assert np.isneginf(lse[:, :, ::3]).all()          # every third row was masked out
    assert np.all(np.array(out.astype(mx.float32))[:, :, ::3] == 0)


def test_auto_chooses_metal_and_grad_composes_with_other_ops():
    rng = np.random.default_rng(5)
    q, k, v = (mx.array(rng.standard_normal((1, 2, 33, 64)).astype(np.float16)) for _ in range(3))
    assert "metal  chosen" in explain(q, k, v, causal=True)

    def loss(x):
        return (flash_attention(mx.tanh(x), k, v, causal=True).astype(mx.float32) ** 2).sum()

    val, g = mx.value_and_grad(loss)(q)
    _, vjp = mx.vjp(lambda x: flash_attention(mx.tanh(x), k, v, causal=True), [q],
                    [2 * flash_attention(mx.tanh(q), k, v, causal=True)])
    assert np.allclose(np.array(g, dtype=np.float32), np.array(vjp[0], dtype=np.float32),
                       atol=1e-3)


def test_compile_needs_a_real_gpu():
    pytest.skip("mx.compile traces without data and forbids eval inside the trace, while the "
                "emulator must read the inputs on the host; mx.compile is covered by "
                "test_metal_device.py on a Mac")


def test_unsupported_inputs_give_reasons():
    backend = by_name("metal")
    q = mx.zeros((1, 2, 5, 40))
    text = explain(q, q, q)
    assert "head dim D=40 not supported" in text and "metal" in text
    x = mx.zeros((1, 2, 5, 64), dtype=mx.float64)
    assert "dtype float64" in explain(x, x, x)
    assert backend.name == "metal"


def test_real_backend_explains_why_it_cannot_run_here():
    if mx.metal.is_available():
        pytest.skip("this machine has a Metal GPU")
    reasons = MetalBackend().availability_reasons
    assert reasons and "Metal" in reasons[0]


def test_empty_inputs():
    q = mx.zeros((1, 2, 0, 64), dtype=mx.float16)
    k = mx.zeros((1, 2, 5, 64), dtype=mx.float16)
    out, lse = flash_attention(q, k, k, return_lse=True, backend="metal")
    assert out.shape == (1, 2, 0, 64) and lse.shape == (1, 2, 0)
    out = flash_attention(k, q, q, backend="metal")
    assert out.shape == (1, 2, 5, 64) and not np.any(np.array(out))


def test_case_ids_are_unique():
    names = [c.name for c in DENSE] + list(VARLEN)
    assert len(names) == len(set(names)) and all(isinstance(c, Case) for c in DENSE)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_block_table_fits_threadgroup_memory(dtype):
    from mlx_attn.backends.metal import blocks
    size = {"float32": 4, "float16": 2, "bfloat16": 2}[dtype]
    for D in blocks.HEAD_DIMS:
        for Dv in blocks.HEAD_DIMS:
            rows = blocks.tile_rows(D, Dv, size)
            used = rows * (D + Dv + 2 * blocks.PAD) * size + 8 * rows
            assert used <= blocks.TILE_BUDGET <= 32 * 1024
            for nr in (1, 8):
                assert blocks.decode_simdgroups(nr, Dv) * nr * (Dv + 2) * 4 <= blocks.TILE_BUDGET


try:
    from hypothesis import HealthCheck, given, settings, strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:
    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(Lq=st.integers(1, 40), Lk=st.integers(1, 40), group=st.sampled_from([1, 2]),
           causal=st.booleans(), left=st.integers(-1, 12), right=st.integers(-1, 12),
           softcap=st.sampled_from([None, 4.0]), layout=st.sampled_from(["bhld", "blhd"]))
    def test_generated_shapes_and_features(Lq, Lk, group, causal, left, right, softcap, layout):
        """fp16 D=64 (variants the matrix already compiled) at generated sizes and options."""
        opts = dict(causal=causal)
        if left >= 0 or right >= 0:
            opts["window"] = (left, right)
        if softcap:
            opts["softcap"] = softcap
        check_forward(Case("generated", (1, 2 * group, 2, Lq, Lk, 64, 64), layout=layout,
                           opts=opts))
