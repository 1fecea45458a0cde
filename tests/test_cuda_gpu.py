"""The CUDA kernels on a GPU against the float64 SPEC reference (skipped without one).

Forward matrix: fp16/bf16 x L in {1, 7, 113, 203} x D in {40, 72, 96, 128} (plus the other
buckets) x {plain, causal, GQA, bool mask, additive mask, window, softcap, Dv != D, blhd,
non-contiguous}, lse included; the split-KV decode path; gradients over the same matrix;
varlen with ragged (and empty) sequences, forward and backward; deterministic backward
(bitwise equal across runs); torch.compile and opcheck on CUDA tensors.

Every tile configuration, whatever the planner would pick for these small shapes: the
extension's plan override (set_plan_override; MLX_ATTN_CUDA_CONFIG / MLX_ATTN_CUDA_SPLITS in
the environment) forces the prefill kernels (128-row tiles, two m16 tiles per warp, the 8-warp
D=192 kernel), the 64-row decode kernels, and split-KV with 2..16 splits plus the combine.
Window sides up to 2**31 - 1 must act as unbounded; NaN in q must reach out, lse and the
gradients through every configuration.  The override's own checks run without a GPU.
Criterion (SPEC, tests/contract/tolerance.py): max|ours - ref64| <= 2 * max|math same dtype -
ref64| + 1e-5 (the same criterion for lse).
"""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from mlx_attn import flash_attention, flash_attention_varlen  # noqa: E402
from mlx_attn.backends.cuda import CudaBackend  # noqa: E402
from mlx_attn.backends.cuda.extension import extension, load_error  # noqa: E402
from contract.tolerance import fused_ok  # noqa: E402
from mlx_attn.reference import (max_error, reference, reference_grads,  # noqa: E402
                                reference_varlen)


def _why_not() -> str | None:
    if not torch.cuda.is_available():
        return f"no CUDA device visible to torch {torch.__version__}"
    reasons = CudaBackend().availability_reasons
    return "; ".join(reasons) if reasons else None


_SKIP = _why_not()
needs_gpu = pytest.mark.skipif(_SKIP is not None, reason=f"cuda backend unavailable: {_SKIP}")
EXT = extension()
needs_ext = pytest.mark.skipif(EXT is None or not hasattr(EXT, "set_plan_override"),
                               reason=f"mlx_attn.backends.cuda._cuda (with the plan override) is "
                                      f"not built: {load_error()}")

# Forced planner choices, (config, splits): config 0 = prefill tiles, 1 = 64-row decode tiles;
# splits > 1 splits the key range (then the combine kernel merges the splits).
CONFIGS = {"prefill": (0, 1), "decode": (1, 1), "split2": (1, 2), "split5": (1, 5),
           "split16": (1, 16)}


@pytest.fixture(params=list(CONFIGS))
def forced_config(request):
    """Runs the test under each forced configuration, then restores the previous override."""
    previous = EXT.set_plan_override(*CONFIGS[request.param])
    try:
        yield request.param
    finally:
        EXT.set_plan_override(*previous)

DTYPES = [torch.float16, torch.bfloat16]


def _dt(x) -> str:
    return str(x.dtype).rsplit(".", 1)[-1]
LENGTHS = [(1, 1), (7, 7), (113, 113), (203, 203), (7, 113), (113, 7), (1, 203)]
DIMS = [40, 72, 96, 128]
VARIANTS = ["plain", "causal", "gqa", "bool_mask", "add_mask", "window", "softcap", "dv",
            "blhd", "strided"]


