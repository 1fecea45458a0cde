"""The arm64 kernels RUN: the `neon` ISA (cpu_bridge/isa_neon.cpp), `neonbf16` (its BF16 dot
products for bf16 forward scores, isa_neonbf16.cpp; QEMU's default CPU has BF16) and the
portable `generic` one, built for aarch64 Linux with zig's clang (musl, static) together with the
driver, the thread pool and a small file-driven runner (cpu_bridge/host_tests/neon_check.cpp),
executed under user-mode QEMU (qemu-aarch64) and compared with the float64 reference.

Correctness only: QEMU's timings say nothing about an arm64 CPU, so none are taken.

Criteria (tests/contract/tolerance.py's constants): fp16 / bf16 inputs are rounded first and
the reference gets the rounded values, so what is left is the kernel's float32 arithmetic and
one rounding of its result:
- float32 out: the SPEC's fp32 criterion, 1e-4 absolute; lse: float32 rounding (1e-5 relative);
- float32 gradients: 1e-4 relative to the largest gradient;
- fp16 / bf16 out and gradients: two unit roundoffs of the dtype + 1e-4, relative to the
  largest value.
"""
from __future__ import annotations

import importlib.util
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from contract.tolerance import FP32_ABSOLUTE, UNIT, lse_tolerance
from mlx_attn.reference import max_error, reference, reference_grads

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "cpu_bridge"
SOURCES = ["host_tests/neon_check.cpp", "driver.cpp", "pool.cpp", "isa_neon.cpp",
           "isa_generic.cpp"]
BF16_SOURCE = "isa_neonbf16.cpp"  # BF16 for this file alone, as CMake's -march=armv8.2-a+bf16
BF16_FLAGS = ["-mcpu=generic+bf16"]  # zig's spelling
# the CMake build's flags (cpu_bridge/CMakeLists.txt); -static: QEMU needs no aarch64 sysroot
FLAGS = ["-std=c++17", "-O3", "-ffp-contract=fast", "-fno-math-errno", "-fno-strict-aliasing",
         "-static", "-I", str(ROOT / "include"), "-I", str(SRC)]
QEMU = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("ziglang") is None,
                       reason="ziglang (a cross-compiling clang) is not installed"),
    pytest.mark.skipif(QEMU is None, reason="qemu-aarch64 is not installed (Debian: qemu-user)"),
]

DTYPE_CODE = {"float32": 0, "float16": 1, "bfloat16": 2}
MASK_NONE, MASK_BOOL, MASK_ADD = 0, 1, 2
MT_BOOL, MT_F32 = 0, 1


def case(name, Lq, Lk, D, *, Dv=None, B=1, Hq=1, Hkv=1, dtype="float32", causal=False,
         window=None, softcap=None, mask=None, backward=True, isa="neon"):
    return dict(name=name, B=B, Hq=Hq, Hkv=Hkv, Lq=Lq, Lk=Lk, D=D, Dv=Dv or D, dtype=dtype,
                causal=causal, window=window, softcap=softcap, mask=mask, backward=backward,
                isa=isa)


