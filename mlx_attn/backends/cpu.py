"""The `cpu` backend: our native C++ tiled flash-attention kernel (csrc/cpu).

numpy arrays and torch CPU tensors go through mlx_attn._cpu (raw pointers, zero-copy); MLX arrays
on the CPU go through mlx_attn._cpu_mlx, an MLX primitive with a vjp, built against one MLX
version: another installed MLX version makes the backend decline MLX arrays (never a crash).
"""
from __future__ import annotations

import functools

from ..call import FEATURES, AttentionCall
from .base import Backend


class CpuBackend(Backend):
    name = "cpu"
    priority = 30
    array_kinds = frozenset({"mlx", "torch", "numpy"})
    dtypes = frozenset({"float16", "bfloat16", "float32"})
    head_dims = None
    features = frozenset(FEATURES)
    summary = "MLX CPU arrays, torch CPU tensors and numpy (native C++ kernel)"

    def _availability_reasons(self) -> list[str]:
        try:
            from .. import cpu_ops  # noqa: PLC0415
            cpu_ops.native()
        except ImportError as error:
            return [f"the native extension mlx_attn._cpu is not built ({error})"]
        return []

    def extra_reasons(self, call: AttentionCall) -> list[str]:
        if call.kind == "torch" and call.device != "cpu":
            return [f"takes torch tensors on the CPU, got device {call.device}"]
        if call.kind == "mlx":
            if call.device != "cpu":
                return ["takes MLX arrays on the CPU device (the default device is the GPU)"]
            return list(mlx_reasons())
        return []

    def forward(self, call: AttentionCall):
        return _run(call)

    def forward_varlen(self, call: AttentionCall):
        return _run(call)


def _run(call: AttentionCall):
    from .. import cpu_ops  # noqa: PLC0415
    if call.kind == "numpy":
        return cpu_ops.numpy_forward(call)
    if call.kind == "torch":
        from .. import cpu_torch  # noqa: PLC0415
        return cpu_torch.torch_forward(call)
    from .. import cpu_mlx  # noqa: PLC0415
    return cpu_mlx.mlx_forward(call)


def version_reason(built: str, installed: str):
    """Why an extension built against MLX `built` cannot serve MLX `installed` (None if it can)."""
    if not built:
        return "the extension was built without the MLX primitive (MLX not found at build time)"
    if built != installed:
        return (f"the MLX primitive was built for mlx {built} but mlx {installed} is installed; "
                f"rebuild mlx_attn")
    return None


@functools.cache
def mlx_reasons() -> tuple:
    """Why MLX arrays cannot use the kernel (empty when they can). Checked before the MLX
    extension is imported, so a mismatched MLX never loads it."""
    from .. import cpu_ops  # noqa: PLC0415
    import mlx.core as mx  # noqa: PLC0415
    reason = version_reason(getattr(cpu_ops.native(), "MLX_BUILT_VERSION", ""), mx.__version__)
    if reason:
        return (reason,)
    try:
        from .. import _cpu_mlx  # noqa: F401, PLC0415
    except ImportError as error:
        return (f"the MLX primitive mlx_attn._cpu_mlx failed to load ({error})",)
    return ()
