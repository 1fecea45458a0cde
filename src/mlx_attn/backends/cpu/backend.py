"""The `cpu` backend: our native C++ tiled flash-attention kernel (cpu_bridge/, glue beside this file).

numpy arrays and torch CPU tensors go through mlx_attn.backends.cpu._kernel (raw pointers, zero-copy); MLX
arrays on the CPU go through mlx_attn.backends.cpu._mlx_primitive, an MLX primitive with a vjp, built
against one MLX version: any other installed MLX makes the backend decline MLX arrays with that
reason (mlx_attn.backends.cpu.status), so the dispatcher falls back instead of crashing.
"""
from __future__ import annotations

from ...call import FEATURES, AttentionCall
from ..base import Backend

_SUMMARY = "MLX CPU arrays, torch CPU tensors and numpy (native C++ kernel)"
# The kernel folds the scale into q as float32 (times log2(e)): beyond this, scale * q . k
# overflows float32 for ordinary inputs (inf - inf = NaN), where the math backend holds the
# scores divided by a power of two and stays exact.
MAX_SCALE = 2.0 ** 32


class CpuBackend(Backend):
    name = "cpu"
    priority = 30
    array_kinds = frozenset({"mlx", "torch", "numpy"})
    dtypes = frozenset({"float16", "bfloat16", "float32"})
    head_dims = None
    features = frozenset(FEATURES)

    @property
    def summary(self) -> str:
        """What it handles; says why MLX arrays are not served when the primitive is unusable."""
        if not self.available:
            return _SUMMARY
        reasons = mlx_reasons()
        if reasons:
            return "torch CPU tensors and numpy (native C++ kernel); not MLX arrays: " + \
                "; ".join(reasons)
        return _SUMMARY

    def _availability_reasons(self) -> list[str]:
        from .status import kernel_reasons  # noqa: PLC0415
        return kernel_reasons()

    def call_reasons(self, call: AttentionCall) -> list[str]:
        if call.softcap is None and abs(call.scale) > MAX_SCALE:
            return [f"scale {call.scale:g} is beyond {MAX_SCALE:g}: the kernel's float32 scores "
                    "would overflow (the math backend takes it)"]
        return []

    def extra_reasons(self, call: AttentionCall) -> list[str]:
        if call.kind == "torch" and call.device != "cpu":
            return [f"takes torch tensors on the CPU, got device {call.device}"]
        if call.kind == "mlx":
            if call.device != "cpu":
                return [f"takes MLX arrays on the CPU device, got {call.device} "
                        "(use mx.set_default_device(mx.cpu) or a CPU stream)"]
            return list(mlx_reasons())
        return []

    def forward(self, call: AttentionCall):
        return _run(call)

    def forward_varlen(self, call: AttentionCall):
        return _run(call)


def mlx_reasons() -> tuple:
    from .status import mlx_reasons as reasons  # noqa: PLC0415
    return reasons()


_RUNNERS: dict = {}


def _run(call: AttentionCall):
    runner = _RUNNERS.get(call.kind)
    if runner is None:  # imported on first use: numpy callers never import torch or mlx
        if call.kind == "numpy":
            from .numpy_op import numpy_forward as runner  # noqa: PLC0415
        elif call.kind == "torch":
            from .torch_op import torch_forward as runner  # noqa: PLC0415
        else:
            from .mlx_op import mlx_forward as runner  # noqa: PLC0415
        _RUNNERS[call.kind] = runner
    return runner(call)