def matrix():
    cases = []
    # sizes: odd and block-multiple lengths, the common head dims (Lq <= 8 takes the decode kernel)
    for L in (1, 7, 64, 113, 257):
        for D in (40, 64, 128):
            cases.append(case(f"size-L{L}-D{D}", L, L, D, backward=L * D <= 113 * 128))
    # features on odd sizes, forward and backward
    f = dict(Lq=113, Lk=129, D=64)
    cases += [
        case("causal", **f, causal=True),
        case("cross-causal", 37, 113, 64, causal=True),
        case("gqa", **f, Hq=4, Hkv=2),
        case("window", **f, window=(16, 8)),
        case("window-left-causal", **f, window=(20, -1), causal=True),
        case("softcap", **f, softcap=5.0),
        case("mask-bool", **f, mask="bool"),
        case("mask-additive", **f, mask="add"),
        case("all-features", **f, Hq=6, Hkv=2, causal=True, window=(40, -1), softcap=8.0,
             mask="add"),
        case("batch-dv", 50, 70, 40, Dv=72, B=2, Hq=2, Hkv=1, causal=True),
        case("odd-head-dims", 29, 45, 37, Dv=19, causal=True),  # tails of the head-dim vectors
    ]
    # fp16 / bf16 inputs: the prefill, GQA and decode paths
    for dt in ("float16", "bfloat16"):
        cases += [
            case(f"{dt}-L113-D64-causal-gqa", 113, 113, 64, Hq=4, Hkv=2, dtype=dt, causal=True),
            case(f"{dt}-L257-D128", 257, 257, 128, dtype=dt, backward=False),
            case(f"{dt}-L64-D40-mask", 64, 64, 40, dtype=dt, mask="add", softcap=10.0),
            case(f"{dt}-decode-gqa", 1, 300, 128, Hq=8, Hkv=2, dtype=dt),
            case(f"{dt}-decode-D40-window", 1, 113, 40, Hq=4, Hkv=1, dtype=dt, window=(50, -1)),
            case(f"{dt}-odd-head-dims", 3, 61, 37, Dv=19, Hq=2, Hkv=1, dtype=dt),
        ]
    # decode (Lq = 1; GQA groups packed into one row block; a long cache split over threads)
    cases += [
        case("decode-gqa4", 1, 257, 64, Hq=8, Hkv=2),
        case("decode-gqa8-D128", 1, 113, 128, Hq=8, Hkv=1),
        case("decode-mask-softcap", 1, 129, 64, Hq=4, Hkv=2, mask="bool", softcap=20.0),
        case("decode-split-k", 1, 1500, 64, Hq=2, Hkv=1),
        case("decode-rows7-causal", 7, 90, 40, causal=True),
        case("decode-odd-head-dims", 1, 45, 37, Dv=19, Hq=4, Hkv=2),
    ]
    # bf16 dot products for the forward scores (the backward's own forward too)
    cases += [
        case("neonbf16-L113-D64-causal-gqa", 113, 113, 64, Hq=4, Hkv=2, dtype="bfloat16",
             causal=True, isa="neonbf16"),
        case("neonbf16-L257-D128", 257, 257, 128, dtype="bfloat16", backward=False,
             isa="neonbf16"),
        case("neonbf16-odd-head-dims", 29, 45, 37, Dv=19, dtype="bfloat16", isa="neonbf16"),
        case("neonbf16-mask-softcap-window", 64, 90, 40, dtype="bfloat16", mask="add",
             softcap=10.0, window=(30, 5), isa="neonbf16"),
        case("neonbf16-decode-gqa", 1, 300, 64, Hq=8, Hkv=2, dtype="bfloat16", isa="neonbf16"),
        case("neonbf16-float32", 113, 113, 64, causal=True, isa="neonbf16"),
    ]
    # what `auto` picks (neonbf16 where the CPU has BF16, else neon)
    cases.append(case("auto-bf16", 70, 70, 64, dtype="bfloat16", causal=True, isa="auto"))
    # the portable kernels also run here (never run on arm64 before)
    cases += [
        case("generic-L113-D64-gqa-causal", 113, 113, 64, Hq=4, Hkv=2, causal=True, isa="generic"),
        case("generic-bf16-mask", 64, 77, 40, dtype="bfloat16", mask="add", isa="generic"),
        case("generic-decode", 1, 200, 128, Hq=4, Hkv=1, isa="generic"),
    ]
    return cases


CASES = matrix()


# ---- numpy helpers: fp16 / bf16 bits ----
def to_bits(x32, dtype):
    """float32 array -> (the array stored for the kernel, its values as float64)."""
    if dtype == "float32":
        return x32, x32.astype(np.float64)
    if dtype == "float16":
        h = x32.astype(np.float16)
        return h.view(np.uint16), h.astype(np.float64)
    u = x32.view(np.uint32).astype(np.uint64)
    bits = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
    return bits, from_bits(bits, "bfloat16")


def from_bits(raw, dtype):
    if dtype == "float32":
        return raw.view(np.float32).astype(np.float64)
    if dtype == "float16":
        return raw.view(np.float16).astype(np.float64)
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def write_case(c, seed, folder):
    """The case's inputs and spec.txt in `folder`; returns the float64 inputs and options."""
    rng = np.random.default_rng(seed)
    B, Hq, Hkv, Lq, Lk, D, Dv = (c[k] for k in ("B", "Hq", "Hkv", "Lq", "Lk", "D", "Dv"))
    dt = c["dtype"]
    folder.mkdir()
    ins = {}
    for name, shape in (("q", (B, Hq, Lq, D)), ("k", (B, Hkv, Lk, D)), ("v", (B, Hkv, Lk, Dv)),
                        ("dout", (B, Hq, Lq, Dv))):
        raw, f64 = to_bits(rng.standard_normal(shape).astype(np.float32), dt)
        raw.tofile(folder / f"{name}.bin")
        ins[name] = f64
    dlse = rng.standard_normal((B, Hq, Lq)).astype(np.float32)
    dlse.tofile(folder / "dlse.bin")
    ins["dlse"] = dlse.astype(np.float64)
    mask_kind, mask_type, mask = MASK_NONE, MT_F32, None
    if c["mask"] == "bool":
        mask = rng.random((Lq, Lk)) > 0.3
        mask.astype(np.uint8).tofile(folder / "mask.bin")
        mask_kind, mask_type = MASK_BOOL, MT_BOOL
    elif c["mask"] == "add":
        m32 = (2 * rng.standard_normal((Lq, Lk))).astype(np.float32)
        m32[rng.random((Lq, Lk)) < 0.2] = -np.inf
        m32.tofile(folder / "mask.bin")
        mask, mask_kind = m32.astype(np.float64), MASK_ADD
    scale = float(np.float32(1.0 / np.sqrt(D)))
    left, right = c["window"] if c["window"] else (-1, -1)
    wr = 0 if c["causal"] else right  # rules.h fold_causal: causal is right side 0
    spec = dict(dtype=DTYPE_CODE[dt], B=B, Hq=Hq, Hkv=Hkv, Lq=Lq, Lk=Lk, D=D, Dv=Dv, scale=scale,
                softcap=c["softcap"] or 0.0, wl=left, wr=wr, mask_kind=mask_kind,
                mask_type=mask_type, backward=int(c["backward"]))
    (folder / "spec.txt").write_text("".join(f"{k} {v!r}\n" for k, v in spec.items()))
    opts = dict(scale=scale, causal=c["causal"], mask=mask, softcap=c["softcap"],
                window=c["window"])
    return ins, opts