def make_case(variant, Lq, Lk, D, dtype, seed=0, grad=False):
    g = torch.Generator(device="cuda").manual_seed(seed)
    B, Hq, Hkv, Dv = 2, 4, 4, D
    if variant == "gqa":
        Hkv = 2
    if variant == "dv":
        Dv = 32 if D != 32 else 64
    rnd = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    q, k, v = rnd(B, Hq, Lq, D), rnd(B, Hkv, Lk, D), rnd(B, Hkv, Lk, Dv)
    kw = dict(scale=None)
    if variant == "causal":
        kw["causal"] = True
    elif variant == "bool_mask":
        kw["mask"] = torch.rand(B, 1, Lq, Lk, generator=g, device="cuda") > 0.25
        kw["causal"] = True
    elif variant == "add_mask":
        kw["mask"] = rnd(1, Hq, Lq, Lk)
    elif variant == "window":
        kw["window"] = (17, 3)
        kw["causal"] = Lq > 50
    elif variant == "softcap":
        kw["softcap"] = 2.5
        kw["causal"] = True
    layout = "bhld"
    if variant == "blhd":
        layout = "blhd"
        q, k, v = (x.transpose(1, 2).contiguous() for x in (q, k, v))
    q, k, v = (x.to(dtype) for x in (q, k, v))
    if variant == "strided":  # views with a padded last axis and swapped batch/head strides
        q, k, v = (torch.cat([x, x[..., :8]], -1)[..., :x.shape[-1]] for x in (q, k, v))
    if grad:
        q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    return q, k, v, kw, layout


