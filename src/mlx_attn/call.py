"""The checked description of one attention call, handed to every backend.

The front end (`validate.py`) builds an `AttentionCall` once per call; backends only read it.
Arrays in it are already in the "bhld" layout (views, never copies) for the dense call, and in
the packed `[total, H, D]` layout for varlen; numpy arrays are in native byte order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

# Every feature a backend may declare. `backward` is requested when torch autograd will need
# gradients of q, k or v; `gqa` when Hq != Hkv; `dv` when v's head dim differs from q's.
FEATURES = ("causal", "mask", "window", "softcap", "lse", "varlen", "backward", "gqa", "dv")
# The kernels' mask kind codes (the CPU, CUDA and Metal kernels use the same three).
MASK_CODES = {None: 0, "bool": 1, "additive": 2}


@dataclass(slots=True)
class AttentionCall:
    kind: str                      # "mlx" | "torch" | "numpy"
    device: str                    # "cpu", "cuda:0", "gpu" (MLX's default device type), ...
    dtype: str                     # "float16" | "bfloat16" | "float32" | "float64"
    q: Any                         # bhld: [B, Hq, Lq, D]; varlen: [total_q, Hq, D]
    k: Any                         # bhld: [B, Hkv, Lk, D]; varlen: [total_k, Hkv, D]
    v: Any                         # bhld: [B, Hkv, Lk, Dv]; varlen: [total_k, Hkv, Dv]
    B: int
    Hq: int
    Hkv: int
    Lq: int                        # varlen: total_q
    Lk: int                        # varlen: total_k
    D: int
    Dv: int
    scale: float
    causal: bool = False
    mask: Any = None               # rank 4, broadcastable to [B, Hq, Lq, Lk]; None if absent
    mask_kind: Optional[str] = None  # "bool" | "additive" | None
    # (left, right), -1 = unbounded on that side; None if absent. A side that removes no key
    # is -1 too, so left < Lk - 1 and right < Lq - 1 (varlen: of the longest sequence)
    window: Optional[tuple] = None
    softcap: Optional[float] = None  # c > 0, or None
    return_lse: bool = False
    layout: str = "bhld"           # the caller's layout; backends always see bhld
    requires_grad: bool = False    # torch: autograd will ask for dq/dk/dv
    # varlen only
    varlen: bool = False
    cu_seqlens_q: Any = None       # int32 [n + 1], same array kind as q, contiguous
    cu_seqlens_k: Any = None
    seqlens_q: Optional[list] = field(default=None, repr=False)  # host copies of cu_seqlens
    seqlens_k: Optional[list] = field(default=None, repr=False)
    max_seqlen_q: int = 0
    max_seqlen_k: int = 0

    @property
    def group(self) -> int:
        """Query heads per kv head."""
        return self.Hq // self.Hkv

    @property
    def offset(self) -> int:
        """Bottom-right alignment offset Lk - Lq used by causal and window."""
        return self.Lk - self.Lq

    @property
    def window_sides(self) -> tuple:
        """(left, right) as every kernel takes them: -1 = unbounded, causal folded into the right
        side (query i + offset allows no key beyond itself, tighter than any right side >= 0)."""
        left, right = self.window if self.window is not None else (-1, -1)
        return (left, 0) if self.causal else (left, right)

    @property
    def mask_code(self) -> int:
        """0 no mask, 1 bool (True keeps), 2 additive: the kernels' mask kind codes."""
        return MASK_CODES[self.mask_kind]

    def sequences(self):
        """varlen: for each sequence with query rows, its (q, k, v) as a B=1 bhld call's arrays,
        [L, H, D] -> [1, H, L, D] views of the packed ones (no copies). For backends that run
        varlen as a loop of dense calls; `join_sequences` packs their results back."""
        from .frameworks import ops_for

        ops = ops_for(self.kind)
        cq, ck = self.seqlens_q, self.seqlens_k
        for s in range(len(cq) - 1):
            if cq[s] == cq[s + 1]:
                continue  # no query rows: nothing to emit (and MLX's autodiff trips on it)
            yield tuple(ops.swapaxes(x[a:b], 0, 1)[None] for x, a, b in
                        ((self.q, cq[s], cq[s + 1]), (self.k, ck[s], ck[s + 1]),
                         (self.v, ck[s], ck[s + 1])))

    def join_sequences(self, results: list) -> tuple:
        """The packed (out [total_q, Hq, Dv], lse [Hq, total_q] or None) from the per-sequence
        (out [1, Hq, L, Dv], lse [1, Hq, L]) of the calls `sequences()` described, in order."""
        from .frameworks import ops_for

        ops = ops_for(self.kind)
        if not results:  # no query rows at all
            out = ops.full((0, self.Hq, self.Dv), 0.0, self.dtype, self.q)
            lse = ops.full((self.Hq, 0), float("-inf"), "float32", self.q)
        else:
            out = ops.concat([ops.swapaxes(o[0], 0, 1) for o, _ in results], 0)
            lse = ops.concat([l[0] for _, l in results], 1) if self.return_lse else None
        return out, (lse if self.return_lse else None)

    def signature(self) -> tuple:
        """Everything a backend's declared support depends on, values aside (the arrays' kind,
        device and dtype, head dims, features present): dispatch decides once per signature."""
        return (self.kind, self.device, self.dtype, self.D, self.Dv, self.Hq != self.Hkv,
                self.causal, self.mask is not None, self.window is not None,
                self.softcap is not None, self.return_lse, self.varlen, self.requires_grad)

    def features(self) -> set:
        used = set()
        if self.causal:
            used.add("causal")
        if self.mask is not None:
            used.add("mask")
        if self.window is not None:
            used.add("window")
        if self.softcap is not None:
            used.add("softcap")
        if self.return_lse:
            used.add("lse")
        if self.varlen:
            used.add("varlen")
        if self.requires_grad:
            used.add("backward")
        if self.Hq != self.Hkv:
            used.add("gqa")
        if self.Dv != self.D:
            used.add("dv")
        return used

    def flops(self) -> float:
        """FlashAttention's forward FLOP count: 4 * B * H * Lq * Lk * D, halved when causal."""
        if self.varlen:
            pairs = sum((cq1 - cq0) * (ck1 - ck0) for cq0, cq1, ck0, ck1 in
                        zip(self.seqlens_q, self.seqlens_q[1:], self.seqlens_k, self.seqlens_k[1:]))
            total = 2.0 * self.Hq * pairs * (self.D + self.Dv)
        else:
            total = 2.0 * self.B * self.Hq * self.Lq * self.Lk * (self.D + self.Dv)
        return total / 2 if self.causal else total
