"""Input checks: turn the caller's arguments into an `AttentionCall`, or raise a clear error.

Every error names the argument, what it got and what is allowed (SPEC "Bad input").
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .call import AttentionCall
from .frameworks import kind_of, ops_for

LAYOUTS = ("bhld", "blhd")
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
# The kernels index rows, heads and positions with 32-bit ints (and MLX shapes are int32).
INT32_MAX = 2 ** 31 - 1


def _describe(x) -> str:
    return f"{type(x).__module__}.{type(x).__name__}"


# What the checks of `_arrays` and `_float_dtype` conclude depends only on the arrays' types,
# dtypes and devices (never their values or shapes), so it is kept per such signature: a
# repeated call pays for one dict lookup instead of re-deriving kinds, devices and dtypes.
_SIGNATURES: dict = {}
_MAX_SIGNATURES = 256


def _signature(q, k, v):
    """(kind, ops, device, dtype) of q, k, v, checked; cached per signature."""
    key = None
    try:
        ops = _OPS_BY_TYPE[type(q)]
        key = (type(q), type(k), type(v), ops.signature(q, k, v))
        return _SIGNATURES[key]
    except (KeyError, AttributeError, TypeError):
        pass  # first call with this signature, or not arrays at all: the full checks say which
    named = {"q": q, "k": k, "v": v}
    kind, ops, device = _arrays(named)
    found = (kind, ops, device, _float_dtype(ops, named))
    _OPS_BY_TYPE.setdefault(type(q), ops)
    # numpy arrays in a foreign byte order are copied by canonical() on every call: not cached
    if ops.native_order(q, k, v):
        if len(_SIGNATURES) >= _MAX_SIGNATURES:
            _SIGNATURES.clear()
        _SIGNATURES[(type(q), type(k), type(v), ops.signature(q, k, v))] = found
    return found


_OPS_BY_TYPE: dict = {}


def clear_cache() -> None:
    _SIGNATURES.clear()
    _OPS_BY_TYPE.clear()


def _arrays(named: dict):
    """Check that all arrays are of one supported kind on one device; return (kind, ops, device)."""
    first_name, first = next(iter(named.items()))
    kind = kind_of(first)
    if kind is None:
        raise TypeError(f"{first_name} must be an mlx.core.array, torch.Tensor or numpy.ndarray, "
                        f"got {_describe(first)}")
    ops = ops_for(kind)
    device = ops.device(first)
    for name, x in named.items():
        other = kind_of(x)
        if other != kind:
            raise TypeError(f"{name} must be the same array kind as {first_name} ({kind}), "
                            f"got {_describe(x)}")
        if ops.device(x) != device:
            raise ValueError(f"{name} is on device {ops.device(x)} but {first_name} is on "
                             f"{device}; all inputs must be on one device")
    return kind, ops, device


def _float_dtype(ops, named: dict) -> str:
    dtype = None
    for name, x in named.items():
        got = ops.dtype_name(x)
        if got not in FLOAT_DTYPES:
            raise TypeError(f"{name} has dtype {got}; allowed: {', '.join(FLOAT_DTYPES)}")
        if dtype is None:
            dtype, first = got, name
        elif got != dtype:
            raise TypeError(f"{name} has dtype {got} but {first} has {dtype}; q, k and v must "
                            f"share one dtype")
    return dtype


def _rank(x, name: str, rank: int, shape_doc: str):
    if len(x.shape) != rank:
        raise ValueError(f"{name} must have rank {rank} ({shape_doc}), got shape "
                         f"{tuple(x.shape)}")


def _scale(scale, D: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(D) if D > 0 else 1.0
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {scale!r}")
    if not math.isfinite(float(scale)):
        raise ValueError(f"scale must be finite, got {scale!r}")
    return float(scale)


def _softcap(softcap):
    if softcap is None:
        return None
    if isinstance(softcap, bool) or not isinstance(softcap, numbers.Real):
        raise TypeError(f"softcap must be a positive number or None, got {softcap!r}")
    c = float(softcap)
    if c == 0.0:
        return None  # FlashAttention's convention: 0 turns softcapping off
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"softcap must be a finite number > 0 (or 0/None for off), got {softcap!r}")
    return c


def _window(window, longest_q: int, longest_k: int):
    """(left, right) with -1 for unbounded, or None.

    A side no key position can reach (left >= longest_k - 1, right >= longest_q - 1, with the
    bottom-right offset of every sequence) is made -1, so no backend ever sees a huge int.
    """
    if window is None:
        return None
    if isinstance(window, numbers.Integral) and not isinstance(window, bool):
        pair = (int(window), 0)
    elif (isinstance(window, (tuple, list)) and len(window) == 2
          and all(isinstance(w, numbers.Integral) and not isinstance(w, bool) for w in window)):
        pair = (int(window[0]), int(window[1]))
    else:
        raise TypeError(f"window must be an int or a (left, right) pair of ints, got {window!r}")
    if any(w < -1 for w in pair):
        raise ValueError(f"window sides must be >= 0, or -1 for unbounded, got {window!r}")
    # query i (offset off = Lk - Lq) allows key j iff i + off - left <= j <= i + off + right;
    # over all i, j: i + off - j <= Lk - 1 and j - i - off <= Lq - 1
    left, right = pair
    left = -1 if left >= longest_k - 1 else left
    right = -1 if right >= longest_q - 1 else right
    return left, right


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _mask(mask, ops, kind, device, target):
    """Check a mask against [B, Hq, Lq, Lk]; return (rank-4 view, "bool" | "additive")."""
    if mask is None:
        return None, None
    if kind_of(mask) != kind:
        raise TypeError(f"mask must be the same array kind as q ({kind}), got {_describe(mask)}")
    mask = ops.canonical(mask)
    if ops.device(mask) != device:
        raise ValueError(f"mask is on device {ops.device(mask)} but q is on {device}")
    if ops.is_bool(mask):
        mask_kind = "bool"
    elif ops.is_floating(mask):
        mask_kind = "additive"
    else:
        raise TypeError(f"mask must be bool (True keeps) or floating (added to the scores), "
                        f"got dtype {ops.dtype_name(mask)}")
    shape = tuple(mask.shape)
    names = ("B", "Hq", "Lq", "Lk")
    if len(shape) > 4 or any(m not in (1, t) for m, t in zip(shape[::-1], target[::-1])):
        raise ValueError(f"mask of shape {shape} is not broadcastable to [B, Hq, Lq, Lk] = "
                         f"{list(target)}; each of its trailing dims ({', '.join(names)}) must "
                         f"be 1 or that size")
    if len(shape) < 4:
        mask = ops.reshape(mask, (1,) * (4 - len(shape)) + shape)
    return mask, mask_kind


def check_dense(q, k, v, *, scale, causal, mask, window, softcap, return_lse,
                layout) -> AttentionCall:
    kind, ops, device, dtype = _signature(q, k, v)
    q, k, v = ops.canonical(q), ops.canonical(k), ops.canonical(v)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    qs, ks, vs = tuple(q.shape), tuple(k.shape), tuple(v.shape)
    if len(qs) != 4 or len(ks) != 4 or len(vs) != 4:
        doc = "[B, H, L, D]" if layout == "bhld" else "[B, L, H, D]"
        for name, x in (("q", q), ("k", k), ("v", v)):
            _rank(x, name, 4, doc)
    if layout == "blhd":
        q, k, v = ops.swapaxes(q, 1, 2), ops.swapaxes(k, 1, 2), ops.swapaxes(v, 1, 2)
        qs, ks, vs = ((s[0], s[2], s[1], s[3]) for s in (qs, ks, vs))
    (B, Hq, Lq, D), (_, Hkv, Lk, _), Dv = qs, ks, vs[3]
    _same_dims(qs, ks, vs)
    if not (_fits(qs) and _fits(ks) and _fits(vs) and Lq + Lk <= INT32_MAX):
        _sizes({"q": (qs, ("B", "Hq", "Lq", "D")), "k": (ks, ("B", "Hkv", "Lk", "D")),
                "v": (vs, ("B", "Hkv", "Lk", "Dv"))}, "Lq + Lk", Lq + Lk)
    mask, mask_kind = (None, None) if mask is None else _mask(mask, ops, kind, device,
                                                             (B, Hq, Lq, Lk))
    # the scalar checks, skipped for the defaults (None, plain bools) that need none
    return AttentionCall(
        kind=kind, device=device, dtype=dtype, q=q, k=k, v=v,
        B=B, Hq=Hq, Hkv=Hkv, Lq=Lq, Lk=Lk, D=D, Dv=Dv,
        scale=1.0 / math.sqrt(D) if scale is None else _scale(scale, D),
        causal=causal if causal.__class__ is bool else _flag(causal, "causal"),
        mask=mask, mask_kind=mask_kind,
        window=None if window is None else _window(window, Lq, Lk),
        softcap=None if softcap is None else _softcap(softcap),
        return_lse=return_lse if return_lse.__class__ is bool else _flag(return_lse,
                                                                         "return_lse"),
        layout=layout, requires_grad=ops.requires_grad(q, k, v))


def _fits(shape) -> bool:
    """The common case of `_sizes`, cheaply: every size positive and within the 32-bit limits.
    False only means "let `_sizes` look" (it accepts empty dims, or raises the precise error)."""
    return 0 < shape[-1] and max(shape) <= INT32_MAX and \
        0 < math.prod(shape[:-1]) <= INT32_MAX


def _same_dims(qs, ks, vs):
    """B, D, Hkv and Lk agreement and Hq % Hkv == 0, on bhld-ordered shapes."""
    (B, Hq, _, D), (Bk, Hkv, Lk, Dk), (Bv, Hv, Lv, _) = qs, ks, vs
    if Bk != B or Bv != B:
        raise ValueError(f"batch sizes differ: q has B={B}, k has B={Bk}, v has B={Bv}")
    if Dk != D:
        raise ValueError(f"k has head dim D={Dk} but q has D={D}; they must match")
    if Hv != Hkv:
        raise ValueError(f"v has {Hv} heads but k has {Hkv}; k and v must share heads")
    if Lv != Lk:
        raise ValueError(f"v has {Lv} keys but k has {Lk}; k and v must have as many keys")
    if Hkv == 0 or Hq % Hkv:
        raise ValueError(f"q has {Hq} heads, which is not a multiple of k's {Hkv} heads "
                         f"(GQA needs Hq % Hkv == 0)")


def _sizes(named: dict, sum_name: str, sum_value: int):
    """Head dims >= 1, and every size the kernels index with 32-bit ints within INT32_MAX.

    `named`: name -> (shape, dim names), head dim last. Checked on shapes only (never data),
    so a huge logical shape (a broadcast or stride-0 view) is rejected before any work.
    """
    for name, (shape, dims) in named.items():
        shape = tuple(shape)
        for n, dim in zip(shape, dims):
            if n > INT32_MAX:
                raise ValueError(f"{name} has {dim}={n} (shape {shape}); each dimension must be "
                                 f"<= {INT32_MAX} (2**31 - 1, what the kernels' 32-bit indices "
                                 f"address)")
        if shape[-1] == 0:
            raise ValueError(f"{name} has head dim {dims[-1]}=0 (shape {shape}); allowed: "
                             f"{dims[-1]} >= 1")
        rows = math.prod(max(n, 1) for n in shape[:-1])
        if rows > INT32_MAX:
            raise ValueError(f"{name} has {'*'.join(dims[:-1])} = {rows} rows (shape {shape}); "
                             f"at most {INT32_MAX} (2**31 - 1) allowed")
    if sum_value > INT32_MAX:
        # positions i + (Lk - Lq) +- window of bottom-right causal / window must fit an int32
        raise ValueError(f"q and k have {sum_name} = {sum_value}; at most {INT32_MAX} "
                         f"(2**31 - 1) allowed")


def _cu_seqlens(cu, name: str, ops, kind: str, total: int, total_name: str):
    """(cu as a contiguous int32 array of q's kind, its values as a host list)."""
    if kind_of(cu) != kind:
        raise TypeError(f"{name} must be the same array kind as q ({kind}), got {_describe(cu)}")
    cu = ops.canonical(cu)
    if not ops.is_int32(cu) or len(cu.shape) != 1:
        raise TypeError(f"{name} must be a 1-D int32 array [n + 1], got dtype "
                        f"{ops.dtype_name(cu)} and shape {tuple(cu.shape)}")
    host = ops.to_host(cu).astype(np.int64)
    if host.size == 0 or host[0] != 0:
        raise ValueError(f"{name} must start at 0, got {host[:4].tolist()}...")
    if np.any(np.diff(host) < 0):
        raise ValueError(f"{name} must be non-decreasing, got {host.tolist()}")
    if host[-1] != total:
        raise ValueError(f"{name} must end at {total_name}={total}, got {int(host[-1])}")
    # backends may read cu_seqlens through a raw pointer: hand them a contiguous copy of a view
    return ops.contiguous(cu), host.tolist()


def _max_seqlen(value, name: str, lengths) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    longest = max(lengths, default=0)
    if value < longest:
        raise ValueError(f"{name}={value} is smaller than the longest sequence ({longest})")
    if value > INT32_MAX:
        raise ValueError(f"{name}={value} is larger than {INT32_MAX} (2**31 - 1), the largest "
                         f"length the kernels address")
    return int(value)


def check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, scale,
                 causal, window, softcap, return_lse) -> AttentionCall:
    kind, ops, device = _arrays({"q": q, "k": k, "v": v, "cu_seqlens_q": cu_seqlens_q,
                                 "cu_seqlens_k": cu_seqlens_k})
    dtype = _float_dtype(ops, {"q": q, "k": k, "v": v})
    q, k, v = (ops.canonical(x) for x in (q, k, v))
    for name, x in (("q", q), ("k", k), ("v", v)):
        _rank(x, name, 3, "[total, H, D]")
    (Tq, Hq, D), (Tk, Hkv, Dk), (Tv, Hv, Dv) = q.shape, k.shape, v.shape
    _same_dims((1, Hq, Tq, D), (1, Hkv, Tk, Dk), (1, Hv, Tv, Dv))
    _sizes({"q": (q.shape, ("total_q", "Hq", "D")), "k": (k.shape, ("total_k", "Hkv", "D")),
            "v": (v.shape, ("total_k", "Hkv", "Dv"))}, "total_q + total_k", Tq + Tk)
    cu_q, seq_q = _cu_seqlens(cu_seqlens_q, "cu_seqlens_q", ops, kind, Tq, "total_q")
    cu_k, seq_k = _cu_seqlens(cu_seqlens_k, "cu_seqlens_k", ops, kind, Tk, "total_k")
    if len(seq_q) != len(seq_k):
        raise ValueError(f"cu_seqlens_q has {len(seq_q) - 1} sequences but cu_seqlens_k has "
                         f"{len(seq_k) - 1}; they must describe the same sequences")
    len_q, len_k = np.diff(seq_q).tolist(), np.diff(seq_k).tolist()
    max_q = _max_seqlen(max_seqlen_q, "max_seqlen_q", len_q)
    max_k = _max_seqlen(max_seqlen_k, "max_seqlen_k", len_k)
    # the window is canonicalised against the longest sequence, which bounds every sequence
    window = _window(window, max(len_q, default=0), max(len_k, default=0))
    return AttentionCall(
        kind=kind, device=device, dtype=dtype, q=q, k=k, v=v,
        B=len(seq_q) - 1, Hq=Hq, Hkv=Hkv, Lq=Tq, Lk=Tk, D=D, Dv=Dv, scale=_scale(scale, D),
        causal=_flag(causal, "causal"), window=window, softcap=_softcap(softcap),
        return_lse=_flag(return_lse, "return_lse"), requires_grad=ops.requires_grad(q, k, v),
        varlen=True, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, seqlens_q=seq_q,
        seqlens_k=seq_k, max_seqlen_q=max_q, max_seqlen_k=max_k)
