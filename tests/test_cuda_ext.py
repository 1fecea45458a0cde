"""The compiled CUDA bridge module mlx_attn.backends.cuda._cuda, on any machine (no GPU needed).

Its argument checks run on CPU tensors through check_fwd_args(..., allow_cpu=True), so every
error the binding can raise is exercised here; the kernels themselves are tested in
test_cuda_forward.py (GPU only).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from mlx_attn.backends.cuda.extension import extension, load_error

torch = pytest.importorskip("torch")

EXT = extension()
REQUIRE = os.environ.get("MLX_ATTN_REQUIRE_CUDA_EXT") == "1"


def test_extension_built_or_skipped_with_reason():
    """CI sets MLX_ATTN_REQUIRE_CUDA_EXT=1 where nvcc is present: the build must then exist."""
    if EXT is None:
        if REQUIRE:
            pytest.fail(f"MLX_ATTN_REQUIRE_CUDA_EXT=1 but mlx_attn.backends.cuda._cuda is missing: {load_error()}")
        pytest.skip(f"mlx_attn.backends.cuda._cuda is not built (CUDA build off or no nvcc): {load_error()}")
    assert set(EXT.head_dims()) <= {32, 64, 96, 128, 192, 256}
    assert EXT.head_dims(), "no head-dim bucket compiled"
    archs = EXT.archs()
    assert archs and all(int(a.split("-")[0]) >= 80 for a in archs.split(","))


needs_ext = pytest.mark.skipif(EXT is None, reason=f"mlx_attn.backends.cuda._cuda is not built: {load_error()}")


@needs_ext
def test_device_queries_never_raise():
    count, error = EXT.device_count()
    assert isinstance(count, int) and count >= 0
    if count == 0:
        assert error  # says why (no driver, no device, ...)
        assert isinstance(EXT.device_info(0), str)
        assert EXT.kernel_image_error(0)
    else:
        info = EXT.device_info(0)
        assert isinstance(info, dict) and info["sms"] > 0


@needs_ext
@pytest.mark.parametrize("d, dv, bucket", [(8, 8, 32), (32, 32, 32), (40, 40, 64), (64, 128, 128),
                                           (96, 96, 96), (136, 136, 192), (200, 64, 256),
                                           (256, 256, 256), (264, 264, 0)])
def test_head_dim_bucket(d, dv, bucket):
    assert EXT.head_dim_bucket(d, dv) == bucket


@needs_ext
def test_plan_without_gpu_is_sane():
    # decode with GQA 32/8 and a long KV cache: 64-row tiles, key range split
    config, splits = EXT.plan(1, 32, 8, 1, 131072, 128, 128, False, -1, -1, 0)
    assert config == 1 and 1 < splits <= 128
    # a big prefill fills the machine with 128-row tiles, no split
    assert EXT.plan(16, 16, 16, 4096, 4096, 128, 128, True, -1, -1, 0) == (0, 1)


# -- argument checks --------------------------------------------------------------------------
def make(B=2, Hq=4, Hkv=2, Lq=10, Lk=12, D=64, Dv=64, dtype=torch.bfloat16):
    q = torch.randn(B, Hq, Lq, D).to(dtype)
    k = torch.randn(B, Hkv, Lk, D).to(dtype)
    v = torch.randn(B, Hkv, Lk, Dv).to(dtype)
    out = torch.empty(B, Hq, Lq, Dv, dtype=dtype)
    lse = torch.empty(B, Hq, Lq, dtype=torch.float32)
    return dict(q=q, k=k, v=v, out=out, lse=lse, mask=None, o_accum=None, lse_accum=None,
                num_splits=1, scale=0.125, causal=False, window_left=-1, window_right=-1,
                softcap=0.0)


def check(allow_cpu=True, **args):
    return EXT.check_fwd_args(**args, allow_cpu=allow_cpu)


@needs_ext
def test_valid_arguments_give_launch_parameters():
    a = make()
    p = check(**{**a, "causal": True})
    assert (p["B"], p["Hq"], p["Hkv"], p["group"], p["Lq"], p["Lk"]) == (2, 4, 2, 2, 10, 12)
    assert p["rows"] == 20 and p["dtype"] == "bfloat16" and p["head_dim_bucket"] == 64
    assert p["q_strides"] == (2560, 640, 64)
    assert p["window"] == (-1, 0)  # causal folded into the right side
    p = check(**{**a, "causal": True, "window_left": 3, "window_right": 5})
    assert p["window"] == (3, 0)
    # blhd views (transposed) keep their strides, no copy
    qb = torch.randn(2, 10, 4, 64).to(torch.bfloat16).transpose(1, 2)
    p = check(**{**a, "q": qb})
    assert p["q_strides"] == (2560, 64, 256)


@needs_ext
def test_broadcast_mask_strides():
    a = make()
    mask = torch.rand(1, 1, 10, 12) > 0.5
    p = check(**{**a, "mask": mask})
    assert p["mask_type"] == 1 and p["mask_strides"] == (0, 0, 12, 1)
    p = check(**{**a, "mask": mask.expand(2, 4, 10, 12)})
    assert p["mask_strides"] == (0, 0, 12, 1)
    for dtype, kind in ((torch.float32, 2), (torch.float16, 3), (torch.bfloat16, 4)):
        p = check(**{**a, "mask": torch.zeros(2, 1, 1, 12, dtype=dtype)})
        assert p["mask_type"] == kind and p["mask_strides"] == (12, 0, 0, 1)


@needs_ext
def test_numpy_float16_accepted_through_dlpack():
    a = make(dtype=torch.float16)
    p = check(**{**a, **{n: a[n].numpy() for n in ("q", "k", "v", "out", "lse")}})
    assert p["dtype"] == "float16"


@needs_ext
def test_cpu_tensors_rejected_by_fwd():
    a = make()
    with pytest.raises(ValueError, match="q must be a CUDA tensor"):
        check(allow_cpu=False, **a)
    with pytest.raises(ValueError, match="must be a CUDA tensor"):
        EXT.fwd(**a, config=0, stream=0)


def _aligned_view(shape, dtype, offset_elems):
    n = int(np.prod(shape))
    base = torch.zeros(n + 16, dtype=dtype)
    return base[offset_elems:offset_elems + n].view(shape)


BAD = [
    ("float32 q", lambda a: {"q": a["q"].float()}, TypeError, "q must be float16 or bfloat16"),
    ("dtype mix", lambda a: {"k": a["k"].half()}, TypeError, "k has dtype float16 but q has bfloat16"),
    ("rank 3", lambda a: {"q": a["q"][0]}, ValueError, "q must have rank 4"),
    ("last dim", lambda a: {"k": a["k"].transpose(2, 3).contiguous().transpose(2, 3)}, ValueError,
     "k must have a contiguous last dim"),
    ("stride %8", lambda a: {"v": torch.zeros(2, 2, 12, 68, dtype=torch.bfloat16)[..., :64]},
     ValueError, "v strides .* multiples of 8"),
    ("misaligned", lambda a: {"q": _aligned_view((2, 4, 10, 64), torch.bfloat16, 4)}, ValueError,
     "q data pointer must be 16-byte aligned"),
    ("batch", lambda a: {"k": a["k"][:1], "v": a["v"][:1]}, ValueError, "batch sizes differ"),
    ("gqa", lambda a: {"k": torch.zeros(2, 3, 12, 64, dtype=torch.bfloat16),
                       "v": torch.zeros(2, 3, 12, 64, dtype=torch.bfloat16)}, ValueError,
     "not a multiple of k's 3"),
    ("head dim", lambda a: {"q": torch.zeros(2, 4, 10, 264, dtype=torch.bfloat16),
                            "k": torch.zeros(2, 2, 12, 264, dtype=torch.bfloat16)}, ValueError,
     "head dim D=264 not supported"),
    ("out shape", lambda a: {"out": torch.empty(2, 4, 10, 32, dtype=torch.bfloat16)}, ValueError,
     "out must have shape"),
    ("lse dtype", lambda a: {"lse": torch.empty(2, 4, 10, dtype=torch.float16)}, TypeError,
     "lse must be float32"),
    ("lse shape", lambda a: {"lse": torch.empty(2, 4, 11)}, ValueError, "lse must have shape"),
    ("lse strides", lambda a: {"lse": torch.empty(2, 10, 4).transpose(1, 2)}, ValueError,
     "lse must be contiguous"),
    ("mask shape", lambda a: {"mask": torch.ones(1, 1, 3, 12, dtype=torch.bool)}, ValueError,
     "not broadcastable"),
    ("mask rank", lambda a: {"mask": torch.ones(10, 12, dtype=torch.bool)}, ValueError,
     "mask must have rank 4"),
    ("mask dtype", lambda a: {"mask": torch.ones(1, 1, 10, 12, dtype=torch.int32)}, TypeError,
     "mask must be bool, float16, bfloat16 or float32"),
    ("splits no workspace", lambda a: {"num_splits": 3}, ValueError, "needs the o_accum"),
    ("splits bad workspace", lambda a: {"num_splits": 2, "o_accum": torch.empty(2, 2, 4, 10, 32),
                                        "lse_accum": torch.empty(2, 2, 4, 10)}, ValueError,
     "o_accum must have shape"),
    ("splits 0", lambda a: {"num_splits": 0}, ValueError, "num_splits must be in"),
    ("empty", lambda a: {"q": torch.zeros(2, 4, 0, 64, dtype=torch.bfloat16),
                         "out": torch.zeros(2, 4, 0, 64, dtype=torch.bfloat16),
                         "lse": torch.zeros(2, 4, 0)}, ValueError, "empty problem"),
    ("scale", lambda a: {"scale": float("inf")}, ValueError, "scale must be finite"),
    ("softcap", lambda a: {"softcap": -1.0}, ValueError, "softcap must be >= 0"),
    ("window", lambda a: {"window_left": -2}, ValueError, "window sides must be >= 0 or -1"),
]


@needs_ext
@pytest.mark.parametrize("label, change, error, message", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_named_clearly(label, change, error, message):
    a = make()
    with pytest.raises(error, match=message):
        check(**{**a, **change(a)})


# -- backward argument checks ------------------------------------------------------------------
def make_bwd(**kw):
    a = make(**kw)
    return dict(dout=torch.empty_like(a["out"]), q=a["q"], k=a["k"], v=a["v"], out=a["out"],
                lse=a["lse"], dlse=None, mask=None, delta=torch.empty_like(a["lse"]),
                dq=torch.empty_like(a["q"]), dk=torch.empty_like(a["k"]),
                dv=torch.empty_like(a["v"]), dq_accum=torch.empty(2 * 4 * 10, 64),
                deterministic=False, scale=0.125, causal=True, window_left=-1, window_right=-1,
                softcap=0.0)


@needs_ext
def test_bwd_arguments_give_launch_parameters():
    a = make_bwd()
    p = EXT.check_bwd_args(**a, allow_cpu=True)
    assert p["dq_strides"] == (2560, 640, 64) and p["dk_strides"] == (1536, 768, 64)
    assert p["has_dlse"] is False and p["window"] == (-1, 0)
    assert p["deterministic"] is False and p["has_dq_accum"] is True
    p = EXT.check_bwd_args(**{**a, "dlse": torch.zeros(2, 4, 10)}, allow_cpu=True)
    assert p["has_dlse"] is True
    # deterministic: no atomics, so no dQ workspace is needed
    p = EXT.check_bwd_args(**{**a, "dq_accum": None, "deterministic": True}, allow_cpu=True)
    assert p["deterministic"] is True and p["has_dq_accum"] is False


BAD_BWD = [
    ("dq shape", {"dq": torch.empty(2, 4, 10, 32, dtype=torch.bfloat16)}, ValueError,
     "dq must have the shape of q"),
    ("dk dtype", {"dk": torch.empty(2, 2, 12, 64, dtype=torch.float16)}, TypeError,
     "dk has dtype float16"),
    ("dout stride", {"dout": torch.empty(2, 4, 64, 10, dtype=torch.bfloat16).transpose(2, 3)},
     ValueError, "dout must have a contiguous last dim"),
    ("delta shape", {"delta": torch.empty(2, 4, 11)}, ValueError, "delta must have shape"),
    ("dlse dtype", {"dlse": torch.empty(2, 4, 10, dtype=torch.float16)}, TypeError,
     "dlse must be float32"),
    ("dq_accum missing", {"dq_accum": None}, ValueError,
     r"dq_accum \(float32 \[80, 64\] workspace\) is required when deterministic is False"),
    ("dq_accum shape", {"dq_accum": torch.empty(80, 32)}, ValueError,
     r"dq_accum must have shape \(80, 64\)"),
    ("dq_accum dtype", {"dq_accum": torch.empty(80, 64, dtype=torch.float16)}, TypeError,
     "dq_accum must be float32"),
    ("dq_accum strides", {"dq_accum": torch.empty(64, 80).t()}, ValueError,
     "dq_accum must be contiguous"),
]


@needs_ext
@pytest.mark.parametrize("label, change, error, message", BAD_BWD, ids=[b[0] for b in BAD_BWD])
def test_bad_bwd_arguments_named_clearly(label, change, error, message):
    with pytest.raises(error, match=message):
        EXT.check_bwd_args(**{**make_bwd(), **change}, allow_cpu=True)


@needs_ext
def test_cpu_tensors_rejected_by_bwd():
    with pytest.raises(ValueError, match="must be a CUDA tensor"):
        EXT.bwd(**make_bwd(), stream=0)