def check_forward(q, k, v, kw, layout):
    out, lse = flash_attention(q, k, v, **kw, layout=layout, return_lse=True, backend="cuda")
    m_out, m_lse = flash_attention(q, k, v, **kw, layout=layout, return_lse=True, backend="math")
    ref_out, ref_lse = reference(q, k, v, **kw, layout=layout)
    assert out.dtype == q.dtype and out.device == q.device and lse.dtype == torch.float32
    err, base = max_error(out, ref_out), max_error(m_out, ref_out)
    assert fused_ok(err, base, _dt(out)), f"out error {err} vs math {base}"
    lerr, lbase = max_error(lse, ref_lse), max_error(m_lse, ref_lse)
    assert fused_ok(lerr, lbase, _dt(out)), f"lse error {lerr} vs math {lbase}"


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("Lq, Lk", LENGTHS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_matrix(variant, Lq, Lk, D, dtype):
    check_forward(*make_case(variant, Lq, Lk, D, dtype))


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("D", [8, 32, 64, 160, 192, 256])
@pytest.mark.parametrize("variant", ["plain", "causal", "gqa"])
def test_forward_other_buckets(variant, D, dtype):
    check_forward(*make_case(variant, 113, 203, D, dtype))


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("Lk", [1, 63, 4096, 20000])
@pytest.mark.parametrize("variant", ["plain", "gqa", "window", "bool_mask"])
def test_decode_split_kv(variant, Lk, dtype):
    """Lq = 1 and small Lq * G go to the 64-row tiles, split over the keys when Lk is long."""
    check_forward(*make_case(variant, 1, Lk, 128, dtype))
    check_forward(*make_case(variant, 4, Lk, 64, dtype))


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("Lq, Lk", [(1, 1), (7, 113), (113, 113), (203, 203), (113, 7)])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradient_matrix(variant, Lq, Lk, D, dtype):
    q, k, v, kw, layout = make_case(variant, Lq, Lk, D, dtype, grad=True)
    out = flash_attention(q, k, v, **kw, layout=layout, backend="cuda")
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    m_out = flash_attention(q, k, v, **kw, layout=layout, backend="math")
    base = torch.autograd.grad(m_out, (q, k, v), dout)
    refs = reference_grads(q, k, v, dout, **kw, layout=layout)
    for name, a, b, r in zip("qkv", got, base, refs):
        err, berr = max_error(a, r), max_error(b, r)
        assert fused_ok(err, berr, _dt(a)), f"d{name} error {err} vs math {berr}"


@needs_gpu
def test_no_empty_rows_nan(forced_config):
    q, k, v, kw, layout = make_case("plain", 5, 6, 64, torch.float16, grad=True)
    mask = torch.zeros(1, 1, 5, 6, dtype=torch.bool, device="cuda")
    out, lse = flash_attention(q, k, v, mask=mask, return_lse=True, backend="cuda")
    assert torch.all(out == 0) and torch.all(lse == float("-inf"))
    out.sum().backward()
    assert all(torch.all(x.grad == 0) for x in (q, k, v))


def _varlen(dtype, cu_q, cu_k, causal, grad):
    g = torch.Generator(device="cuda").manual_seed(5)
    Hq, Hkv, D = 8, 2, 72
    mk = lambda n, h: torch.randn(n, h, D, generator=g, device="cuda").to(dtype)  # noqa: E731
    q, k, v = mk(cu_q[-1], Hq), mk(cu_k[-1], Hkv), mk(cu_k[-1], Hkv)
    if grad:
        q, k, v = (x.requires_grad_() for x in (q, k, v))
    cq = torch.tensor(cu_q, dtype=torch.int32, device="cuda")
    ck = torch.tensor(cu_k, dtype=torch.int32, device="cuda")
    mq = max(b - a for a, b in zip(cu_q, cu_q[1:]))
    mk_ = max(b - a for a, b in zip(cu_k, cu_k[1:]))
    return q, k, v, cq, ck, mq, mk_


VARLEN = [([0, 3, 3, 120, 121], [0, 5, 90, 90, 300]), ([0, 203], [0, 203]),
          ([0, 1, 2, 3], [0, 1000, 1001, 1500])]


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("cu_q, cu_k", VARLEN)
def test_varlen_forward_and_backward(cu_q, cu_k, causal, dtype):
    q, k, v, cq, ck, mq, mk = _varlen(dtype, cu_q, cu_k, causal, grad=True)
    out, lse = flash_attention_varlen(q, k, v, cq, ck, mq, mk, causal=causal, return_lse=True,
                                      backend="cuda")
    m_out, m_lse = flash_attention_varlen(q, k, v, cq, ck, mq, mk, causal=causal,
                                          return_lse=True, backend="math")
    ref_out, ref_lse = reference_varlen(q, k, v, cq, ck, causal=causal)
    assert fused_ok(max_error(out, ref_out), max_error(m_out, ref_out), _dt(out))
    assert fused_ok(max_error(lse, ref_lse), max_error(m_lse, ref_lse), _dt(out))
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    base = torch.autograd.grad(m_out, (q, k, v), dout)
    for a, b in zip(got, base):  # per-sequence float64 gradients
        assert torch.isfinite(a).all()
    for s in range(len(cu_q) - 1):
        a, b_ = cu_q[s], cu_q[s + 1]
        c, d = cu_k[s], cu_k[s + 1]
        part = [x[a:b_].detach().transpose(0, 1)[None] for x in (q,)] + \
               [x[c:d].detach().transpose(0, 1)[None] for x in (k, v)]
        refs = reference_grads(*part, dout[a:b_].transpose(0, 1)[None], causal=causal)
        for got_g, base_g, ref, (lo, hi) in zip(got, base, refs, ((a, b_), (c, d), (c, d))):
            ref = ref[0].swapaxes(0, 1)
            assert fused_ok(max_error(got_g[lo:hi], ref), max_error(base_g[lo:hi], ref),
                            _dt(got_g))


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
def test_deterministic_backward_bitwise(dtype):
    q, k, v, kw, layout = make_case("gqa", 203, 203, 128, dtype, grad=True)
    dout = torch.randn(2, 4, 203, 128, device="cuda").to(dtype)
    torch.use_deterministic_algorithms(True)
    try:
        runs = [torch.autograd.grad(flash_attention(q, k, v, causal=True, backend="cuda"),
                                    (q, k, v), dout) for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(False)
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@needs_gpu
def test_torch_compile_on_cuda():
    from mlx_attn.backends.cuda import ops

    q, k, v, kw, layout = make_case("gqa", 113, 113, 64, torch.bfloat16, grad=True)

    def f(q, k, v):
        out, lse = ops.fwd(q, k, v, None, 0.125, True, -1, -1, 0.0, False)
        return out.float().square().sum() + lse.sum()

    got = torch.autograd.grad(torch.compile(f, fullgraph=True)(q, k, v), (q, k, v))
    want = torch.autograd.grad(f(q, k, v), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@needs_gpu
def test_opcheck_on_cuda():
    from mlx_attn.backends.cuda import ops

    q, k, v, kw, layout = make_case("gqa", 37, 50, 64, torch.float16, grad=True)
    args = (q, k, v, None, 0.125, True, 4, -1, 0.0, False)
    result = torch.library.opcheck(ops.fwd, args)
    assert set(result.values()) == {"SUCCESS"}, result


# -- every tile configuration, forced (the planner sends these small shapes to one of them) ----
CONFIG_VARIANTS = ["plain", "causal", "gqa", "bool_mask", "add_mask", "window", "softcap", "dv"]
CONFIG_LENGTHS = [(1, 203), (7, 113), (113, 7), (113, 113), (203, 203)]
CONFIG_DIMS = [32, 64, 128, 192, 256]  # 192: the 8-warp prefill kernel; 128: 128x32 tiles


def _plan_of(q, k, v, causal=False, window=(-1, -1)):
    B, Hq, Lq, D = q.shape
    return EXT.plan(B, Hq, k.shape[1], Lq, k.shape[2], D, v.shape[3], causal, window[0],
                    window[1], q.device.index or 0)


@needs_gpu
@needs_ext
@pytest.mark.parametrize("D", CONFIG_DIMS)
@pytest.mark.parametrize("Lq, Lk", CONFIG_LENGTHS)
@pytest.mark.parametrize("variant", CONFIG_VARIANTS)
def test_forward_configs(forced_config, variant, Lq, Lk, D):
    dtype = torch.float16 if D in (64, 192) else torch.bfloat16
    q, k, v, kw, layout = make_case(variant, Lq, Lk, D, dtype)
    assert _plan_of(q, k, v) == CONFIGS[forced_config]  # the override is in force
    check_forward(q, k, v, kw, layout)


@needs_gpu
@needs_ext
@pytest.mark.parametrize("D", [64, 128, 192])
@pytest.mark.parametrize("Lq, Lk", [(7, 113), (113, 113), (203, 203)])
@pytest.mark.parametrize("variant", ["plain", "causal", "gqa", "window", "softcap"])
def test_gradient_configs(forced_config, variant, Lq, Lk, D):
    q, k, v, kw, layout = make_case(variant, Lq, Lk, D, torch.bfloat16, grad=True)
    out, lse = flash_attention(q, k, v, **kw, layout=layout, return_lse=True, backend="cuda")
    dout, dlse = torch.randn_like(out), torch.randn_like(lse)
    got = torch.autograd.grad((out, lse), (q, k, v), (dout, dlse))
    m_out, m_lse = flash_attention(q, k, v, **kw, layout=layout, return_lse=True,
                                   backend="math")
    base = torch.autograd.grad((m_out, m_lse), (q, k, v), (dout, dlse))
    refs = reference_grads(q, k, v, dout, **kw, layout=layout, dlse=dlse)
    for name, a, b, r in zip("qkv", got, base, refs):
        err, berr = max_error(a, r), max_error(b, r)
        assert fused_ok(err, berr, _dt(a)), f"d{name} error {err} vs math {berr}"


@needs_gpu
@needs_ext
@pytest.mark.parametrize("causal", [False, True])
def test_huge_window_sides_are_unbounded(forced_config, causal):
    """Sides up to 2**31 - 1 reach the kernels' range arithmetic (the op takes any int; only the
    front end clamps): they must give exactly the unbounded result, never an empty range."""
    from mlx_attn.backends.cuda import ops

    q, k, v, _, _ = make_case("gqa", 37, 300, 64, torch.float16, grad=True)
    want = ops.fwd(q, k, v, None, 0.125, causal, -1, -1, 0.0, False)
    dout = torch.randn_like(want[0])
    want_grads = torch.autograd.grad(want[0], (q, k, v), dout)
    for left, right in [(2**31 - 1, 2**31 - 1), (2**31 - 2, -1), (-1, 2**31 - 1), (2**40, 2**40)]:
        got = ops.fwd(q, k, v, None, 0.125, causal, left, right, 0.0, False)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (left, right)
        grads = torch.autograd.grad(got[0], (q, k, v), dout)
        assert all(torch.equal(a, b) for a, b in zip(grads, want_grads)), (left, right)
    # a bounded left side with a huge right one: as (17, unbounded)
    a = ops.fwd(q, k, v, None, 0.125, causal, 17, 2**31 - 1, 0.0, False)
    b = ops.fwd(q, k, v, None, 0.125, causal, 17, -1, 0.0, False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@needs_gpu
@needs_ext
def test_nan_in_q_propagates(forced_config):
    """SPEC: NaN propagates.  A NaN in one query row makes that row's out and lse NaN in every
    configuration (the split-KV combine must not drop NaN partials), leaves the other rows
    bitwise unchanged, and reaches dq of that row and dk/dv of the keys it sees."""
    q, k, v, _, _ = make_case("gqa", 5, 300, 64, torch.bfloat16)
    bad = q.clone()
    bad[0, 1, 2, 0] = float("nan")
    bad.requires_grad_()
    out, lse = flash_attention(bad, k, v, return_lse=True, backend="cuda")
    clean, clean_lse = flash_attention(q, k, v, return_lse=True, backend="cuda")
    assert torch.isnan(out[0, 1, 2]).all() and torch.isnan(lse[0, 1, 2])
    keep = torch.ones_like(lse, dtype=torch.bool)
    keep[0, 1, 2] = False
    assert torch.equal(out[keep], clean[keep]) and torch.equal(lse[keep], clean_lse[keep])
    (dq,) = torch.autograd.grad(out, (bad,), torch.ones_like(out))
    assert torch.isnan(dq[0, 1, 2]).all() and torch.isfinite(dq[1]).all()
    k2, v2 = (x.detach().clone().requires_grad_() for x in (k, v))
    out2 = flash_attention(bad.detach(), k2, v2, backend="cuda")
    dk, dv = torch.autograd.grad(out2, (k2, v2), torch.ones_like(out2))
    hk = 1 // (q.shape[1] // k.shape[1])  # query head 1's kv head
    assert torch.isnan(dk[0, hk]).all() and torch.isnan(dv[0, hk]).all()
    assert torch.isfinite(dk[1]).all() and torch.isfinite(dv[1]).all()


# -- the plan override itself: the extension only, no GPU needed ------------------------------
@needs_ext
@pytest.mark.parametrize("config, splits", [(0, 2), (2, 0), (-2, 0), (1, 129), (1, -1)])
def test_plan_override_rejects_bad_values(config, splits):
    with pytest.raises(ValueError, match="set_plan_override"):
        EXT.set_plan_override(config, splits)


@needs_ext
def test_plan_override_forces_the_plan():
    decode = (1, 32, 8, 1, 131072, 128, 128, False, -1, -1, 0)      # planner: split-KV
    prefill = (16, 16, 16, 4096, 4096, 128, 128, True, -1, -1, 0)   # planner: prefill
    previous = EXT.set_plan_override(-1, 0)
    try:
        auto_decode = EXT.plan(*decode)
        assert auto_decode[0] == 1 and EXT.plan(*prefill) == (0, 1)
        EXT.set_plan_override(0, 1)
        assert EXT.plan(*decode) == (0, 1) and EXT.plan_override() == (0, 1)
        EXT.set_plan_override(1, 0)  # decode tiles, the planner's split count
        assert EXT.plan(*decode) == auto_decode and EXT.plan(*prefill)[0] == 1
        EXT.set_plan_override(1, 7)
        assert EXT.plan(*decode) == (1, 7) and EXT.plan(*prefill) == (1, 7)
        assert EXT.set_plan_override(-1, 0) == (1, 7)
        assert EXT.plan(*prefill) == (0, 1)
    finally:
        EXT.set_plan_override(*previous)


@needs_ext
def test_plan_and_checks_take_any_window_int():
    """A side past INT32_MAX is unbounded (-1); sides up to INT32_MAX reach the kernels as is."""
    args = (1, 32, 8, 1, 131072, 128, 128, False)
    assert EXT.plan(*args, 2**40, 2**31 - 1, 0) == EXT.plan(*args, -1, -1, 0)
    B, Hq, Hkv, Lq, Lk, D = 1, 4, 2, 10, 12, 64
    t = dict(q=torch.zeros(B, Hq, Lq, D, dtype=torch.float16),
             k=torch.zeros(B, Hkv, Lk, D, dtype=torch.float16),
             v=torch.zeros(B, Hkv, Lk, D, dtype=torch.float16),
             out=torch.empty(B, Hq, Lq, D, dtype=torch.float16),
             lse=torch.empty(B, Hq, Lq), mask=None, o_accum=None, lse_accum=None, num_splits=1,
             scale=0.125, softcap=0.0, allow_cpu=True)
    p = EXT.check_fwd_args(**t, causal=False, window_left=2**40, window_right=2**31 - 1)
    assert p["window"] == (-1, 2**31 - 1)
    p = EXT.check_fwd_args(**t, causal=True, window_left=2**31 - 1, window_right=2**63 - 1)
    assert p["window"] == (2**31 - 1, 0)


def _override_in_subprocess(env_extra):
    import subprocess
    import sys

    code = ("from mlx_attn.backends.cuda.extension import extension\n"
            "ext = extension()\n"
            "try:\n"
            "    print(ext.plan_override(),\n"
            "          ext.plan(1, 32, 8, 1, 131072, 128, 128, False, -1, -1, 0))\n"
            "except ValueError as e:\n"
            "    print('ValueError', e)\n")
    env = {**os.environ, **env_extra, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    for name in ("MLX_ATTN_CUDA_CONFIG", "MLX_ATTN_CUDA_SPLITS"):
        if name not in env_extra:
            env.pop(name, None)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@needs_ext
@pytest.mark.parametrize("env, want", [
    ({}, "(-1, 0) (1, "),
    ({"MLX_ATTN_CUDA_CONFIG": "prefill"}, "(0, 0) (0, 1)"),
    ({"MLX_ATTN_CUDA_CONFIG": "decode", "MLX_ATTN_CUDA_SPLITS": "3"}, "(1, 3) (1, 3)"),
    ({"MLX_ATTN_CUDA_SPLITS": "4"}, "(1, 4) (1, 4)"),
    ({"MLX_ATTN_CUDA_CONFIG": "auto"}, "(-1, 0) (1, "),
    ({"MLX_ATTN_CUDA_CONFIG": "fast"}, "ValueError MLX_ATTN_CUDA_CONFIG='fast'"),
    ({"MLX_ATTN_CUDA_SPLITS": "0"}, "ValueError MLX_ATTN_CUDA_SPLITS='0'"),
    ({"MLX_ATTN_CUDA_SPLITS": "2x"}, "ValueError MLX_ATTN_CUDA_SPLITS='2x'"),
    ({"MLX_ATTN_CUDA_CONFIG": "prefill", "MLX_ATTN_CUDA_SPLITS": "3"}, "ValueError"),
])
def test_plan_override_from_environment(env, want):
    assert _override_in_subprocess(env).startswith(want)

