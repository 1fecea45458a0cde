"""Block sizes of the Metal kernels, per head dim and dtype.

Apple GPUs give a threadgroup at most 32 KB of threadgroup memory. The tiles that live there
are stored in the input dtype (2 bytes for fp16/bf16, 4 for fp32), each row padded by 8
elements against bank conflicts. We keep each kernel's tiles under 24 KB rather than 32 KB so
that the compiler's own threadgroup allocations fit and, on GPUs whose cores hold more than
32 KB, two threadgroups can be resident at once to hide memory latency.

- Prefill forward and dQ: one threadgroup = 4 simdgroups x 8 query rows (BQ = 32, the shape
  MLX's own steel attention uses); the K and V tiles of BK keys are in threadgroup memory:
  BK x (D + 8 + Dv + 8) x itemsize bytes. BK is the largest of 32, 16, 8 that fits 24 KB:

      D=Dv   fp16/bf16   fp32
      64     32 (9 KB)   32 (18 KB)
      72     32 (10 KB)  32 (20 KB)
      80     32 (11 KB)  32 (22 KB)
      96     32 (13 KB)  16 (13 KB)
      128    32 (17 KB)  16 (17 KB)
      192    16 (13 KB)   8 (13 KB)
      256    16 (17 KB)   8 (17 KB)

  Bigger BK means fewer barriers and longer runs of simdgroup products per tile.
- dK/dV: one threadgroup = 4 simdgroups x 8 key rows (32 keys); the Q and dO tiles of BQ
  query rows (+ their lse and delta, 8 bytes a row) are in threadgroup memory: the same
  table as BK above.
- Decode (Lq <= 8): a vector kernel, one query head per threadgroup and a slice of the keys;
  the cross-simdgroup merge needs WM x rows x (Dv + 2) float32: 4 simdgroups, or 2 when 8
  rows of Dv = 256 would exceed 16 KB.
"""
from __future__ import annotations

HEAD_DIMS = (64, 72, 80, 96, 128, 192, 256)
TILE_BUDGET = 24 * 1024
PAD = 8                      # must match PAD in the .metal sources
SIMDGROUPS = 4               # prefill/backward: BQ = 8 * SIMDGROUPS
DECODE_MAX_ROWS = 8          # Lq <= this uses the decode kernel


def tile_rows(D: int, Dv: int, itemsize: int) -> int:
    """Keys (forward, dQ) or query rows (dK/dV) per threadgroup-memory tile."""
    for rows in (32, 16, 8):
        if rows * (D + Dv + 2 * PAD) * itemsize + 8 * rows <= TILE_BUDGET:
            return rows
    raise ValueError(f"head dims D={D}, Dv={Dv} do not fit threadgroup memory")


def decode_simdgroups(rows: int, Dv: int) -> int:
    return 4 if 4 * rows * (Dv + 2) * 4 <= 16 * 1024 else 2


def decode_splits(Lk: int, heads: int) -> int:
    """Key splits for decode: enough threadgroups to fill a GPU (~256), at least 64 keys each."""
    if Lk <= 0:
        return 1
    want = max(1, -(-256 // max(heads, 1)))
    return max(1, min(want, -(-Lk // 64), 64))
