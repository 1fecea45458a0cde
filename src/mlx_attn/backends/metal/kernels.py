"""Building the Metal kernels once per variant, and launching them (grids, template args).

The kernel factory is a parameter: `mx.fast.metal_kernel` on a Mac, the project's MSL emulator
(`msl_emulator.metal_kernel` (emulators/), same signature) in tests on Linux. One factory object is
created per kernel source; MLX (and the emulator) compile one library per template variant
and cache it, so each (dtype, head dim, block size, mask kind, varlen) variant is built once.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from . import blocks



def _shader_dir() -> Path:
    """The shaders: installed as package data next to this file (wheels), or the clone's top-level
    metal/ folder when the package runs from its source tree (editable install, PYTHONPATH=src)."""
    here = Path(__file__).resolve().parent
    installed = here / "shaders"
    return installed if installed.is_dir() else here.parents[3] / "metal"


KERNEL_DIR = _shader_dir()

# name -> (input names, output names)
SIGNATURES = {
    "forward_prefill": (("q", "k", "v", "mask", "cu_q", "cu_k", "ip", "fp"), ("out", "lse")),
    "forward_decode": (("q", "k", "v", "mask", "cu_q", "cu_k", "ip", "fp"), ("part_o", "part_ml")),
    "decode_merge": (("part_o", "part_ml", "cu_q", "ip"), ("out", "lse")),
    "backward_dq": (("q", "k", "v", "mask", "cu_q", "cu_k", "ip", "fp", "dout", "lse", "delta"),
                    ("dq",)),
    "backward_dkv": (("q", "k", "v", "mask", "cu_q", "cu_k", "ip", "fp", "dout", "lse", "delta"),
                     ("dk", "dv")),
}


@functools.cache
def kernel_text(name: str) -> str:
    return (KERNEL_DIR / name).read_text()


@dataclass(frozen=True)
class Config:
    """What is fixed for one attention call (hashable: it keys the custom_function cache)."""
    scale: float
    softcap: float          # 0.0 = off
    left: int               # window sides with causal folded into `right`; -1 = unbounded
    right: int
    mask_kind: int          # 0 none, 1 bool, 2 additive
    varlen: bool = False
    nseq: int = 0           # varlen: number of sequences
    max_q: int = 0          # varlen: longest query / key sequence
    max_k: int = 0


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
                             output_names=list(outputs), source=kernel_text(f"{name}.metal"),
                             header=kernel_text("common.h"), ensure_row_contiguous=False)
            self._kernels[name] = k
        return k

    # -- shared inputs ----------------------------------------------------------------------
    @staticmethod
    def params(cfg: Config, q, k, nsplit: int = 1):
        Hq, Ltot, Hkv, Lktot = q.shape[1], q.shape[2], k.shape[1], k.shape[2]
        ip = [Ltot, Lktot, Hq, Hq // Hkv, cfg.left, cfg.right, nsplit] + [0] * 9
        fp = [cfg.scale, cfg.softcap] + [0.0] * 6
        return mx.array(ip, dtype=mx.int32), mx.array(fp, dtype=mx.float32)

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

    @staticmethod
    def batches(cfg: Config, q) -> int:
        return cfg.nseq if cfg.varlen else q.shape[0]

    # -- forward ----------------------------------------------------------------------------
    def forward(self, cfg: Config, q, k, v, mask, cu_q, cu_k):
        """out [Z, Hq, Ltot, Dv] in q's dtype and lse [Z, Hq, Ltot] float32 (bhld views in)."""
        max_q = cfg.max_q if cfg.varlen else q.shape[2]
        if max_q <= blocks.DECODE_MAX_ROWS:
            return self.forward_decode(cfg, q, k, v, mask, cu_q, cu_k)
        return self.forward_prefill(cfg, q, k, v, mask, cu_q, cu_k)

    def _common(self, cfg, q, k, v, mask, cu_q, cu_k, nsplit=1):
        ip, fp = self.params(cfg, q, k, nsplit)
        mask, cu_q, cu_k = self.seq_inputs(cfg, mask, cu_q, cu_k, q.dtype)
        return [q, k, v, mask, cu_q, cu_k, ip, fp], mask.dtype

    def forward_prefill(self, cfg: Config, q, k, v, mask, cu_q, cu_k):
        Zq, Hq, Ltot, D = q.shape
        Dv = v.shape[3]
        max_q = cfg.max_q if cfg.varlen else Ltot
        bk = blocks.tile_rows(D, Dv, q.dtype.size)
        wm = blocks.SIMDGROUPS
        inputs, mtype = self._common(cfg, q, k, v, mask, cu_q, cu_k)
        nblocks = -(-max_q // (8 * wm))
        return self.kernel("forward_prefill")(
            inputs=inputs,
            template=[("T", q.dtype), ("MT", mtype), ("MASK", cfg.mask_kind), ("D", D),
                      ("DV", Dv), ("BK", bk), ("WM", wm), ("VARLEN", cfg.varlen)],
            output_shapes=[(Zq, Hq, Ltot, Dv), (Zq, Hq, Ltot)],
            output_dtypes=[q.dtype, mx.float32],
            grid=(nblocks * 32 * wm, Hq, self.batches(cfg, q)), threadgroup=(32 * wm, 1, 1))

    def forward_decode(self, cfg: Config, q, k, v, mask, cu_q, cu_k):
        Zq, Hq, Ltot, D = q.shape
        Dv = v.shape[3]
        max_q = cfg.max_q if cfg.varlen else Ltot
        max_k = cfg.max_k if cfg.varlen else k.shape[2]
        nr = 1 if max_q <= 1 else blocks.DECODE_MAX_ROWS
        wm = blocks.decode_simdgroups(nr, Dv)
        z = self.batches(cfg, q)
        nsplit = blocks.decode_splits(max_k, z * Hq)
        inputs, mtype = self._common(cfg, q, k, v, mask, cu_q, cu_k, nsplit)
        part_o, part_ml = self.kernel("forward_decode")(
            inputs=inputs,
            template=[("T", q.dtype), ("MT", mtype), ("MASK", cfg.mask_kind), ("D", D),
                      ("DV", Dv), ("NR", nr), ("WM", wm), ("VARLEN", cfg.varlen)],
            output_shapes=[(z, Hq, nsplit, nr, Dv), (z, Hq, nsplit, nr, 2)],
            output_dtypes=[mx.float32, mx.float32],
            grid=(nsplit * 32 * wm, Hq, z), threadgroup=(32 * wm, 1, 1))
        ip, cu_q = inputs[6], inputs[4]
        return self.kernel("decode_merge")(
            inputs=[part_o, part_ml, cu_q, ip],
            template=[("T", q.dtype), ("NR", nr), ("DV", Dv), ("VARLEN", cfg.varlen)],
            output_shapes=[(Zq, Hq, Ltot, Dv), (Zq, Hq, Ltot)],
            output_dtypes=[q.dtype, mx.float32],
            grid=(128, Hq, z), threadgroup=(128, 1, 1))

    # -- backward ---------------------------------------------------------------------------
    def backward(self, cfg: Config, q, k, v, mask, cu_q, cu_k, out, lse, dout, dlse):
        """(dq, dk, dv) in the shapes of the bhld views q, k, v (contiguous, q's dtype)."""
        Zq, Hq, Ltot, D = q.shape
        Hkv, Lktot, Dv = k.shape[1], k.shape[2], v.shape[3]
        max_q = cfg.max_q if cfg.varlen else Ltot
        max_k = cfg.max_k if cfg.varlen else Lktot
        # delta = rowsum(dO * O); an lse cotangent g adds g * P to dS, i.e. delta - g.
        delta = mx.sum(dout.astype(mx.float32) * out.astype(mx.float32), axis=-1)
        if dlse is not None:
            delta = delta - dlse.astype(mx.float32)
        delta = mx.contiguous(delta)
        lse = mx.contiguous(lse)
        inputs, mtype = self._common(cfg, q, k, v, mask, cu_q, cu_k)
        inputs += [dout, lse, delta]
        tile = blocks.tile_rows(D, Dv, q.dtype.size)
        wm = blocks.SIMDGROUPS
        z = self.batches(cfg, q)
        common = [("T", q.dtype), ("MT", mtype), ("MASK", cfg.mask_kind), ("D", D), ("DV", Dv)]
        (dq,) = self.kernel("backward_dq")(
            inputs=inputs,
            template=common + [("BK", tile), ("WM", wm), ("VARLEN", cfg.varlen)],
            output_shapes=[(Zq, Hq, Ltot, D)], output_dtypes=[q.dtype],
            grid=(-(-max_q // (8 * wm)) * 32 * wm, Hq, z), threadgroup=(32 * wm, 1, 1))
        dk, dv = self.kernel("backward_dkv")(
            inputs=inputs,
            template=common + [("BQ", tile), ("WM", wm), ("VARLEN", cfg.varlen)],
            output_shapes=[(Zq, Hkv, Lktot, D), (Zq, Hkv, Lktot, Dv)],
            output_dtypes=[q.dtype, q.dtype],
            grid=(-(-max_k // (8 * wm)) * 32 * wm, Hkv, z), threadgroup=(32 * wm, 1, 1))
        return dq, dk, dv
