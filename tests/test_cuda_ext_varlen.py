"""The compiled bridge's fused varlen entry points (fwd_varlen / bwd_varlen / plan_varlen) on any
machine: their argument checks run on CPU tensors (check_*_varlen_args(..., allow_cpu=True)), so
every error they raise is exercised without a GPU.  The kernels are tested under the emulator
(tests/cuda_emulator/test_cuda_emu_varlen.py) and on a GPU (test_cuda_gpu.py)."""
from __future__ import annotations

import pytest

from mlx_attn.backends.cuda.extension import extension, load_error

torch = pytest.importorskip("torch")

EXT = extension()
pytestmark = pytest.mark.skipif(EXT is None or not hasattr(EXT, "fwd_varlen"),
                                reason=f"mlx_attn.backends.cuda._cuda is not built: {load_error()}")

LQ, LK = [3, 0, 7], [5, 4, 0]  # total_q 10, total_k 9


def make(Hq=4, Hkv=2, D=64, Dv=64, dtype=torch.bfloat16):
    cu_q = torch.tensor([0, 3, 3, 10], dtype=torch.int32)
    cu_k = torch.tensor([0, 5, 9, 9], dtype=torch.int32)
    return dict(q=torch.randn(10, Hq, D).to(dtype), k=torch.randn(9, Hkv, D).to(dtype),
                v=torch.randn(9, Hkv, Dv).to(dtype), out=torch.empty(10, Hq, Dv, dtype=dtype),
                lse=torch.empty(Hq, 10), cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=7,
                max_seqlen_k=5, scale=0.125, causal=True, window_left=-1, window_right=-1,
                softcap=0.0)


def check(allow_cpu=True, **args):
    return EXT.check_fwd_varlen_args(**args, allow_cpu=allow_cpu)


def test_valid_arguments_give_one_launch_over_the_packed_tensors():
    p = check(**make())
    assert (p["num_seqs"], p["B"], p["total_q"], p["Lq"], p["Lk"]) == (3, 3, 10, 7, 5)
    assert p["rows"] == 14 and p["group"] == 2 and p["num_splits"] == 1
    # packed [total, H, D]: batch stride 0, the row is the seq dim
    assert p["q_strides"] == (0, 64, 256) and p["k_strides"] == (0, 64, 128)
    assert p["out_strides"] == (0, 64, 256) and p["window"] == (-1, 0)
    # a strided view keeps its strides (no copy): rows of [10, 4, 80] cut to 64 columns
    q = torch.randn(10, 4, 80).to(torch.bfloat16)[..., :64]
    assert check(**{**make(), "q": q})["q_strides"] == (0, 80, 320)


def test_planner_never_splits():
    assert EXT.plan_varlen(64, 32, 8, 1, 131072, 128, 128, False, -1, -1, 0) == (1, 1)
    assert EXT.plan_varlen(64, 16, 16, 4096, 4096, 128, 128, True, -1, -1, 0) == (0, 1)


def _cu(values, dtype=torch.int32):
    return torch.tensor(values, dtype=dtype)


