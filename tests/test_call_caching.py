"""The per-signature caches of the front end (validate._signature, dispatch plans) and the torch
fast path: a repeated call is cheaper, never less checked. Every check still runs on the second
call of a signature; decisions that depend on values (scale, strides) are made per call."""
import numpy as np
import pytest

from mlx_attn import dispatch, explain, flash_attention, validate
from mlx_attn.backends.cpu.backend import MAX_SCALE
from mlx_attn.reference import passes, reference



def rand(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def _cpu_ready():
    from mlx_attn.backends import by_name
    if not by_name("cpu").available:
        pytest.skip("cpu backend not built: " + "; ".join(by_name("cpu").availability_reasons))


def _qkv(rng, B=1, Hq=4, Hkv=2, Lq=7, Lk=9, D=16):
    return (rand(rng, B, Hq, Lq, D), rand(rng, B, Hkv, Lk, D), rand(rng, B, Hkv, Lk, D))


BAD_SHAPES = [  # (q, k, v shapes, the argument the error must name)
    (((1, 4, 7, 16), (2, 2, 9, 16), (2, 2, 9, 16)), "batch"),
    (((1, 4, 7, 16), (1, 2, 9, 8), (1, 2, 9, 16)), "head dim"),
    (((1, 4, 7, 16), (1, 3, 9, 16), (1, 3, 9, 16)), "multiple"),
    (((1, 4, 7, 16), (1, 2, 9, 16), (1, 2, 8, 16)), "keys"),
    (((1, 4, 7, 0), (1, 2, 9, 0), (1, 2, 9, 16)), "head dim"),
    (((4, 7, 16), (1, 2, 9, 16), (1, 2, 9, 16)), "rank"),
]


@pytest.mark.parametrize("kind", ["numpy", "torch", "mlx"])
@pytest.mark.parametrize("shapes,needle", BAD_SHAPES)
def test_shapes_checked_on_every_call(kind, shapes, needle):
    """A signature seen before (same kind, dtype, device) with good shapes: bad shapes still raise."""
    convert = _converter(kind)
    rng = np.random.default_rng(0)
    good = [convert(x) for x in _qkv(rng)]
    for _ in range(2):
        flash_attention(*good)
    bad = [convert(np.zeros(s, np.float32)) for s in shapes]
    with pytest.raises(ValueError, match=needle):
        flash_attention(*bad)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_dtype_change_is_a_new_signature(kind):
    convert = _converter(kind)
    q, k, v = (convert(x) for x in _qkv(np.random.default_rng(1)))
    flash_attention(q, k, v)
    with pytest.raises(TypeError, match="k has dtype"):
        flash_attention(q, _astype(k, "float64"), v)
    with pytest.raises(TypeError, match="int32"):
        flash_attention(_astype(q, "int32"), k, v)


def test_value_dependent_reasons_are_per_call():
    """The cpu backend declines scales beyond 2^32 per call, not per cached signature."""
    _cpu_ready()
    q, k, v = _qkv(np.random.default_rng(2))
    assert "cpu    chosen" in explain(q, k, v)
    for _ in range(2):
        flash_attention(q, k, v, backend="cpu")
    huge = MAX_SCALE * 4
    assert "math   chosen" in explain(q, k, v, scale=huge)
    call = validate.check_dense(q, k, v, scale=huge, causal=False, mask=None, window=None,
                                softcap=None, return_lse=False, layout="bhld")
    assert dispatch.choose(call).name == "math"
    with pytest.raises(dispatch.BackendUnavailableError, match="beyond"):
        flash_attention(q, k, v, scale=huge, backend="cpu")
    # and back: the cached plan still serves an ordinary scale with cpu
    ordinary = validate.check_dense(q, k, v, scale=0.5, causal=False, mask=None, window=None,
                                    softcap=None, return_lse=False, layout="bhld")
    assert dispatch.choose(ordinary).name == "cpu"


def test_big_endian_after_native_order():
    q, k, v = _qkv(np.random.default_rng(3))
    want, _ = reference(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64))
    native_out = flash_attention(q, k, v)
    swapped = [x.astype(x.dtype.newbyteorder(">")) for x in (q, k, v)]
    out = flash_attention(*swapped)
    assert np.abs(out - want).max() < 1e-5
    assert np.abs(out - native_out).max() < 1e-6


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("L", [1, 7, 64, 257])
def test_torch_fast_path_matches_the_op(grad, L):
    """The direct call (no autograd, no tracing) and the registered op give the same numbers."""
    _cpu_ready()
    torch = pytest.importorskip("torch")
    from mlx_attn.backends.cpu import torch_op
    rng = np.random.default_rng(L)
    q, k, v = (torch.from_numpy(x) for x in _qkv(rng, Lq=L, Lk=L + 3, D=40))
    call = validate.check_dense(q, k, v, scale=None, causal=True, mask=None, window=None,
                                softcap=None, return_lse=True, layout="bhld")
    direct, direct_lse = torch_op._direct_dense(call)
    via_op, op_lse = torch_op.torch_ops()(q, k, v, None, None, None, call.scale, 0.0, -1, -1,
                                          True, 0, False)
    assert torch.equal(direct, via_op) and torch.equal(direct_lse, op_lse)
    if grad:
        qg = q.clone().requires_grad_(True)
        out = flash_attention(qg, k, v, causal=True)
        assert torch.equal(out.detach(), direct)
        out.sum().backward()
        assert qg.grad is not None and torch.isfinite(qg.grad).all()


def test_torch_func_vmap_goes_through_the_op():
    """torch.func wraps tensors without changing their type: the fast path must not take them."""
    _cpu_ready()
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    q, k, v = (torch.from_numpy(x) for x in _qkv(rng))
    qs = torch.stack([q, 2 * q, -q])
    out = torch.func.vmap(lambda x: flash_attention(x, k, v, backend="cpu"))(qs)
    for i in range(3):
        want, _ = reference(*(t.double().numpy() for t in (qs[i], k, v)))
        math_err = np.abs(flash_attention(qs[i], k, v, backend="math").numpy() - want).max()
        assert passes(np.abs(out[i].numpy() - want).max(), math_err)


def _converter(kind):
    if kind == "numpy":
        return lambda x: x
    if kind == "torch":
        torch = pytest.importorskip("torch")
        return torch.from_numpy
    mx = pytest.importorskip("mlx.core")
    return mx.array


def _astype(x, dtype):
    if isinstance(x, np.ndarray):
        return x.astype(dtype)
    import torch
    return x.to(getattr(torch, dtype))
