"""The launch rules of the Metal kernels, stated once for both launchers.

For one attention problem (shapes, dtype names, the static `Config`) each function here returns
`Launch` records: kernel, template arguments, output shapes and dtypes, grid and threadgroup. They
hold plain ints and dtype names, no MLX or torch objects, so that kernels.py (MLX's
`mx.fast.metal_kernel`) and torch_launch.py (`torch.mps.compile_shader`) run the same kernels with
the same grids. A grid counts threads, not threadgroups: MLX's `grid` and torch's `threads` are
both the `dispatchThreads` size, and each threadgroup is `threadgroup` threads (torch's
`group_size`).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import blocks

ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4}


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


@dataclass(frozen=True)
class Problem:
    """The shapes and dtypes of one call's bhld views: q [Z, Hq, Ltot, D], k [Z, Hkv, Lktot, D],
    v [Z, Hkv, Lktot, Dv] (varlen: Z = 1 and Ltot, Lktot the packed totals)."""
    Z: int
    Hq: int
    Ltot: int
    D: int
    Hkv: int
    Lktot: int
    Dv: int
    dtype: str              # q/k/v dtype name
    mask_dtype: str         # the mask input's dtype name (a placeholder's when there is none)

    @classmethod
    def of(cls, q_shape, k_shape, v_shape, dtype: str, mask_dtype: str) -> "Problem":
        Z, Hq, Ltot, D = (int(n) for n in q_shape)
        return cls(Z, Hq, Ltot, D, int(k_shape[1]), int(k_shape[2]), int(v_shape[3]), dtype,
                   mask_dtype)


@dataclass(frozen=True)
class Launch:
    kernel: str             # a key of shaders.SIGNATURES
    template: tuple         # ((name, value), ...): a dtype name (str), an int or a bool
    output_shapes: tuple
    output_dtypes: tuple    # dtype names
    grid: tuple             # threads in x, y, z
    threadgroup: tuple


def max_rows(cfg: Config, p: Problem) -> tuple[int, int]:
    """(longest query sequence, longest key sequence)."""
    return (cfg.max_q, cfg.max_k) if cfg.varlen else (p.Ltot, p.Lktot)


def batches(cfg: Config, p: Problem) -> int:
    """The grid's z extent: batch entries, or sequences for varlen."""
    return cfg.nseq if cfg.varlen else p.Z


def is_decode(cfg: Config, p: Problem) -> bool:
    return max_rows(cfg, p)[0] <= blocks.DECODE_MAX_ROWS


def params(cfg: Config, p: Problem, nsplit: int = 1) -> tuple[list, list]:
    """The ip (16 ints) and fp (8 floats) parameter inputs (their layout: metal/common.h)."""
    ip = [p.Ltot, p.Lktot, p.Hq, p.Hq // p.Hkv, cfg.left, cfg.right, nsplit] + [0] * 9
    fp = [float(cfg.scale), float(cfg.softcap)] + [0.0] * 6
    return ip, fp


def _row_blocks(rows: int, wm: int) -> int:
    """Threads along x for one threadgroup per 8 * wm rows."""
    return -(-rows // (8 * wm)) * 32 * wm


def _head(cfg: Config, p: Problem) -> list:
    return [("T", p.dtype), ("MT", p.mask_dtype), ("MASK", cfg.mask_kind), ("D", p.D),
            ("DV", p.Dv)]


def prefill(cfg: Config, p: Problem) -> Launch:
    wm = blocks.SIMDGROUPS
    bk = blocks.tile_rows(p.D, p.Dv, ITEMSIZE[p.dtype])
    return Launch(
        "forward_prefill",
        tuple(_head(cfg, p) + [("BK", bk), ("WM", wm), ("VARLEN", cfg.varlen)]),
        ((p.Z, p.Hq, p.Ltot, p.Dv), (p.Z, p.Hq, p.Ltot)), (p.dtype, "float32"),
        (_row_blocks(max_rows(cfg, p)[0], wm), p.Hq, batches(cfg, p)), (32 * wm, 1, 1))


def decode(cfg: Config, p: Problem) -> tuple[Launch, Launch, int]:
    """(split-K pass, merge pass, number of key splits)."""
    max_q, max_k = max_rows(cfg, p)
    nr = 1 if max_q <= 1 else blocks.DECODE_MAX_ROWS
    wm = blocks.decode_simdgroups(nr, p.Dv)
    z = batches(cfg, p)
    nsplit = blocks.decode_splits(max_k, z * p.Hq)
    partial = Launch(
        "forward_decode",
        tuple(_head(cfg, p) + [("NR", nr), ("WM", wm), ("VARLEN", cfg.varlen)]),
        ((z, p.Hq, nsplit, nr, p.Dv), (z, p.Hq, nsplit, nr, 2)), ("float32", "float32"),
        (nsplit * 32 * wm, p.Hq, z), (32 * wm, 1, 1))
    merge = Launch(
        "decode_merge",
        (("T", p.dtype), ("NR", nr), ("DV", p.Dv), ("VARLEN", cfg.varlen)),
        ((p.Z, p.Hq, p.Ltot, p.Dv), (p.Z, p.Hq, p.Ltot)), (p.dtype, "float32"),
        (128, p.Hq, z), (128, 1, 1))
    return partial, merge, nsplit


def backward(cfg: Config, p: Problem) -> tuple[Launch, Launch]:
    """(dQ pass, dK/dV pass); both read q, k, v, mask, cu_q, cu_k, ip, fp, dout, lse, delta."""
    max_q, max_k = max_rows(cfg, p)
    wm = blocks.SIMDGROUPS
    tile = blocks.tile_rows(p.D, p.Dv, ITEMSIZE[p.dtype])
    z = batches(cfg, p)
    dq = Launch(
        "backward_dq",
        tuple(_head(cfg, p) + [("BK", tile), ("WM", wm), ("VARLEN", cfg.varlen)]),
        ((p.Z, p.Hq, p.Ltot, p.D),), (p.dtype,),
        (_row_blocks(max_q, wm), p.Hq, z), (32 * wm, 1, 1))
    dkv = Launch(
        "backward_dkv",
        tuple(_head(cfg, p) + [("BQ", tile), ("WM", wm), ("VARLEN", cfg.varlen)]),
        ((p.Z, p.Hkv, p.Lktot, p.D), (p.Z, p.Hkv, p.Lktot, p.Dv)), (p.dtype, p.dtype),
        (_row_blocks(max_k, wm), p.Hkv, z), (32 * wm, 1, 1))
    return dq, dkv
