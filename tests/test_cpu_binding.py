"""The native kernel's binding (mlx_attn.backends.cpu._kernel.forward / backward): every field of the
problem is a required keyword argument, so a missing, misspelled or extra field, a positional
argument, a value out of range and an array of the wrong rank are TypeErrors naming the field,
never a silent default; arrays are (data pointer, element strides) tuples or numpy arrays read in
place, and both give the reference's result."""
from __future__ import annotations

import numpy as np
import pytest

from cpu_helpers import native_or_skip, rand
from mlx_attn.backends.cpu.strided import numpy_desc, varlen_as_bhld
from mlx_attn.reference import reference, reference_grads, reference_varlen


@pytest.fixture(scope="module")
def native():
    return native_or_skip()


def _desc(a):
    return (a.ctypes.data, *(s // a.itemsize for s in a.strides))


def _problem(rng, B=1, Hq=4, Hkv=2, Lq=5, Lk=7, D=8, Dv=8):
    q, k, v = rand(rng, B, Hq, Lq, D), rand(rng, B, Hkv, Lk, D), rand(rng, B, Hkv, Lk, Dv)
    out = np.full((B, Hq, Lq, Dv), np.nan, np.float32)
    lse = np.full((B, Hq, Lq), np.nan, np.float32)
    args = dict(dtype=0, B=B, Hq=Hq, Hkv=Hkv, Lq=Lq, Lk=Lk, D=D, Dv=Dv, scale=D ** -0.5,
                softcap=0.0, causal=False, wl=-1, wr=-1, q=q, k=k, v=v, o=out, out_f32=False,
                lse=lse, mask=None, mask_kind=0, mask_type=0, cu_q=None, cu_k=None, openmp=False)
    return args, (q, k, v, out, lse)


def _backward_args(rng, args):
    q, k, v = args["q"], args["k"], args["v"]
    grads = tuple(np.full(x.shape, np.nan, np.float32) for x in (q, k, v))
    dout = rand(rng, *args["o"].shape)
    return dict(args, dout=dout, dlse=None, dq=grads[0], dk=grads[1], dv=grads[2]), dout, grads


FORWARD_NAMES = list(_problem(np.random.default_rng(0))[0])
BACKWARD_NAMES = FORWARD_NAMES + ["dout", "dlse", "dq", "dk", "dv"]


def _check(out, lse, q, k, v, **kw):
    want, want_lse = reference(q, k, v, **kw)
    np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(lse, want_lse, rtol=2e-5, atol=2e-5)


def test_forward_numpy_arrays_and_tuples_agree_with_reference(native):
    rng = np.random.default_rng(1)
    args, (q, k, v, out, lse) = _problem(rng)
    native.forward(**args)
    _check(out, lse, q, k, v)
    first = out.copy(), lse.copy()
    out[:], lse[:] = np.nan, np.nan
    native.forward(**dict(args, q=_desc(q), k=_desc(k), v=_desc(v), o=_desc(out),
                          lse=_desc(lse)))
    assert np.array_equal(out, first[0]) and np.array_equal(lse, first[1])


@pytest.mark.parametrize("as_tuple", [False, True])
def test_strided_views_and_broadcast_mask(native, as_tuple):
    """Every stride reaches its dim: blhd storage viewed as bhld (no dim contiguous but d), a
    strided d, and a mask broadcast over b and h (size-1 dims read with stride 0)."""
    rng = np.random.default_rng(2)
    B, Hq, Hkv, Lq, Lk, D = 2, 4, 2, 5, 7, 8
    q = rand(rng, B, Lq, Hq, D).transpose(0, 2, 1, 3)
    k = rand(rng, B, Lk, Hkv, 2 * D).transpose(0, 2, 1, 3)[..., ::2]
    v = rand(rng, Hkv, B, Lk, D).transpose(1, 0, 2, 3)
    mask = rng.standard_normal((1, 1, Lq, Lk)).astype(np.float32)
    args, (_, _, _, out, lse) = _problem(rng, B, Hq, Hkv, Lq, Lk, D, D)
    if as_tuple:  # strides written out, stride 0 for the mask's broadcast dims
        desc = lambda a: (a.ctypes.data, *(0 if n == 1 else s // a.itemsize  # noqa: E731
                                            for n, s in zip(a.shape, a.strides)))
        arrays = dict(q=desc(q), k=desc(k), v=desc(v), mask=desc(mask), o=desc(out),
                      lse=desc(lse))
    else:
        arrays = dict(q=q, k=k, v=v, mask=mask, o=out, lse=lse)
    native.forward(**dict(args, **arrays, mask_kind=2, mask_type=1, causal=True, wl=3, wr=-1))
    _check(out, lse, q, k, v, mask=mask, causal=True, window=(3, -1))


def test_backward_agrees_with_reference(native):
    rng = np.random.default_rng(3)
    args, (q, k, v, out, lse) = _problem(rng)
    native.forward(**args)
    bwd, dout, (dq, dk, dv) = _backward_args(rng, args)
    native.backward(**bwd)
    for got, want in zip((dq, dk, dv), reference_grads(q, k, v, dout)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cu_as", ["array", "tuple"])
def test_varlen(native, cu_as):
    """Packed sequences: [total, H, D] arrays as (b=0, h, l, d) tuples; cu_seqlens as int32
    arrays read in place or as (pointer,) tuples."""
    rng = np.random.default_rng(5)
    cu = np.array([0, 3, 3, 9], np.int32)
    q, k, v = rand(rng, 9, 4, 8), rand(rng, 9, 2, 8), rand(rng, 9, 2, 8)
    out, lse = np.full((9, 4, 8), np.nan, np.float32), np.full((4, 9), np.nan, np.float32)
    args, _ = _problem(rng, B=3, Hq=4, Hkv=2, Lq=9, Lk=9)
    bhld = lambda a: varlen_as_bhld(numpy_desc(a, 3))  # noqa: E731
    cu_arg = cu if cu_as == "array" else (cu.ctypes.data,)
    native.forward(**dict(args, q=bhld(q), k=bhld(k), v=bhld(v), o=bhld(out),
                          lse=(lse.ctypes.data, 0, 9, 1), cu_q=cu_arg, cu_k=cu_arg, causal=True))
    want, want_lse = reference_varlen(q, k, v, cu, cu, causal=True)
    np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(lse, want_lse, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", FORWARD_NAMES)
def test_forward_missing_field_is_named(native, name):
    args, _ = _problem(np.random.default_rng(0))
    del args[name]
    with pytest.raises(TypeError, match=rf"^forward\(\): missing argument '{name}'$"):
        native.forward(**args)


@pytest.mark.parametrize("name", ["dout", "dlse", "dq", "dk", "dv", "lse", "out_f32", "openmp"])
def test_backward_missing_field_is_named(native, name):
    rng = np.random.default_rng(0)
    args = _backward_args(rng, _problem(rng)[0])[0]
    del args[name]
    with pytest.raises(TypeError, match=rf"^backward\(\): missing argument '{name}'$"):
        native.backward(**args)


@pytest.mark.parametrize("name, typo", [("scale", "scael"), ("mask", "masks"), ("Hkv", "hkv"),
                                        ("wr", "window_right")])
def test_misspelled_field_is_named(native, name, typo):
    args, _ = _problem(np.random.default_rng(0))
    args[typo] = args.pop(name)
    with pytest.raises(TypeError, match=rf"^forward\(\): unexpected argument '{typo}'$"):
        native.forward(**args)
    args[name] = args[typo]  # an extra field, all others present: still an error
    with pytest.raises(TypeError, match=rf"unexpected argument '{typo}'"):
        native.forward(**args)


def test_positional_arguments_are_refused(native):
    args, _ = _problem(np.random.default_rng(0))
    with pytest.raises(TypeError, match="keyword arguments only"):
        native.forward(args)
    with pytest.raises(TypeError, match="keyword arguments only"):
        native.forward(0, **{k: v for k, v in args.items() if k != "dtype"})


@pytest.mark.parametrize("name, value", [
    ("q", "rank3"),                     # a numpy array of rank 3 where (b, h, l, d) is needed
    ("k", (0, 1, 1, 1)),                # a tuple with 3 strides
    ("o", (0, 1, 1, 1, 1, 1)),          # ... with 5
    ("lse", "rank4"),                   # lse is (b, h, l)
    ("mask", "rank2"),
    ("cu_q", (0, 0)),                   # cu_seqlens: (pointer,) or a 1-d int32 array
    ("cu_k", np.zeros(3, np.int64)),
    ("cu_k", np.zeros(3, np.float32)),
    ("cu_q", np.zeros(6, np.int32)[::2]),
    ("v", None),                        # None only for the optional arrays
    ("q", [0, 1, 1, 1, 1]),             # a list is not a descriptor
    ("B", 2 ** 31),                     # beyond int32
    ("wl", 2 ** 64),                    # beyond int64
    ("scale", "0.5"),
    ("causal", None),
])
def test_wrong_value_is_named(native, name, value):
    args, _ = _problem(np.random.default_rng(0))
    if isinstance(value, str) and value.startswith("rank"):
        value = np.zeros((2,) * int(value[-1]), np.float32)
    args[name] = value
    with pytest.raises(TypeError, match=rf"^forward\(\): argument '{name}' = .* is not "):
        native.forward(**args)


def test_read_only_output_is_refused(native):
    args, (_, _, _, out, _) = _problem(np.random.default_rng(0))
    out.flags.writeable = False
    with pytest.raises(TypeError, match=r"argument 'o' = .* writable"):
        native.forward(**args)


def test_converting_values_and_run_time_names_still_run(native):
    """What nb::cast converts (an int for a float, numpy integers) binds as the dict binding
    did, and keyword names built at run time (not interned by the compiler) bind too."""
    rng = np.random.default_rng(4)
    args, (q, k, v, out, lse) = _problem(rng)
    args.update(scale=1, B=np.int64(1), Lq=np.int32(5), softcap=0, wl=np.int64(-1))
    native.forward(**args)
    _check(out, lse, q, k, v, scale=1.0)
    out[:] = np.nan
    renamed = {"".join(list(name)): value for name, value in args.items()}
    native.forward(**renamed)
    _check(out, lse, q, k, v, scale=1.0)


def test_signature_lists_every_field_keyword_only(native):
    for fn, names in ((native.forward, FORWARD_NAMES), (native.backward, BACKWARD_NAMES)):
        sig = fn.__doc__.splitlines()[0]
        assert sig.startswith(fn.__name__ + "(*, "), sig
        params = sig[sig.index("*,") + 2:sig.rindex(")")].split(",")
        assert sorted(p.split(":")[0].strip() for p in params) == sorted(names), sig
