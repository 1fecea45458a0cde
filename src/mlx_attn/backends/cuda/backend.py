"""The `cuda` backend: our FlashAttention-2-class CUDA kernels for torch CUDA tensors.

The kernels (cuda_bridge/) take fp16/bf16, head dims that are multiples of 8 up to 256 (served
by the buckets 32/64/96/128/192/256, zero-padded inside the kernel), GQA/MQA, Dv != D, causal
(bottom-right), window, softcap, bool/additive masks and lse, on compute capability 8.0 or
newer.  They are reached through the torch custom ops `torch.ops.mlx_attn.fwd` / `.bwd`
(ops.py), so gradients flow through torch.autograd (tensor-core backward kernels: dQ by float32
atomics, or without atomics and bit-reproducible under torch.use_deterministic_algorithms).
varlen is one fused launch for all sequences, forward and backward (the kernels read
cu_seqlens; varlen_ops.py, docs/cuda.md).
"""
from __future__ import annotations

import functools
import sys

from ...call import AttentionCall
from .extension import emulated, extension, load_error
from .layout import layout_reasons
from ..base import Backend

_MAX_I32 = 2**31 - 1


class CudaBackend(Backend):
    name = "cuda"
    priority = 20
    array_kinds = frozenset({"torch"})
    dtypes = frozenset({"float16", "bfloat16"})
    head_dims = tuple(range(8, 257, 8))
    features = frozenset({"causal", "mask", "window", "softcap", "lse", "gqa", "dv", "backward",
                          "varlen"})
    summary = "torch CUDA tensors (sm_80+), fp16/bf16, forward + backward (nanobind extension)"

    def note(self) -> str:
        return ("emulated: MLX_ATTN_CUDA_EMULATE=1 runs the CUDA kernels on the CPU, on torch CPU "
                "tensors (a verification tool, slow)") if emulated() else ""

    def call_note(self, call: AttentionCall) -> str:
        notes = [self.note()]
        if call.varlen:
            notes.append("varlen: fused, one launch for all sequences (forward and backward)")
        return "; ".join(n for n in notes if n)

    # -- machine ---------------------------------------------------------------------------------
    @property
    def availability_reasons(self) -> list[str]:
        # cached per mode: MLX_ATTN_CUDA_EMULATE may change within a process (config.reload)
        cache = self.__dict__.setdefault("_availability", {})
        if emulated() not in cache:
            cache[emulated()] = list(self._availability_reasons())
        return cache[emulated()]

    def _availability_reasons(self) -> list[str]:
        ext = extension()
        if ext is None:
            if emulated():
                return [load_error()]
            return [f"the CUDA extension mlx_attn.backends.cuda._cuda is not built or cannot be "
                    f"imported ({load_error()})"]
        if emulated():
            return []
        torch = sys.modules.get("torch")  # only if the caller already uses torch
        if torch is not None and getattr(torch.version, "cuda", None) is None:
            return [f"torch {torch.__version__} was built without CUDA support"]
        count, error = ext.device_count()
        if count == 0:
            return [f"no CUDA device ({error})"]
        caps = []
        for index in range(count):
            info = ext.device_info(index)
            if isinstance(info, dict):
                caps.append(tuple(info["capability"]))
        if not any(cap >= (8, 0) for cap in caps):
            found = ", ".join(f"{a}.{b}" for a, b in caps) or "none readable"
            return [f"no CUDA device with compute capability >= 8.0 (found {found}); the "
                    f"kernels use cp.async, ldmatrix and bf16 mma.sync"]
        images = [_kernel_image_error(ext, i) for i in range(count)]
        if all(images):
            return [f"no kernel image for any device: {images[0]}"]
        return []

    # -- per call --------------------------------------------------------------------------------
    def extra_reasons(self, call: AttentionCall) -> list[str]:
        if emulated():
            if call.device != "cpu":
                return [f"tensors are on {call.device}; under MLX_ATTN_CUDA_EMULATE=1 the emulated "
                        f"kernels take torch CPU tensors"]
            return _bucket_reasons(extension(), call)
        if not call.device.startswith("cuda"):
            why = f"tensors are on {call.device}, not a CUDA device"
            torch = sys.modules.get("torch")
            if torch is not None and getattr(torch.version, "cuda", None) is None:
                why += f" (torch {torch.__version__} has no CUDA support)"
            return [why]
        import torch

        ext = extension()
        reasons = []
        index = torch.device(call.device).index
        if index is None:
            index = torch.cuda.current_device()
        cap = _capability(index)
        if cap < (8, 0):
            reasons.append(f"device {call.device} has compute capability {cap[0]}.{cap[1]}; "
                           f"needs 8.0 or newer")
        image = _kernel_image_error(ext, index)
        if image:
            reasons.append(f"no kernel image for {call.device}: {image}")
        return reasons + _bucket_reasons(ext, call)

    def call_reasons(self, call: AttentionCall) -> list[str]:
        reasons = []
        for name, x in (("q", call.q), ("k", call.k), ("v", call.v)):
            reasons.extend(layout_reasons(name, x))
        if call.varlen:  # Lq / Lk are total_q / total_k; the grid is sized by the maxima
            longest_q = min(call.max_seqlen_q, call.Lq)  # the op launches no more rows
            too_large = (longest_q * call.group > _MAX_I32 or call.Lq > _MAX_I32 or
                         call.Lk > _MAX_I32 or call.Hq * call.Lq > _MAX_I32 or
                         call.B * call.Hq > _MAX_I32)
        else:
            too_large = (call.Lq * call.group > _MAX_I32 or call.Lk > _MAX_I32 or
                         call.B * call.Hq > _MAX_I32)
        if too_large:
            reasons.append("problem too large for the kernels' 32-bit row indices")
        return reasons

    # -- run ---------------------------------------------------------------------------------------
    def forward(self, call: AttentionCall):
        from . import ops

        out, lse = ops.fwd(call.q, call.k, call.v, call.mask, *_scalars(call),
                           call.layout == "blhd")
        return out, (lse if call.return_lse else None)

    def forward_varlen(self, call: AttentionCall):
        """One fused launch for all sequences: the kernels read cu_seqlens (varlen_ops.py)."""
        from . import varlen_ops

        out, lse = varlen_ops.fwd_varlen(call.q, call.k, call.v, call.cu_seqlens_q,
                                         call.cu_seqlens_k, int(call.max_seqlen_q),
                                         int(call.max_seqlen_k), *_scalars(call))
        return out, (lse if call.return_lse else None)


def _bucket_reasons(ext, call: AttentionCall) -> list[str]:
    bucket = ext.head_dim_bucket(call.D, call.Dv)
    if bucket not in _built_head_dims(ext):
        return [f"head-dim bucket {bucket} (D={call.D}, Dv={call.Dv}) is not compiled into this "
                f"build (built: {_built_head_dims(ext)})"]
    return []


def _scalars(call: AttentionCall) -> tuple:
    """(scale, causal, window_left, window_right, softcap) as the custom op takes them."""
    left, right = call.window if call.window is not None else (-1, -1)
    return (float(call.scale), bool(call.causal), int(left), int(right),
            float(call.softcap or 0.0))


@functools.cache
def _capability(index: int) -> tuple:
    import torch

    return tuple(torch.cuda.get_device_capability(index))


@functools.cache
def _kernel_image_error(ext, index: int) -> str:
    return ext.kernel_image_error(index)


@functools.cache
def _built_head_dims(ext) -> list:
    return list(ext.head_dims())
