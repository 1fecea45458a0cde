"""The SPEC cases, declared once: shapes, features, masks, layouts, varlen, gradients.

Every backend runs the cases it declares it supports (tests/contract/test_contract.py filters
them with the backend's own `not_supported_reasons`); the per-backend test files import these
lists instead of declaring their own.

A shape is (B, Hq, Hkv, Lq, Lk, D, Dv). The sizes the project requires: odd lengths
L = 1, 7, 113, 203 and head dims D = 40, 72, 96, 128, block multiples L = 64, 128, 256, 257,
GQA (Hq > Hkv > 1) and MQA (Hkv = 1), Dv != D. Features are crossed with sizes sparsely (each
feature at a few sizes), not as a full product.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DTYPES = ("float32", "float16", "bfloat16")
KINDS = ("numpy", "torch", "mlx")

# -- dense forward -----------------------------------------------------------------------------
SHAPES = [  # the SPEC's odd sizes, GQA, MQA, Dv != D: crossed with every entry of FEATURES
    (1, 1, 1, 1, 1, 40, 40),
    (2, 8, 2, 7, 113, 72, 72),
    (1, 6, 1, 113, 203, 96, 40),
    (2, 2, 2, 203, 7, 128, 128),
    (1, 4, 4, 203, 113, 64, 64),
]
FEATURES = [
    {},
    {"causal": True},
    {"window": (7, 3)},
    {"softcap": 5.0},
    {"causal": True, "softcap": 2.0, "window": 9},
    {"window": (-1, 2), "scale": 0.3},
]
# the other (L, D) pairs of the required sizes, each with one feature (a rotation of FEATURES)
ODD_SIZES = [
    (1, 8, 2, 1, 203, 72, 72),
    (1, 4, 1, 1, 113, 128, 128),
    (2, 4, 2, 7, 7, 40, 40),
    (1, 6, 2, 7, 203, 96, 96),
    (1, 4, 1, 113, 113, 40, 24),
    (1, 4, 2, 113, 7, 128, 128),
    (1, 2, 1, 203, 203, 72, 72),
    (1, 4, 4, 203, 1, 96, 96),
]
# block multiples (a kernel's tile edges), GQA and MQA
BLOCK_SHAPES = [
    (1, 4, 2, 64, 64, 40, 40),
    (1, 4, 1, 128, 217, 72, 72),
    (1, 6, 2, 256, 256, 96, 96),
    (1, 4, 2, 257, 128, 128, 128),
    (2, 3, 1, 256, 64, 128, 40),
    (1, 4, 2, 257, 257, 40, 40),
    (1, 4, 2, 64, 64, 64, 64),
]
BLOCK_FEATURES = [{}, {"causal": True}, {"window": (40, 7), "softcap": 5.0}]

# masks: a shape builder (B, Hq, Lq, Lk) -> mask shape, all broadcastable to [B, Hq, Lq, Lk]
MASK_SHAPES = {
    "LqLk": lambda B, H, Lq, Lk: (Lq, Lk),
    "B11Lk": lambda B, H, Lq, Lk: (B, 1, 1, Lk),
    "1HLqLk": lambda B, H, Lq, Lk: (1, H, Lq, Lk),
    "BHLqLk": lambda B, H, Lq, Lk: (B, H, Lq, Lk),
    "H1Lk": lambda B, H, Lq, Lk: (H, 1, Lk),
}
MASK_SHAPE = (2, 6, 2, 37, 91, 64, 64)


@dataclass(frozen=True)
class Case:
    """One SPEC case. `mask`: None, or (kind, shape name in MASK_SHAPES, seed) where kind is
    "bool" (its first query row fully removed when the mask has a row axis) or "additive"
    (20% -inf). `varlen`: (lens_q, lens_k, Hq, Hkv, D, Dv) instead of `shape`."""
    name: str
    shape: tuple = ()
    feat: tuple = ()               # sorted (keyword, value) pairs
    dtypes: tuple = DTYPES
    kinds: tuple = KINDS
    layout: str = "bhld"
    mask: tuple | None = None
    varlen: tuple | None = None
    grad: bool = False             # gradients (dq, dk, dv) instead of out and lse
    lse: bool = True               # return_lse=True (and gradients through lse too)
    seed: int = 0
    options: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def kw(self) -> dict:
        return dict(self.feat)


def _id(shape) -> str:
    return "x".join(map(str, shape))


def _feat_id(feat: dict) -> str:
    return "-".join(f"{k}{'' if v is True else v}" for k, v in feat.items()).replace(" ", "") \
        or "plain"


def case(shape, feat=None, *, prefix="fwd", **kw) -> Case:
    feat = dict(feat or {})
    name = f"{prefix}-{_id(shape)}-{_feat_id(feat)}"
    if kw.get("layout", "bhld") != "bhld":
        name += "-" + kw["layout"]
    if kw.get("mask"):
        name += "-mask_" + "_".join(map(str, kw["mask"][:2]))
    if kw.get("lse") is False:
        name += "-nolse"
    return Case(name, shape, tuple(sorted(feat.items())), **kw)


def _forward():
    out = [case(s, f) for s in SHAPES for f in FEATURES]
    # the required sizes without return_lse (the kernels' variants that write no lse)
    out += [case(s, FEATURES[(i + 1) % len(FEATURES)], lse=False) for i, s in enumerate(ODD_SIZES)]
    out += [case(s, BLOCK_FEATURES[i % len(BLOCK_FEATURES)]) for i, s in enumerate(BLOCK_SHAPES)]
    for seed, name in enumerate(MASK_SHAPES):
        for kind in ("bool", "additive"):
            out.append(case(MASK_SHAPE, {"causal": True} if name == "BHLqLk" else {},
                            mask=(kind, name, seed), dtypes=("float32", "bfloat16")))
    for feat in ({"causal": True}, {"window": (5, 5), "softcap": 3.0}):
        out.append(case((2, 4, 2, 33, 65, 72, 72), feat, layout="blhd", dtypes=("float32",)))
        out.append(case((1, 8, 1, 113, 7, 40, 40), feat, layout="blhd", dtypes=("float16",)))
    return out


FORWARD = _forward()

# -- gradients ---------------------------------------------------------------------------------
GRAD_SHAPES = [(1, 1, 1, 1, 7, 40, 40), (2, 6, 2, 7, 113, 72, 40), (1, 4, 1, 113, 90, 96, 96),
               (1, 2, 2, 203, 113, 128, 128)]
GRAD_FEATURES = [{}, {"causal": True}, {"window": (9, 4), "softcap": 4.0},
                 {"causal": True, "softcap": 1.5, "scale": 0.2}]
GRAD_KINDS = ("torch", "mlx")


def _grads():
    g = dict(prefix="grad", grad=True, kinds=GRAD_KINDS)
    out = [case(s, f, dtypes=("float32", "bfloat16"), **g) for s in GRAD_SHAPES
           for f in GRAD_FEATURES]
    out.append(case((1, 4, 2, 37, 71, 64, 64), {"causal": True}, dtypes=("float16",), **g))
    out.append(case((2, 4, 2, 33, 50, 64, 64), mask=("bool", "B11Lk", 2), dtypes=("float32",),
                    **g))
    out.append(case((2, 4, 2, 33, 50, 64, 64), mask=("additive", "1HLqLk", 2),
                    dtypes=("float32",), **g))
    for D in (40, 64):
        out.append(case((1, 4, 2, 19, 23, D, D), {"causal": True}, layout="blhd",
                        dtypes=("float32",), lse=False, **g))
    out += [case(s, BLOCK_FEATURES[i % len(BLOCK_FEATURES)], dtypes=("float32", "bfloat16"), **g)
            for i, s in enumerate(BLOCK_SHAPES[:4] + BLOCK_SHAPES[-1:])]
    return out


GRADS = _grads()

# -- varlen ------------------------------------------------------------------------------------
VARLEN_FEATURES = [{}, {"causal": True}, {"window": (4, 2), "softcap": 3.0}]
VARLEN_SEQS = [  # (lens_q, lens_k, Hq, Hkv, D, Dv): empty sequences, a sequence without keys
    ([5, 0, 70, 1, 33], [9, 4, 70, 0, 20], 4, 2, 40, 24),
    ([5, 0, 33, 17], [7, 3, 33, 40], 4, 2, 64, 64),
    ([1, 1, 1], [10, 50, 203], 4, 1, 72, 72),
]


def _varlen():
    out = []
    for i, seqs in enumerate(VARLEN_SEQS):
        for f in VARLEN_FEATURES:
            name = f"varlen{i}-{_feat_id(f)}"
            out.append(Case(name, (), tuple(sorted(f.items())), dtypes=("float32", "bfloat16"),
                            varlen=tuple(tuple(x) if isinstance(x, list) else x for x in seqs)))
    for D, Dv in ((32, 16), (64, 64)):
        out.append(Case(f"varlen_grad-D{D}-Dv{Dv}-causal", (), (("causal", True),),
                        dtypes=("float32",), kinds=GRAD_KINDS, grad=True,
                        varlen=((7, 0, 40, 3), (5, 6, 40, 0), 4, 2, D, Dv)))
    return out


VARLEN = _varlen()

ALL = FORWARD + GRADS + VARLEN

# -- lists of the per-backend test files (cases specific to one backend) ------------------------
# tests/test_cpu_decode.py: the cpu decode kernel (G * Lq <= 8 rows per kv head, head dim across
# the vector lanes): odd head dims, Dv != D, keys ending mid-vector, long keys split over threads
DECODE_SHAPES = [
    (1, 1, 1, 1, 1, 40, 40),
    (2, 8, 2, 1, 113, 72, 72),
    (1, 6, 3, 3, 203, 96, 40),
    (2, 4, 4, 7, 7, 128, 128),
    (1, 8, 1, 1, 2100, 64, 64),
    (1, 4, 1, 2, 1500, 256, 200),
    (3, 2, 1, 4, 64, 8, 24),
]
DECODE_FEATURES = [{}, {"causal": True}, {"window": (50, 3)}, {"softcap": 4.0},
                   {"window": 17, "softcap": 2.5, "scale": 0.3}]
# tests/test_math_forward.py: named features of the math backend's kinds x dtypes x layouts
# matrix ("bool"/"additive": a mask of that kind is built by the test)
MATH_FEATURES = {
    "plain": {},
    "causal": dict(causal=True),
    "bool_mask": dict(mask="bool"),
    "additive_mask": dict(mask="additive"),
    "window": dict(window=(5, 3)),
    "window_int": dict(window=4),
    "window_left_unbounded": dict(window=(-1, 2)),
    "softcap": dict(softcap=3.0),
    "scale": dict(scale=0.37),
    "causal_window_softcap": dict(causal=True, window=(9, 0), softcap=2.5),
    "everything": dict(causal=True, window=(6, 1), softcap=4.0, mask="additive", scale=0.2),
}
# tests/test_math_grad.py: the math backend's float64 / float32 autodiff against the reference
MATH_GRAD_SHAPES = [(2, 6, 2, 13, 29, 40, 24), (1, 1, 1, 1, 7, 8, 8), (1, 8, 2, 113, 113, 72, 72),
                    (1, 4, 4, 7, 1, 16, 16)]
# tests/test_cuda_ops.py: torch.library.opcheck of the CUDA custom ops' CPU stand-ins
OPCHECK_SHAPES = [(1, 2, 2, 7, 7, 40, 40), (2, 4, 2, 5, 9, 16, 24), (1, 3, 1, 1, 13, 8, 8)]
assert len({c.name for c in ALL}) == len(ALL), "case names must be unique"