def zig_cxx(*args):
    cmd = [sys.executable, "-m", "ziglang", "c++", "-target", "aarch64-linux-musl", *FLAGS, *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, "aarch64 build failed:\n" + res.stderr[-4000:]


def build(out_dir):
    exe, bf16_obj = out_dir / "neon_check", out_dir / "isa_neonbf16.o"
    zig_cxx(*BF16_FLAGS, "-c", str(SRC / BF16_SOURCE), "-o", str(bf16_obj))
    zig_cxx(*(str(SRC / s) for s in SOURCES), str(bf16_obj), "-o", str(exe))
    return exe


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Builds once, writes every case, runs each ISA's cases in one qemu-aarch64 process."""
    top = tmp_path_factory.mktemp("arm64_qemu")
    exe = build(top)
    inputs, isa_seen = {}, {}
    for isa in sorted({c["isa"] for c in CASES}):
        dirs = []
        for i, c in enumerate(CASES):
            if c["isa"] == isa:
                inputs[c["name"]] = write_case(c, i, top / c["name"])
                dirs.append(str(top / c["name"]))
        res = subprocess.run([QEMU, str(exe), isa, *dirs], capture_output=True, text=True,
                             timeout=600)
        if res.returncode == 3:  # this (emulated) CPU does not run `isa`
            isa_seen[isa] = None
            continue
        assert res.returncode == 0, \
            f"{isa}: exit {res.returncode}\n{res.stdout[-2000:]}{res.stderr[-2000:]}"
        isa_seen[isa] = res.stdout.splitlines()[0]
    return top, inputs, isa_seen


def test_auto_selects_neon(runs):
    _, _, isa_seen = runs
    best = "neonbf16" if isa_seen["neonbf16"] else "neon"
    assert isa_seen["auto"] == f"isa {best}"
    assert isa_seen["neon"] == "isa neon"
    assert isa_seen["generic"] == "isa generic"


def half_tol(dtype, ref):
    big = max(1.0, float(np.abs(ref[np.isfinite(ref)]).max(initial=0.0)))
    return (2 * UNIT[dtype] + FP32_ABSOLUTE) * big


@pytest.mark.parametrize("c", CASES, ids=[c["name"] for c in CASES])
def test_arm64_kernels_match_reference(c, runs):
    top, inputs, isa_seen = runs
    if isa_seen[c["isa"]] is None:
        pytest.skip(f"qemu-aarch64's CPU does not run {c['isa']}")
    folder = top / c["name"]
    (ins, opts), dt = inputs[c["name"]], c["dtype"]
    B, Hq, Hkv, Lq, Lk, D, Dv = (c[k] for k in ("B", "Hq", "Hkv", "Lq", "Lk", "D", "Dv"))
    raw_dtype = np.float32 if dt == "float32" else np.uint16

    def output(name, shape):
        return from_bits(np.fromfile(folder / name, dtype=raw_dtype), dt).reshape(shape)

    ref_out, ref_lse = reference(ins["q"], ins["k"], ins["v"], **opts)
    out = output("out.bin", (B, Hq, Lq, Dv))
    lse = np.fromfile(folder / "lse.bin", dtype=np.float32).astype(np.float64).reshape(B, Hq, Lq)
    err = max_error(out, ref_out)
    tol = FP32_ABSOLUTE if dt == "float32" else half_tol(dt, ref_out)
    assert err <= tol, f"out: error {err:.3g} > {tol:.3g}"
    err = max_error(lse, ref_lse)
    assert err <= lse_tolerance(ref_lse), f"lse: error {err:.3g}"
    if not c["backward"]:
        return
    grads = reference_grads(ins["q"], ins["k"], ins["v"], ins["dout"], dlse=ins["dlse"], **opts)
    for name, ref, shape in zip(("dq", "dk", "dv"), grads,
                                ((B, Hq, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, Dv))):
        got = output(f"{name}.bin", shape)
        err = max_error(got, ref)
        big = max(1.0, float(np.abs(ref).max(initial=0.0)))
        tol = FP32_ABSOLUTE * big if dt == "float32" else half_tol(dt, ref)
        assert err <= tol, f"{name}: error {err:.3g} > {tol:.3g}"
