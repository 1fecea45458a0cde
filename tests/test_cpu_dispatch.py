"""The `cpu` backend's place in dispatch: chosen by "auto" for numpy, torch CPU and MLX CPU
arrays; clear errors for bad input; and clear `not_supported_reasons` when the extension is not
built, the installed MLX differs from the one it was built against, or mlx is not importable."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from cpu_helpers import (HAVE_MLX, HAVE_TORCH, kinds, make, mlx_ready, native_or_skip, rand,
                         run_child)
from mlx_attn import explain, flash_attention, flash_attention_varlen
from mlx_attn.backends import by_name
from mlx_attn.backends.cpu import status



def dense_call(x):
    from mlx_attn.validate import check_dense
    return check_dense(x, x, x, scale=None, causal=False, mask=None, window=None, softcap=None,
                       return_lse=False, layout="bhld")


@pytest.fixture(scope="module")
def native():
    return native_or_skip()


@pytest.mark.parametrize("kind", kinds())
def test_auto_chooses_cpu(kind, native):
    x = make(kind, "float32", rand(np.random.default_rng(0), 1, 2, 4, 8))
    assert "cpu    chosen" in explain(x, x, x)
    assert "cpu    chosen" in explain(x, x, x, causal=True, return_lse=True, softcap=2.0,
                                      window=(2, 1))
    if kind == "torch":
        assert "cpu    chosen" in explain(x.requires_grad_(), x, x)  # backward is a feature


def test_float64_goes_to_math(native):
    x = rand(np.random.default_rng(0), 1, 2, 4, 8).astype(np.float64)
    text = explain(x, x, x)
    assert "math   chosen" in text and "dtype float64 not supported" in text


@pytest.mark.skipif(not HAVE_MLX, reason="mlx not installed")
def test_mlx_gpu_stream_is_declined(native):
    mlx_ready()
    import mlx.core as mx
    x = mx.zeros((1, 1, 2, 8))
    backend = by_name("cpu")
    call = dense_call(x)
    call.device = "gpu"
    assert any("CPU device" in r for r in backend.not_supported_reasons(call))


BAD = [  # (kwargs builder from q, k, v), what the message must say (naming the argument)
    (lambda q, k, v: dict(q=q[0], k=k, v=v), r"^q must have rank 4"),
    (lambda q, k, v: dict(q=q, k=k[:, :1], v=v), r"\bk has 1\b"),
    (lambda q, k, v: dict(q=q, k=k, v=v[..., :3, :]), r"^v has 3 keys"),
    (lambda q, k, v: dict(q=q[:, :3], k=k, v=v), r"^q has 3 heads.*multiple"),
    (lambda q, k, v: dict(q=q, k=k, v=v, scale=float("nan")), r"^scale"),
    (lambda q, k, v: dict(q=q, k=k, v=v, window=(-2, 0)), r"^window"),
    (lambda q, k, v: dict(q=q, k=k, v=v, softcap=-1.0), r"^softcap"),
    (lambda q, k, v: dict(q=q, k=k, v=v, layout="lbhd"), r"^layout"),
    (lambda q, k, v: dict(q=q, k=k, v=v, mask=q[..., :3]), r"^mask .*not broadcastable"),
]


@pytest.mark.parametrize("kind", kinds())
@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input_names_the_argument(kind, case, native):
    rng = np.random.default_rng(0)
    q, k, v = (make(kind, "float32", rand(rng, 2, 4, 6, 8)) for _ in range(3))
    build, name = BAD[case]
    kw = build(q, k, v)
    with pytest.raises((ValueError, TypeError), match=name):
        flash_attention(kw.pop("q"), kw.pop("k"), kw.pop("v"), backend="cpu", **kw)


@pytest.mark.parametrize("kind", kinds())
def test_bad_dtype_and_mixed_kinds(kind, native):
    rng = np.random.default_rng(0)
    q = make(kind, "float32", rand(rng, 1, 2, 4, 8))
    with pytest.raises(TypeError, match=r"^k has dtype float16"):
        flash_attention(q, make(kind, "float16", rand(rng, 1, 2, 4, 8)), q, backend="cpu")
    with pytest.raises(TypeError, match=r"^q has dtype int32"):
        flash_attention(make(kind, "int32", np.zeros((1, 2, 4, 8))), q, q, backend="cpu")
    if kind != "numpy":
        with pytest.raises(TypeError, match=r"^k must be the same array kind"):
            flash_attention(q, rand(rng, 1, 2, 4, 8), q, backend="cpu")


@pytest.mark.parametrize("kind", kinds())
def test_bad_cu_seqlens(kind, native):
    rng = np.random.default_rng(0)
    q = make(kind, "float32", rand(rng, 10, 2, 8))
    for cu in ([0, 6, 4, 10], [1, 5, 10], [0, 5, 12]):
        cu = make(kind, "int32", np.array(cu, np.int32))
        with pytest.raises(ValueError, match=r"^cu_seqlens_q must"):
            flash_attention_varlen(q, q, q, cu, cu, 10, 10, backend="cpu")


def test_native_kernel_rejects_bad_specs(native):
    """The C++ entry point checks its problem too (a ValueError, never a crash)."""
    null = (0, 0, 0, 0, 0)  # a (data pointer, strides) tuple with no data
    args = dict(dtype=0, B=1, Hq=3, Hkv=2, Lq=1, Lk=1, D=8, Dv=8, scale=1.0, softcap=0.0,
                causal=False, wl=-1, wr=-1, q=null, k=null, v=null, o=null, out_f32=False,
                lse=None, mask=None, mask_kind=0, mask_type=0, cu_q=None, cu_k=None,
                openmp=False)
    with pytest.raises(ValueError, match="Hq must be a multiple"):
        native.forward(**args)
    with pytest.raises(ValueError, match="required"):
        native.forward(**dict(args, Hq=1, Hkv=1))
    with pytest.raises(ValueError):
        native.set_isa("sse1")


def test_version_reason():
    assert status.version_reason("0.32.4", "0.32.4") is None
    reason = status.version_reason("0.32.4", "0.33.0")
    assert "0.32.4" in reason and "0.33.0" in reason
    assert "without the MLX primitive" in status.version_reason("", "0.32.4")


@pytest.mark.skipif(not HAVE_MLX, reason="mlx not installed")
def test_mlx_version_mismatch_falls_back(native, monkeypatch):
    """Another installed MLX: MLX arrays get the reason and `auto` picks math, without loading
    the primitive; numpy is unaffected."""
    mlx_ready()
    import mlx.core as mx
    monkeypatch.setattr(status, "installed_mlx_version", lambda: "9.9.9")
    status.mlx_reasons.cache_clear()
    try:
        x = mx.array(rand(np.random.default_rng(0), 1, 2, 4, 8))
        text = explain(x, x, x)
        assert "math   chosen" in text and "built for mlx" in text and "9.9.9" in text
        with pytest.raises(ValueError, match="9.9.9"):
            flash_attention(x, x, x, backend="cpu")
        np.testing.assert_allclose(np.array(flash_attention(x, x, x)),
                                   flash_attention(np.array(x), np.array(x), np.array(x)),
                                   atol=1e-6)
        assert "not MLX arrays" in by_name("cpu").summary
    finally:
        status.mlx_reasons.cache_clear()


def test_extension_not_built_is_a_reason(monkeypatch):
    from mlx_attn.backends.cpu import CpuBackend

    def missing():
        raise ImportError("No module named 'mlx_attn.backends.cpu._kernel'")
    monkeypatch.setattr(status, "native", missing)
    backend = CpuBackend()
    assert not backend.available
    assert "not built" in backend.availability_reasons[0]
    x = rand(np.random.default_rng(0), 1, 1, 2, 8)
    assert "not built" in backend.not_supported_reasons(dense_call(x))[0]


def _run_without_mlx(code: str) -> str:
    """Run `code` in a fresh interpreter where `import mlx` fails (a torch-only workstation)."""
    prelude = "import sys\nsys.modules['mlx'] = None\nsys.modules['mlx.core'] = None\n"
    done = run_child(prelude + textwrap.dedent(code))
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_works_when_mlx_is_not_importable(native):
    out = _run_without_mlx("""
        import numpy as np, torch
        from mlx_attn import backends, explain, flash_attention
        from mlx_attn.backends.cpu.status import mlx_reasons
        from mlx_attn.reference import reference
        x = np.random.default_rng(0).standard_normal((1, 2, 5, 8)).astype(np.float32)
        ref = reference(x, x, x, causal=True)[0]
        assert np.abs(flash_attention(x, x, x, causal=True, backend="cpu") - ref).max() < 1e-5
        t = torch.from_numpy(x).requires_grad_()
        assert "cpu    chosen" in explain(t, t, t)
        out = flash_attention(t, t, t, causal=True)
        out.sum().backward()
        assert np.abs(out.detach().numpy() - ref).max() < 1e-5 and t.grad is not None
        cpu = [b for b in backends() if b.name == "cpu"][0]
        assert cpu.available, cpu.reasons
        print("REASONS", mlx_reasons())
        print("SUMMARY", cpu.summary)
        assert "mlx" not in sys.modules or sys.modules["mlx"] is None
    """)
    assert "mlx is not importable" in out
    assert "SUMMARY torch CPU tensors and numpy" in out and "not MLX arrays" in out
