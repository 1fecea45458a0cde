"""Generated inputs: any shape, feature combination and layout, math backend vs reference."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arrays import HAVE, convert, lse_tolerance, out_tolerance
from mlx_attn import flash_attention, flash_attention_varlen
from mlx_attn.reference import max_error, reference, reference_varlen, to_f64

KINDS = ["numpy"] + [k for k in ("torch", "mlx") if HAVE[k]]
SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    B = draw(st.integers(1, 2))
    Hkv = draw(st.integers(1, 3))
    Hq = Hkv * draw(st.integers(1, 3))
    Lq, Lk = draw(st.integers(0, 40)), draw(st.integers(0, 40))
    D, Dv = draw(st.sampled_from([1, 8, 40, 72])), draw(st.sampled_from([8, 24, 40]))
    options = dict(
        causal=draw(st.booleans()),
        window=draw(st.one_of(st.none(), st.integers(0, 12),
                              st.tuples(st.integers(-1, 12), st.integers(-1, 12)))),
        softcap=draw(st.one_of(st.none(), st.floats(0.5, 30.0))),
        scale=draw(st.one_of(st.none(), st.floats(0.05, 2.0))),
    )
    mask_kind = draw(st.sampled_from([None, "bool", "additive"]))
    mask_shape = tuple(draw(st.sampled_from([1, n])) for n in (B, Hq, Lq, Lk))
    return dict(B=B, Hq=Hq, Hkv=Hkv, Lq=Lq, Lk=Lk, D=D, Dv=Dv, options=options,
                mask_kind=mask_kind, mask_shape=mask_shape,
                layout=draw(st.sampled_from(["bhld", "blhd"])),
                kind=draw(st.sampled_from(KINDS)), dtype=draw(st.sampled_from(["float32",
                                                                               "float16"])),
                seed=draw(st.integers(0, 2**31)))


@SETTINGS
@given(problems())
def test_generated_dense(p):
    rng = np.random.default_rng(p["seed"])
    shapes = [(p["B"], p["Hq"], p["Lq"], p["D"]), (p["B"], p["Hkv"], p["Lk"], p["D"]),
              (p["B"], p["Hkv"], p["Lk"], p["Dv"])]
    if p["layout"] == "blhd":
        shapes = [(s[0], s[2], s[1], s[3]) for s in shapes]
    q, k, v = (convert(rng.standard_normal(s).astype(np.float32), p["kind"], p["dtype"])
               for s in shapes)
    options, ref_options = dict(p["options"]), dict(p["options"])
    if p["mask_kind"] == "bool":
        m = rng.random(p["mask_shape"]) < 0.7
        options["mask"], ref_options["mask"] = convert(m, p["kind"], "bool"), m
    elif p["mask_kind"] == "additive":
        m = rng.standard_normal(p["mask_shape"]).astype(np.float32)
        m[rng.random(m.shape) < 0.2] = -np.inf
        options["mask"] = convert(m, p["kind"], p["dtype"])
        ref_options["mask"] = to_f64(options["mask"])
    out, lse = flash_attention(q, k, v, layout=p["layout"], return_lse=True, backend="math",
                               **options)
    want, want_lse = reference(q, k, v, layout=p["layout"], **ref_options)
    assert max_error(out, want) <= out_tolerance(p["dtype"], want)
    assert max_error(lse, want_lse) <= lse_tolerance(want_lse)


@SETTINGS
@given(lens=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=5),
       causal=st.booleans(), window=st.one_of(st.none(), st.integers(0, 6)),
       softcap=st.one_of(st.none(), st.floats(1.0, 10.0)), kind=st.sampled_from(KINDS),
       seed=st.integers(0, 2**31))
def test_generated_varlen(lens, causal, window, softcap, kind, seed):
    rng = np.random.default_rng(seed)
    cu_q = np.concatenate([[0], np.cumsum([a for a, _ in lens])]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum([b for _, b in lens])]).astype(np.int32)
    q = convert(rng.standard_normal((cu_q[-1], 4, 8)).astype(np.float32), kind)
    k, v = (convert(rng.standard_normal((cu_k[-1], 2, 8)).astype(np.float32), kind)
            for _ in range(2))
    options = dict(causal=causal, window=window, softcap=softcap)
    out, lse = flash_attention_varlen(q, k, v, convert(cu_q, kind), convert(cu_k, kind),
                                      max(a for a, _ in lens), max(b for _, b in lens),
                                      return_lse=True, backend="math", **options)
    want, want_lse = reference_varlen(q, k, v, cu_q, cu_k, **options)
    assert max_error(out, want) <= out_tolerance("float32", want)
    assert max_error(lse, want_lse) <= lse_tolerance(want_lse)
