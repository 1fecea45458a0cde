"""The `cuda` backend: our FlashAttention-2-class CUDA kernels for torch CUDA tensors and for
MLX arrays on an NVIDIA GPU (mlx[cuda]).

The kernels (cuda_bridge/) take fp16/bf16, head dims that are multiples of 8 up to 256 (served
by the buckets 32/64/96/128/192/256, zero-padded inside the kernel), GQA/MQA, Dv != D, causal
(bottom-right), window, softcap, bool/additive masks and lse, on compute capability 8.0 or
newer.  They are reached through the torch custom ops `torch.ops.mlx_attn.fwd` / `.bwd`
(ops.py), so gradients flow through torch.autograd (tensor-core backward kernels: dQ by float32
atomics, or without atomics and bit-reproducible under torch.use_deterministic_algorithms).
varlen is one fused launch for all sequences, forward and backward (the kernels read
cu_seqlens; varlen_ops.py, docs/cuda.md).

MLX arrays reach the same kernels through flat-argument entry points shipped as PTX
(mlx_launch.py launches them with mx.fast.precompiled_cuda_kernel, mlx_attention.py attaches the
backward with mx.custom_function): forward and backward, dense and fused varlen.
"""
from __future__ import annotations

import functools
import sys

from ...call import AttentionCall
from .extension import emulated, extension, load_error
from .layout import layout_reasons
from . import mlx_launch
from ..base import Backend

_MAX_I32 = 2**31 - 1


class CudaBackend(Backend):
    name = "cuda"
    priority = 20
    array_kinds = frozenset({"torch", "mlx"})
    dtypes = frozenset({"float16", "bfloat16"})
    head_dims = tuple(range(8, 257, 8))
    features = frozenset({"causal", "mask", "window", "softcap", "lse", "gqa", "dv", "backward",
                          "varlen"})
    summary = ("torch CUDA tensors and MLX arrays on CUDA (sm_80+), fp16/bf16, forward + "
               "backward (nanobind extension; PTX for MLX)")

    def note(self) -> str:
        return ("emulated: MLX_ATTN_CUDA_EMULATE=1 runs the CUDA kernels on the CPU, on torch CPU "
                "tensors and MLX CPU arrays (a verification tool, slow)") if emulated() else ""

    def call_note(self, call: AttentionCall) -> str:
        notes = [self.note()]
        if call.varlen:
            notes.append("varlen: fused, one launch for all sequences (forward and backward)")
        return "; ".join(n for n in notes if n)

    # -- machine ---------------------------------------------------------------------------------
    @property
    def availability_reasons(self) -> list[str]:
        """Empty when either launcher (torch tensors, MLX arrays) can run here; else one line
        saying why neither can."""
        torch_reasons = self.torch_reasons()
        if not torch_reasons:
            return []
        mlx = self.mlx_reasons()
        if not mlx:
            return []
        if mlx[0] == torch_reasons[0]:  # the same cause (the extension missing): said once
            return [torch_reasons[0]]
        return [f"{torch_reasons[0]}; MLX arrays: {mlx[0]}"]

    def torch_reasons(self) -> list[str]:
        # cached per mode: MLX_ATTN_CUDA_EMULATE may change within a process (config.reload)
        cache = self.__dict__.setdefault("_availability", {})
        if emulated() not in cache:
            cache[emulated()] = list(self._availability_reasons())
        return cache[emulated()]

    def mlx_reasons(self) -> list[str]:
        cache = self.__dict__.setdefault("_mlx_availability", {})
        if emulated() not in cache:
            cache[emulated()] = list(self._mlx_reasons())
        return cache[emulated()]

    def _mlx_reasons(self) -> list[str]:
        """Why MLX arrays cannot reach the kernels on this machine ([] when they can)."""
        ext = extension()
        if ext is None:  # the planner and the launch dims live in the bridge
            return [load_error() if emulated() else
                    f"the CUDA extension mlx_attn.backends.cuda._cuda is not built or cannot be "
                    f"imported ({load_error()})"]
        try:
            import mlx.core as mx
        except ImportError:
            return ["mlx is not installed"]
        if emulated():
            import importlib
            try:
                importlib.import_module(mlx_launch.EMULATOR_MODULE)
            except ImportError as error:
                return [f"MLX_ATTN_CUDA_EMULATE=1 but {mlx_launch.EMULATOR_MODULE} cannot be "
                        f"imported ({type(error).__name__}: {error})"]
            return []
        cuda = getattr(mx, "cuda", None)
        if cuda is None or not cuda.is_available():
            return [f"mlx {mx.__version__} has no CUDA (mx.cuda.is_available() is False; "
                    f"install mlx[cuda12] or mlx[cuda13] on Linux with an NVIDIA GPU)"]
        if not callable(getattr(mx.fast, "precompiled_cuda_kernel", None)):
            return [f"mlx {mx.__version__} has no mx.fast.precompiled_cuda_kernel"]
        count, error = ext.device_count()
        info = ext.device_info(0) if count else error
        if not isinstance(info, dict):
            return [f"no CUDA device readable by the extension ({info})"]
        if tuple(info["capability"]) < (8, 0):
            cap = info["capability"]
            return [f"CUDA device 0 has compute capability {cap[0]}.{cap[1]}; the kernels need "
                    f"8.0 or newer"]
        if not any(mlx_launch.KERNEL_DIR.glob("mlx_*.ptx.gz")):
            return [f"this build ships no PTX of the MLX entry points (nothing in "
                    f"{mlx_launch.KERNEL_DIR}; built with MLX_ATTN_CUDA_MLX_PTX=ON)"]
        return []

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
        if call.kind == "mlx":
            return self._mlx_call_reasons(call)
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

    def _mlx_call_reasons(self, call: AttentionCall) -> list[str]:
        reasons = self.mlx_reasons()
        if reasons:
            return reasons
        if emulated() and call.device != "cpu":
            return [f"MLX's default device is {call.device}; under MLX_ATTN_CUDA_EMULATE=1 MLX "
                    f"CPU arrays stand for arrays on the CUDA device"]
        if not emulated() and call.device != "gpu":
            return [f"MLX's default device is {call.device}, not the GPU "
                    f"(mx.set_default_device(mx.gpu))"]
        ext = extension()
        reasons = _bucket_reasons(ext, call)
        if not reasons:
            image = mlx_launch.image_reason(call.dtype, ext.head_dim_bucket(call.D, call.Dv))
            reasons += [image] if image else []
        return reasons

    def call_reasons(self, call: AttentionCall) -> list[str]:
        reasons = []
        if call.kind == "mlx":  # passed row-contiguous (copied if need be); strides are int32
            from .mlx_attention import size_reasons
            reasons.extend(size_reasons(call))
        else:
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
        if call.kind == "mlx":
            from .mlx_attention import attention

            out, lse = attention(call)
            return out, (lse if call.return_lse else None)
        from . import ops

        out, lse = ops.fwd(call.q, call.k, call.v, call.mask, *_scalars(call),
                           call.layout == "blhd")
        return out, (lse if call.return_lse else None)

    def forward_varlen(self, call: AttentionCall):
        """One fused launch for all sequences: the kernels read cu_seqlens (varlen_ops.py; MLX:
        mlx_attention.py)."""
        if call.kind == "mlx":
            from .mlx_attention import attention

            out, lse = attention(call)
            return out, (lse if call.return_lse else None)
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
