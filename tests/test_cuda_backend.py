"""The `cuda` backend's declarations and reasons, and its host-side varlen logic, on the CPU.

No GPU is needed: availability reasons are checked as they are on this machine and with the
extension or the device faked away; per-call reasons with availability forced on; varlen's
per-sequence slicing runs through the custom op's CPU stand-in and is compared with the float64
reference.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mlx_attn import explain, flash_attention_varlen  # noqa: E402
from mlx_attn.backends.cuda import backend as cuda_backend  # noqa: E402
from mlx_attn.backends.cuda.layout import layout_reasons as _layout_reasons  # noqa: E402
from mlx_attn.backends.cuda.backend import CudaBackend, _scalars  # noqa: E402
from mlx_attn.reference import max_error, passes, reference_varlen  # noqa: E402
from mlx_attn.validate import check_dense, check_varlen  # noqa: E402

DENSE = dict(scale=None, causal=False, mask=None, window=None, softcap=None, return_lse=False,
             layout="bhld")


def test_declarations():
    b = CudaBackend()
    assert b.dtypes == {"float16", "bfloat16"} and b.array_kinds == {"torch", "mlx"}
    assert {"causal", "mask", "window", "softcap", "lse", "gqa", "dv", "backward",
            "varlen"} <= b.features
    assert 40 in b.head_dims and 72 in b.head_dims and 256 in b.head_dims
    assert 264 not in b.head_dims and 36 not in b.head_dims


def test_unavailable_here_with_a_reason():
    reasons = CudaBackend().availability_reasons
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert reasons and all(isinstance(r, str) and r for r in reasons)
    text = " ".join(reasons)
    assert ("not built" in text or "without CUDA" in text or "no CUDA device" in text), text


def test_reason_when_extension_missing(monkeypatch):
    monkeypatch.setattr(cuda_backend, "extension", lambda: None)
    monkeypatch.setattr(cuda_backend, "load_error", lambda: "ImportError: no module")
    reasons = CudaBackend().availability_reasons
    assert len(reasons) == 1 and "not built" in reasons[0] and "ImportError" in reasons[0]


class _FakeExt:
    """Just enough of mlx_attn.backends.cuda._cuda for the availability checks."""

    def __init__(self, count, cap=(9, 0)):
        self.count, self.cap = count, cap

    def device_count(self):
        return (self.count, "" if self.count else "no CUDA-capable device is detected")

    def device_info(self, index):
        return {"capability": self.cap, "sms": 132, "name": "fake"}

    def kernel_image_error(self, index):
        return ""


@pytest.mark.parametrize("ext, needle", [(_FakeExt(0), "no CUDA device"),
                                         (_FakeExt(1, (7, 5)), "compute capability >= 8.0")])
def test_reason_without_a_usable_device(monkeypatch, ext, needle):
    monkeypatch.setattr(cuda_backend, "extension", lambda: ext)
    monkeypatch.setattr(torch.version, "cuda", "12.8")  # pretend torch has CUDA
    reasons = CudaBackend().availability_reasons
    assert len(reasons) == 1 and needle in reasons[0], reasons


def test_explain_names_the_cuda_backend():
    q = torch.randn(1, 2, 5, 64, dtype=torch.float16)
    text = explain(q, q, q)
    line = next(x for x in text.splitlines() if x.strip().startswith("cuda"))
    assert "cannot run" in line


@pytest.fixture
def available(monkeypatch):
    """A backend whose machine checks pass, to see its per-call reasons."""
    backend = CudaBackend()
    monkeypatch.setattr(CudaBackend, "_availability_reasons", lambda self: [])
    return backend


def _call(dtype=torch.float16, D=64, Dv=None, **kw):
    q = torch.randn(1, 2, 5, D, dtype=dtype)
    v = torch.randn(1, 2, 5, Dv or D, dtype=dtype)
    return check_dense(q, q, v, **{**DENSE, **kw})


@pytest.mark.parametrize("make, needle", [
    (lambda: _call(torch.float32), "dtype float32 not supported"),
    (lambda: _call(D=264), "head dim D=264 not supported"),
    (lambda: _call(Dv=36), "value head dim Dv=36 not supported"),
    (lambda: _call(), "not a CUDA device"),
])
def test_per_call_reasons(available, make, needle):
    reasons = available.not_supported_reasons(make())
    assert any(needle in r for r in reasons), reasons


def test_numpy_arrays_rejected(available):
    import numpy as np

    q = np.zeros((1, 2, 5, 64), dtype=np.float16)
    call = check_dense(q, q, q, **DENSE)
    assert any("takes mlx, torch arrays" in r for r in available.not_supported_reasons(call))


def test_layout_reasons():
    base = torch.zeros(1, 2, 5, 64, dtype=torch.float16)
    assert _layout_reasons("q", base) == []
    assert _layout_reasons("q", base.transpose(1, 2)) == []            # blhd view: fine
    assert "non-contiguous last dim" in _layout_reasons("k", base.transpose(2, 3))[0]
    odd = torch.zeros(1, 2, 5, 68, dtype=torch.float16)[..., :64]
    assert "multiples of 8" in _layout_reasons("v", odd)[0]
    shifted = torch.zeros(1 * 2 * 5 * 64 + 4, dtype=torch.float16)[4:].view(1, 2, 5, 64)
    assert "16-byte aligned" in _layout_reasons("q", shifted)[0]


def test_scalars_fold_window_and_defaults():
    call = _call(causal=True, window=(3, 2), softcap=3.0, scale=0.5)    # L = 5
    assert _scalars(call) == (0.5, True, 3, 2, 3.0)
    # a side reaching every key (>= L - 1) arrives as -1 (validate canonicalises it)
    assert _scalars(_call(window=(4, 2**40))) == (1 / 8, False, -1, -1, 0.0)
    assert _scalars(_call()) == (1 / 8, False, -1, -1, 0.0)


VARLEN = [([0, 3, 3, 10, 11], [0, 5, 9, 9, 20]),   # an empty query seq and an empty key seq
          ([0, 7], [0, 7]), ([0, 1, 2], [0, 13, 14])]


@pytest.mark.parametrize("cu_q, cu_k", VARLEN)
@pytest.mark.parametrize("causal", [False, True])
def test_varlen_slicing_matches_reference(cu_q, cu_k, causal):
    """forward_varlen's per-sequence views through the op's CPU stand-in vs the reference."""
    g = torch.Generator().manual_seed(3)
    Hq, Hkv, D = 4, 2, 40
    q = torch.randn(cu_q[-1], Hq, D, generator=g).half()
    k = torch.randn(cu_k[-1], Hkv, D, generator=g).half()
    v = torch.randn(cu_k[-1], Hkv, D, generator=g).half()
    cq, ck = torch.tensor(cu_q, dtype=torch.int32), torch.tensor(cu_k, dtype=torch.int32)
    lengths = dict(max_seqlen_q=max(b - a for a, b in zip(cu_q, cu_q[1:])),
                   max_seqlen_k=max(b - a for a, b in zip(cu_k, cu_k[1:])))
    call = check_varlen(q, k, v, cq, ck, lengths["max_seqlen_q"], lengths["max_seqlen_k"],
                        scale=None, causal=causal, window=None, softcap=None, return_lse=True)
    out, lse = CudaBackend().forward_varlen(call)
    ref_out, ref_lse = reference_varlen(q, k, v, cq, ck, causal=causal)
    math_out, _ = flash_attention_varlen(q, k, v, cq, ck, lengths["max_seqlen_q"],
                                         lengths["max_seqlen_k"], causal=causal,
                                         return_lse=True, backend="math")
    assert out.shape == (cu_q[-1], Hq, D) and lse.shape == (Hq, cu_q[-1])
    assert passes(max_error(out, ref_out), max_error(math_out, ref_out))
    assert max_error(lse, ref_lse) < 1e-3


# -- MLX arrays (mlx_launch.py / mlx_attention.py): why they cannot reach the kernels -------------
@pytest.fixture
def mlx_cuda(monkeypatch):
    """MLX claiming CUDA, an extension with one sm_90 device: each test removes one piece."""
    mx = pytest.importorskip("mlx.core")
    from mlx_attn.backends.cuda import mlx_launch

    monkeypatch.setattr(cuda_backend, "extension", lambda: _FakeExt(1))
    if getattr(mx, "cuda", None) is not None:
        monkeypatch.setattr(mx.cuda, "is_available", lambda: True)
    if not hasattr(mx.fast, "precompiled_cuda_kernel"):
        pytest.skip(f"mlx {mx.__version__} has no mx.fast.precompiled_cuda_kernel")
    return mx, mlx_launch


def test_mlx_reason_when_mlx_has_no_cuda(monkeypatch, mlx_cuda):
    mx, _ = mlx_cuda
    monkeypatch.setattr(mx.cuda, "is_available", lambda: False)
    reasons = CudaBackend().mlx_reasons()
    assert len(reasons) == 1 and "mx.cuda.is_available() is False" in reasons[0], reasons


def test_mlx_reason_without_precompiled_cuda_kernel(monkeypatch, mlx_cuda):
    mx, _ = mlx_cuda
    monkeypatch.delattr(mx.fast, "precompiled_cuda_kernel")
    reasons = CudaBackend().mlx_reasons()
    assert len(reasons) == 1 and "precompiled_cuda_kernel" in reasons[0], reasons


def test_mlx_reason_when_the_ptx_is_missing(monkeypatch, tmp_path, mlx_cuda):
    _, mlx_launch = mlx_cuda
    monkeypatch.setattr(mlx_launch, "KERNEL_DIR", tmp_path)
    reasons = CudaBackend().mlx_reasons()
    assert len(reasons) == 1 and "no PTX" in reasons[0], reasons
    assert "mlx_fp16_hdim64.ptx.gz missing" in mlx_launch.image_reason("float16", 64)


def test_mlx_reason_on_an_old_gpu(monkeypatch, mlx_cuda):
    monkeypatch.setattr(cuda_backend, "extension", lambda: _FakeExt(1, (7, 5)))
    reasons = CudaBackend().mlx_reasons()
    assert len(reasons) == 1 and "compute capability 7.5" in reasons[0], reasons


def test_mlx_ready_when_every_piece_is_there(monkeypatch, tmp_path, mlx_cuda):
    _, mlx_launch = mlx_cuda
    (tmp_path / "mlx_fp16_hdim64.ptx.gz").write_bytes(b"")
    monkeypatch.setattr(mlx_launch, "KERNEL_DIR", tmp_path)
    assert CudaBackend().mlx_reasons() == []


def test_one_availability_line_for_both_launchers(monkeypatch):
    monkeypatch.setattr(CudaBackend, "_availability_reasons", lambda self: ["torch: no"])
    monkeypatch.setattr(CudaBackend, "_mlx_reasons", lambda self: ["mlx: no"])
    assert CudaBackend().availability_reasons == ["torch: no; MLX arrays: mlx: no"]
    monkeypatch.setattr(CudaBackend, "_mlx_reasons", lambda self: [])
    assert CudaBackend().availability_reasons == []


def test_mlx_arrays_past_int32_strides_are_declined(available):
    mx = pytest.importorskip("mlx.core")
    from mlx_attn.backends.cuda.mlx_attention import size_reasons

    q = mx.zeros((1, 2, 5, 64), dtype=mx.float16)
    call = check_dense(q, q, q, **DENSE)
    assert size_reasons(call) == []
    call.Lq = 2**30  # shapes only: the rule reads the call's sizes
    assert "2^31 - 1 elements" in size_reasons(call)[0]
