"""The Metal backend on a real Apple GPU: the emulated matrix again (test_metal_cases.py), every
head dim and dtype, and mx.compile. Skipped, with the reason, on machines without Metal.

Run on a Mac with:  python -m pytest tests/test_metal_device.py -q
"""
from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

if not mx.metal.is_available():
    pytest.skip("no Metal GPU here (mx.metal.is_available() is False); the same matrix runs "
                "under the MSL emulator in test_metal_emulated.py", allow_module_level=True)

from mlx_attn import flash_attention  # noqa: E402
from mlx_attn.backends import by_name  # noqa: E402
from test_metal_cases import (DENSE, VARLEN, Case, check_forward, check_grad,  # noqa: E402
                              check_varlen, params)

# head dims and dtypes the emulated run leaves out (it keeps a few to stay fast)
EXTRA = [Case(f"d{d}_{dt}", (2, 4, 2, 113, 203, d, d), dt, opts=dict(causal=True))
         for d in (64, 72, 80, 96, 128, 192, 256) for dt in ("float16", "bfloat16", "float32")]


@pytest.fixture(scope="module", autouse=True)
def on_gpu():
    saved = mx.default_device()
    mx.set_default_device(mx.gpu)
    backend = by_name("metal")
    assert backend.available, backend.availability_reasons
    yield
    mx.set_default_device(saved)


@pytest.mark.parametrize("case", params(DENSE + EXTRA))
def test_forward_matches_reference(case):
    check_forward(case)


@pytest.mark.parametrize("case", params([c for c in DENSE + EXTRA if c.grad]))
def test_gradients_match_reference(case):
    check_grad(case)


@pytest.mark.parametrize("name", list(VARLEN))
def test_varlen_matches_reference(name):
    check_varlen(name)


def test_compile_matches_eager():
    rng = np.random.default_rng(2)
    q, k, v = (mx.array(rng.standard_normal((1, 4, 64, 64)).astype(np.float16)) for _ in range(3))

    def loss(a, b, c):
        return flash_attention(a, b, c, causal=True, backend="metal").astype(mx.float32).sum()

    eager = mx.grad(loss, argnums=(0, 1, 2))(q, k, v)
    compiled = mx.compile(mx.grad(loss, argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(eager, compiled):
        assert np.allclose(np.array(a.astype(mx.float32)), np.array(b.astype(mx.float32)),
                           atol=1e-3)


def test_long_sequence_backward_memory_is_linear():
    """At L=4096 the unfused backward holds B*H*L*L floats (~1 GB here); ours O(L*D)."""
    B, H, L, D = 1, 8, 4096, 64
    q, k, v = (mx.random.normal((B, H, L, D)).astype(mx.float16) for _ in range(3))
    mx.eval(q, k, v)
    mx.reset_peak_memory()
    before = mx.get_active_memory()
    g = mx.grad(lambda a: flash_attention(a, k, v, causal=True, backend="metal")
                .astype(mx.float32).sum())(q)
    mx.eval(g)
    extra = mx.get_peak_memory() - before
    assert extra < B * H * L * L * 4 / 4, f"peak extra memory {extra / 2**20:.0f} MB"
