"""Everything an arm64 Mac or Linux machine builds (the driver, the thread pool, the portable
4-lane kernels, which GCC/Clang vector extensions turn into NEON, and the `neon` kernels written
with NEON intrinsics) compiles for arm64 with clang, here cross-compiled through zig's bundled
clang. test_cpu_arm64_qemu.py runs the Linux build under qemu-aarch64."""
from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "cpu_bridge"
PORTABLE = ["driver.cpp", "pool.cpp", "isa_generic.cpp", "isa_neon.cpp", "isa_neonbf16.cpp"]
# BF16 for isa_neonbf16.cpp alone (CMake: -march=armv8.2-a+bf16; zig's spelling)
FILE_FLAGS = {"isa_neonbf16.cpp": ["-mcpu=generic+bf16"]}
FLAGS = ["-std=c++17", "-O3", "-ffp-contract=fast", "-fno-math-errno", "-fno-strict-aliasing",
         "-I", str(ROOT / "include")]  # mlx_attn_common/rules.h, shared with the CUDA bridge

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ziglang") is None,
                                reason="ziglang (a cross-compiling clang) is not installed")


def zig_cxx(target, *args):
    cmd = [sys.executable, "-m", "ziglang", "c++", "-target", target, *FLAGS, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("target", ["aarch64-macos", "aarch64-linux-gnu"])
def test_portable_kernels_compile_for_arm64(target, tmp_path):
    for name in PORTABLE:
        res = zig_cxx(target, *FILE_FLAGS.get(name, []), "-Werror=return-type", "-c",
                      str(SRC / name),
                      "-o", str(tmp_path / (name + ".o")))
        assert res.returncode == 0, f"{name} for {target}:\n{res.stderr[-3000:]}"


def test_generic_kernels_become_neon(tmp_path):
    asm = tmp_path / "generic.s"
    res = zig_cxx("aarch64-macos", "-S", str(SRC / "isa_generic.cpp"), "-o", str(asm))
    assert res.returncode == 0, res.stderr[-3000:]
    text = asm.read_text(errors="replace")
    assert "fmla.4s" in text or "fmla\tv" in text, "no 4-lane NEON FMA in the portable kernels"


def test_neon_kernels_use_their_instructions(tmp_path):
    """isa_neon.cpp: FMA by element (the tiles), frintn (exp2), fcvtl (fp16), ushll (bf16)."""
    asm = tmp_path / "neon.s"
    res = zig_cxx("aarch64-linux-gnu", "-S", str(SRC / "isa_neon.cpp"), "-o", str(asm))
    assert res.returncode == 0, res.stderr[-3000:]
    text = asm.read_text(errors="replace")
    for op in ("fmla\tv", "frintn\tv", "fcvtl\tv", "ushll\tv", "faddp\tv"):
        assert op in text, f"no {op.split(chr(9))[0]} in the neon kernels"


def test_neon_bf16_kernels_use_bfdot(tmp_path):
    asm = tmp_path / "neonbf16.s"
    res = zig_cxx("aarch64-macos", *FILE_FLAGS["isa_neonbf16.cpp"], "-S",
                  str(SRC / "isa_neonbf16.cpp"), "-o", str(asm))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "bfdot" in asm.read_text(errors="replace"), "no bfdot in the neonbf16 kernels"
