"""The doctor's standard shapes, and the same random inputs for every array kind.

Prefill at L=1k and 4k (causal and not) and decode (Lq=1 over an 8k KV cache, GQA 32/8): the
shapes a model script spends its attention time on. `--quick` shrinks them for a fast check.
"""
from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Case:
    name: str
    B: int
    Hq: int
    Hkv: int
    Lq: int
    Lk: int
    D: int
    causal: bool

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def flops(self) -> float:
        """4·B·Hq·Lq·Lk·D, halved when causal (as `AttentionCall.flops` for these shapes)."""
        return 4.0 * self.B * self.Hq * self.Lq * self.Lk * self.D / (2 if self.causal else 1)

    @property
    def shape_class(self) -> str:
        """Cases of one class run at about the same FLOP rate (what the cost model keys on)."""
        return "decode" if self.Lq == 1 else "prefill causal" if self.causal else "prefill"


def run_order(cases: list[Case]) -> list[Case]:
    """Smallest score matrix first, so that the cost model has learned an implementation's speed
    on a small case before it decides whether a large one is affordable."""
    return sorted(cases, key=lambda c: c.B * c.Hq * c.Lq * c.Lk)


def standard_cases(quick: bool = False) -> list[Case]:
    lengths = (256, 1024) if quick else (1024, 4096)
    decode_k = 2048 if quick else 8192
    cases = []
    for L in lengths:
        for causal in (False, True):
            label = f"prefill L={L // 1024}k" if L >= 1024 else f"prefill L={L}"
            cases.append(Case(label + (" causal" if causal else ""), 1, 8, 8, L, L, 64, causal))
    cases.append(Case(f"decode Lk={decode_k // 1024}k GQA 32/8", 1, 32, 8, 1, decode_k, 128,
                      False))
    return cases


@dataclass(frozen=True)
class Framework:
    kind: str      # "mlx" | "torch" | "numpy"
    device: str    # what the arrays live on, as the doctor reports it
    dtype: str


def frameworks_here(dtype: str | None = None) -> list[Framework]:
    """Every installed array kind, on its best device here, in a dtype it computes fast in."""
    found = []
    if importlib.util.find_spec("mlx") is not None:
        import mlx.core as mx
        gpu = mx.metal.is_available()
        found.append(Framework("mlx", "gpu" if gpu else "cpu",
                               dtype or ("float16" if gpu else "float32")))
    if importlib.util.find_spec("torch") is not None:
        import torch
        cuda = torch.cuda.is_available()
        found.append(Framework("torch", "cuda" if cuda else "cpu",
                               dtype or ("float16" if cuda else "float32")))
    found.append(Framework("numpy", "cpu", "float32" if dtype in (None, "float16", "bfloat16")
                           else dtype))
    return found


def host_inputs(case: Case, seed: int = 0):
    """q, k, v as float32 numpy arrays in the bhld layout."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((case.B, case.Hq, case.Lq, case.D), dtype=np.float32)
    k = rng.standard_normal((case.B, case.Hkv, case.Lk, case.D), dtype=np.float32)
    v = rng.standard_normal((case.B, case.Hkv, case.Lk, case.D), dtype=np.float32)
    return q, k, v


def to_framework(x: np.ndarray, fw: Framework):
    """A host float32 array as `fw`'s array kind, dtype and device."""
    if fw.kind == "mlx":
        import mlx.core as mx
        return mx.array(x).astype(getattr(mx, fw.dtype))
    if fw.kind == "torch":
        import torch
        return torch.from_numpy(x).to(device=fw.device, dtype=getattr(torch, fw.dtype))
    return x.astype(fw.dtype)
