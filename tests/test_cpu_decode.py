"""The `cpu` backend's decode kernel (row blocks of at most 8 query rows of one kv head: the GQA
group at Lq <= 8, head dim across the vector lanes; cpu_bridge/decode.h) against the float64
reference, by the SPEC criterion. The kernel has an AVX-512 (16-lane) and an AVX2 (8-lane) form:
every test runs on the ISA `auto` picks and on AVX2 forced with set_isa (the environment's
MLX_ATTN_CPU_ISA=avx2 in a child process, once); the portable ISA takes the row-lane kernels
(fwd.h) instead, which tests/test_cpu_forward.py covers."""
from __future__ import annotations

import numpy as np
import pytest

from cpu_helpers import (HAVE_TORCH, assert_close, check_dense, kinds, make, native_or_skip, rand,
                         run_both, run_child)
from contract.cases import DECODE_FEATURES, DECODE_SHAPES
from mlx_attn import flash_attention, flash_attention_varlen
from mlx_attn.reference import reference, reference_varlen


@pytest.fixture(scope="module")
def native():
    return native_or_skip()


pytestmark = pytest.mark.usefixtures("native")


@pytest.fixture(params=["auto", "avx2"])
def isa(request, native):
    """The decode kernel of each width: AVX-512 where `auto` has it, and AVX2 forced."""
    if request.param != "auto":
        try:
            native.set_isa(request.param)
        except ValueError:
            pytest.skip(f"{request.param} not supported on this CPU")
    try:
        yield request.param
    finally:
        native.set_isa("auto")


def forced_only_here(kind, isa):
    """set_isa reaches the numpy / torch module; MLX arrays run in _mlx_primitive, which keeps
    its own choice (the environment's), so they are run once, under `auto`."""
    if kind == "mlx" and isa != "auto":
        pytest.skip("set_isa does not reach the MLX primitive")

# rows per block G * Lq in 1..8, odd head dims, Dv != D, key counts that end mid-vector and
# mid-chunk, and long ones that split over threads (declared in tests/contract/cases.py)
SHAPES, FEATURES = DECODE_SHAPES, DECODE_FEATURES


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("feat", FEATURES, ids=lambda f: "-".join(f) or "plain")
def test_decode_float32(isa, shape, feat):
    check_dense("numpy", "float32", shape, **feat)


@pytest.mark.parametrize("kind", kinds())
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[2], SHAPES[5]],
                         ids=lambda s: "x".join(map(str, s)))
def test_decode_half_precision(isa, kind, dtype, shape):
    forced_only_here(kind, isa)
    check_dense(kind, dtype, shape, causal=True)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_decode_strided_inputs(isa):
    """blhd layout, and a K whose head dim is not contiguous (packed per chunk)."""
    import torch
    check_dense("torch", "float32", (2, 8, 2, 1, 300, 64, 64), layout="blhd", window=(40, 0))
    rng = np.random.default_rng(3)
    q = torch.from_numpy(rand(rng, 1, 8, 1, 48))
    k = torch.from_numpy(rand(rng, 1, 2, 333, 96))[..., ::2]
    v = torch.from_numpy(rand(rng, 1, 333, 2, 48)).transpose(1, 2)
    for dtype in (torch.float32, torch.bfloat16):
        args = [x.to(dtype) for x in (q, k, v)]
        (out, lse), (mout, mlse) = run_both(*args, softcap=3.0)
        ref_out, ref_lse = reference(*args, softcap=3.0)
        assert_close(out, ref_out, mout)
        assert_close(lse, ref_lse, mlse, "lse")


@pytest.mark.parametrize("kind", kinds())
def test_decode_masks(isa, kind):
    """bool and additive masks, broadcast over heads or per head, with a fully removed row."""
    forced_only_here(kind, isa)
    rng = np.random.default_rng(5)
    keep = rng.random((1, 1, 1, 150)) > 0.3
    check_dense(kind, "float32", (1, 8, 2, 1, 150, 64, 64), mask=keep)
    check_dense(kind, "float32", (1, 8, 2, 1, 150, 72, 72), mask=np.where(keep, 0.5, -np.inf))
    per_head = rng.random((2, 8, 3, 97)) > 0.5
    per_head[1, 5, 2] = False
    check_dense(kind, "float32", (2, 8, 4, 3, 97, 40, 40), mask=per_head, causal=True)
    check_dense(kind, "float16", (2, 8, 4, 3, 97, 40, 40),
                mask=rng.standard_normal((1, 8, 1, 97)).astype(np.float32))


