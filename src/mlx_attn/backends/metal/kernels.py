"""Launching the Metal kernels on MLX arrays (the MLX launcher), building each variant once.

The kernel factory is a parameter: `mx.fast.metal_kernel` on a Mac, the project's MSL emulator
(`msl_emulator.metal_kernel` (emulators/), same signature) in tests on Linux. One factory object is
created per kernel source; MLX (and the emulator) compile one library per template variant
and cache it, so each (dtype, head dim, block size, mask kind, varlen) variant is built once.
Grids, template arguments and output shapes come from launches.py, which the torch launcher
(torch_launch.py) shares.
"""
from __future__ import annotations

import mlx.core as mx

from . import launches, shaders
from .launches import Config, Launch, Problem
from .shaders import KERNEL_DIR, SIGNATURES, kernel_text  # noqa: F401  (re-exported)

__all__ = ["Config", "KERNEL_DIR", "MetalKernels", "SIGNATURES", "kernel_text"]


def _dtype_name(dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1]


def _mx_dtype(name: str):
    return mx.bool_ if name == "bool" else getattr(mx, name)


class MetalKernels:
    """The attention kernels built with one kernel factory."""

    def __init__(self, factory=None):
        self._factory = factory
        self._kernels = {}

    @property
    def factory(self):
        return self._factory if self._factory is not None else mx.fast.metal_kernel

    def kernel(self, name: str):
        k = self._kernels.get(name)
        if k is None:
            inputs, outputs = SIGNATURES[name]
            k = self.factory(name=f"mlx_attn_{name}", input_names=list(inputs),
                             output_names=list(outputs), source=shaders.body(name),
                             header=shaders.header(), ensure_row_contiguous=False)
            self._kernels[name] = k
        return k

    def run(self, launch: Launch, inputs):
        """One launch of launches.py's description on MLX arrays."""
        template = [(n, _mx_dtype(v) if isinstance(v, str) else v) for n, v in launch.template]
        return self.kernel(launch.kernel)(
            inputs=inputs, template=template, output_shapes=list(launch.output_shapes),
            output_dtypes=[_mx_dtype(d) for d in launch.output_dtypes],
            grid=launch.grid, threadgroup=launch.threadgroup)

    # -- shared inputs ----------------------------------------------------------------------
    @staticmethod
    def seq_inputs(cfg: Config, mask, cu_q, cu_k, dtype):
        """The mask and cu_seqlens inputs, with placeholders (of >= 8 elements, so they are
        device buffers like the real ones) when absent."""
        if mask is None:
            mask = mx.zeros((1, 1, 1, 8), dtype=dtype)
        pad = mx.zeros((8,), dtype=mx.int32)
        cu_q = pad if cu_q is None else mx.concatenate([cu_q, pad])
        cu_k = pad if cu_k is None else mx.concatenate([cu_k, pad])
        return mask, cu_q, cu_k

    def _common(self, cfg, q, k, v, mask, cu_q, cu_k):
        """(problem, the eight inputs every attention kernel starts with; ip says one key split)."""
        mask, cu_q, cu_k = self.seq_inputs(cfg, mask, cu_q, cu_k, q.dtype)
        p = Problem.of(q.shape, k.shape, v.shape, _dtype_name(q.dtype), _dtype_name(mask.dtype))
        return p, [q, k, v, mask, cu_q, cu_k] + self._params(cfg, p)

    @staticmethod
    def _params(cfg, p, nsplit=1):
        ip, fp = launches.params(cfg, p, nsplit)
        return [mx.array(ip, dtype=mx.int32), mx.array(fp, dtype=mx.float32)]

    # -- forward ----------------------------------------------------------------------------
    def forward(self, cfg: Config, q, k, v, mask, cu_q, cu_k):
        """out [Z, Hq, Ltot, Dv] in q's dtype and lse [Z, Hq, Ltot] float32 (bhld views in)."""
        p, inputs = self._common(cfg, q, k, v, mask, cu_q, cu_k)
        if not launches.is_decode(cfg, p):
            return self.run(launches.prefill(cfg, p), inputs)
        partial, merge, nsplit = launches.decode(cfg, p)
        inputs[6:8] = self._params(cfg, p, nsplit)
        part_o, part_ml = self.run(partial, inputs)
        return self.run(merge, [part_o, part_ml, inputs[4], inputs[6]])

    # -- backward ---------------------------------------------------------------------------
    def backward(self, cfg: Config, q, k, v, mask, cu_q, cu_k, out, lse, dout, dlse):
        """(dq, dk, dv) in the shapes of the bhld views q, k, v (contiguous, q's dtype)."""
        # delta = rowsum(dO * O); an lse cotangent g adds g * P to dS, i.e. delta - g.
        delta = mx.sum(dout.astype(mx.float32) * out.astype(mx.float32), axis=-1)
        if dlse is not None:
            delta = delta - dlse.astype(mx.float32)
        delta = mx.contiguous(delta)
        lse = mx.contiguous(lse)
        p, inputs = self._common(cfg, q, k, v, mask, cu_q, cu_k)
        inputs += [dout, lse, delta]
        dq_launch, dkv_launch = launches.backward(cfg, p)
        (dq,) = self.run(dq_launch, inputs)
        dk, dv = self.run(dkv_launch, inputs)
        return dq, dk, dv