BAD = [
    ("cu dtype", {"cu_seqlens_q": _cu([0, 3, 3, 10], torch.int64)}, TypeError,
     "cu_seqlens_q must be int32, got int64"),
    ("cu rank", {"cu_seqlens_k": _cu([[0, 5, 9, 9]])}, ValueError,
     r"cu_seqlens_k must be 1-D with n \+ 1 >= 2 entries"),
    ("cu one entry", {"cu_seqlens_q": _cu([0]), "cu_seqlens_k": _cu([0])}, ValueError,
     "cu_seqlens_q must be 1-D with n"),
    ("cu lengths", {"cu_seqlens_k": _cu([0, 9])}, ValueError,
     "cu_seqlens_k has 2 entries but cu_seqlens_q has 4"),
    ("cu strided", {"cu_seqlens_q": _cu([0, 0, 3, 0, 3, 0, 10, 0])[::2]}, ValueError,
     "cu_seqlens_q must be contiguous"),
    ("q rank", {"q": torch.zeros(1, 10, 4, 64, dtype=torch.bfloat16)}, ValueError,
     r"q must have rank 3 \[total, H, D\]"),
    ("k stride", {"k": torch.zeros(9, 2, 68, dtype=torch.bfloat16)[..., :64]}, ValueError,
     "k strides .* multiples of 8"),
    ("out shape", {"out": torch.empty(10, 4, 32, dtype=torch.bfloat16)}, ValueError,
     r"out must have shape \(10, 4, 64\)"),
    ("lse shape", {"lse": torch.empty(10, 4)}, ValueError, r"lse must have shape \(4, 10\)"),
    ("max_seqlen_q", {"max_seqlen_q": 11}, ValueError, r"max_seqlen_q must be in \[1, total_q=10\]"),
    ("max_seqlen_k", {"max_seqlen_k": -1}, ValueError, r"max_seqlen_k must be in \[0, total_k=9\]"),
    ("dtype mix", {"v": torch.zeros(9, 2, 64, dtype=torch.float16)}, TypeError,
     "v has dtype float16 but q has bfloat16"),
    ("empty", {"q": torch.zeros(0, 4, 64, dtype=torch.bfloat16),
               "out": torch.zeros(0, 4, 64, dtype=torch.bfloat16), "lse": torch.zeros(4, 0)},
     ValueError, "empty problem"),
]


@pytest.mark.parametrize("label, change, error, message", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_named_clearly(label, change, error, message):
    with pytest.raises(error, match=message):
        check(**{**make(), **change})


def test_cpu_tensors_rejected_by_the_launchers():
    with pytest.raises(ValueError, match="q must be a CUDA tensor"):
        EXT.fwd_varlen(**make(), config=0, stream=0)
    with pytest.raises(ValueError, match="must be a CUDA tensor"):
        EXT.bwd_varlen(**make_bwd(), stream=0)


# -- backward ---------------------------------------------------------------------------------
def make_bwd(**kw):
    a = make(**kw)
    del a["out"], a["lse"]
    f = make(**kw)
    return dict(dout=torch.empty_like(f["out"]), out=f["out"], lse=f["lse"], dlse=None,
                delta=torch.empty_like(f["lse"]), dq=torch.empty_like(a["q"]),
                dk=torch.empty_like(a["k"]), dv=torch.empty_like(a["v"]),
                dq_accum=torch.empty(4 * 10, 64), deterministic=False, **a)


def test_bwd_arguments_give_launch_parameters():
    p = EXT.check_bwd_varlen_args(**make_bwd(), allow_cpu=True)
    assert p["total_q"] == 10 and p["has_dq_accum"] is True and p["deterministic"] is False
    p = EXT.check_bwd_varlen_args(**{**make_bwd(), "dq_accum": None, "deterministic": True,
                                     "dlse": torch.zeros(4, 10)}, allow_cpu=True)
    assert p["has_dq_accum"] is False and p["has_dlse"] is True


BAD_BWD = [
    ("dq_accum missing", {"dq_accum": None}, ValueError, "dq_accum .* is required when deterministic"),
    ("dq_accum shape", {"dq_accum": torch.empty(10, 64)}, ValueError,
     r"dq_accum must have shape \(40, 64\)"),
    ("delta shape", {"delta": torch.empty(10, 4)}, ValueError, r"delta must have shape \(4, 10\)"),
    ("dk shape", {"dk": torch.empty(9, 2, 32, dtype=torch.bfloat16)}, ValueError,
     "dk must have the shape of k"),
    ("dout rank", {"dout": torch.empty(1, 10, 4, 64, dtype=torch.bfloat16)}, ValueError,
     "dout must have rank 3"),
]


@pytest.mark.parametrize("label, change, error, message", BAD_BWD, ids=[b[0] for b in BAD_BWD])
def test_bad_bwd_arguments_named_clearly(label, change, error, message):
    with pytest.raises(error, match=message):
        EXT.check_bwd_varlen_args(**{**make_bwd(), **change}, allow_cpu=True)