@pytest.mark.parametrize("kind", kinds())
def test_decode_varlen(isa, kind):
    """Sequences of 1-2 query rows (one empty, one without keys) over packed keys."""
    forced_only_here(kind, isa)
    rng = np.random.default_rng(6)
    cu_q = np.array([0, 1, 1, 3, 5], dtype=np.int32)
    cu_k = np.array([0, 90, 100, 100, 777], dtype=np.int32)
    q, k, v = rand(rng, 5, 8, 64), rand(rng, 777, 2, 64), rand(rng, 777, 2, 64)
    args = [make(kind, "float32", x) for x in (q, k, v)] + \
        [make(kind, "int32", c) for c in (cu_q, cu_k)] + [2, 677]
    out, lse = flash_attention_varlen(*args, backend="cpu", return_lse=True, window=(100, 0))
    mout, mlse = flash_attention_varlen(*args, backend="math", return_lse=True, window=(100, 0))
    ref_out, ref_lse = reference_varlen(q, k, v, cu_q, cu_k, window=(100, 0))
    assert_close(out, ref_out, mout)
    assert_close(lse, ref_lse, mlse, "lse")


def test_decode_nonfinite_and_empty_rows(isa):
    rng = np.random.default_rng(7)
    q, k, v = rand(rng, 1, 4, 1, 40), rand(rng, 1, 1, 200, 40), rand(rng, 1, 1, 200, 40)
    k[0, 0, 130, 3] = np.nan  # met in the third chunk of keys
    out = flash_attention(q, k, v, backend="cpu")
    assert np.isnan(out).all()
    # Lq > Lk with causal: the first rows see no key (zeros, lse -inf); the rest see some
    q = rand(rng, 1, 4, 2, 40)
    out, lse = flash_attention(q, k[:, :, :1].copy() * 0 + 1, v[:, :, :1].copy(), backend="cpu",
                               causal=True, return_lse=True)
    assert not out[:, :, 0].any() and np.isneginf(lse[:, :, 0]).all()
    assert np.isfinite(out[:, :, 1]).all() and np.isfinite(lse[:, :, 1]).all()


# Head dims ending mid-vector for 8 and 16 lanes (masked loads, the scalar tail of the in-register
# fp16 / bf16 conversion) and at whole vectors; key counts ending mid-vector, at a 64-key chunk
# and one past it; GQA groups filling 1 to 8 rows (each e-tile width of P V); long ones split
# over the threads and merged.
ODD_SHAPES = [
    (1, 8, 1, 1, 129, 37, 19),
    (2, 6, 2, 2, 64, 13, 67),
    (1, 5, 1, 1, 191, 3, 5),
    (1, 4, 2, 4, 128, 24, 8),
    (2, 7, 7, 1, 65, 129, 33),
    (1, 6, 1, 1, 1, 16, 48),
    (1, 8, 2, 1, 3001, 65, 65),
]
ODD_FEATURES = [{}, {"causal": True}, {"window": (40, 2), "softcap": 3.0}]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("feat", ODD_FEATURES, ids=lambda f: "-".join(f) or "plain")
def test_decode_odd_sizes(isa, dtype, shape, feat):
    kind = "torch" if dtype == "bfloat16" else "numpy"
    if kind == "torch" and not HAVE_TORCH:
        pytest.skip("torch not installed")
    check_dense(kind, dtype, shape, seed=sum(shape), **feat)


def test_decode_isa_from_environment(tmp_path, native):
    """MLX_ATTN_CPU_ISA=avx2, read at the first call, selects the AVX2 decode kernel."""
    try:
        native.set_isa("avx2")
    except ValueError:
        pytest.skip("avx2 not supported on this CPU")
    finally:
        native.set_isa("auto")
    rng = np.random.default_rng(11)
    q, k, v = rand(rng, 1, 8, 1, 45), rand(rng, 1, 2, 700, 45), rand(rng, 1, 2, 700, 45)
    for name, x in (("q", q), ("k", k), ("v", v)):
        np.save(tmp_path / f"{name}.npy", x)
    code = f"""
import numpy as np
from mlx_attn import flash_attention
from mlx_attn.backends.cpu.status import native
d = {str(tmp_path)!r}
q, k, v = (np.load(f"{{d}}/{{n}}.npy") for n in "qkv")
out, lse = flash_attention(q, k, v, backend="cpu", return_lse=True, softcap=5.0)
np.save(f"{{d}}/out.npy", out); np.save(f"{{d}}/lse.npy", lse)
print(native().isa())
"""
    done = run_child(code, MLX_ATTN_CPU_ISA="avx2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "avx2"
    ref_out, ref_lse = reference(q, k, v, softcap=5.0)
    mout, mlse = flash_attention(q, k, v, backend="math", return_lse=True, softcap=5.0)
    assert_close(np.load(tmp_path / "out.npy"), ref_out, mout)
    assert_close(np.load(tmp_path / "lse.npy"), ref_lse, mlse, "lse")
