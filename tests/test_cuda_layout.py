"""CPU self-checks of the CUDA kernels' index maps and block logic (no GPU needed).

Compiles cuda_bridge/host_tests/layout_check.cpp with the host C++ compiler against the very
headers the kernels include, and runs it: swizzle bijection, bank-conflict-free ldmatrix phases,
m16n8k16 fragment coverage, emulated ldmatrix/ldmatrix.trans at the kernel's lane addresses
against the fragments mma.sync expects, and a scalar emulation of the blocked online softmax
(key-block ranges, masking only where the kernel masks, packed GQA rows, split-KV + combine)
against a direct reference.  See the comments in that file.

host_tests/bwd_check.cpp does the same for the backward: the dK/dV and dQ kernels' loop
structure and per-pair formulas (bwd_math.h), emulated in float, against an independent
double-precision gradient (causal, window, softcap, masks, GQA, dlse).

host_tests/rules_check.cpp checks the range rules shared with the CPU kernel
(include/mlx_attn_common/rules.h) and the block logic on them at the edges of int: window sides
and lengths up to INT32_MAX (a huge side must act as unbounded, never overflow into an empty
range), and the split-KV combine's NaN propagation.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOST_TESTS = ROOT / "cuda_bridge" / "host_tests"
INCLUDE = ROOT / "cuda_bridge" / "include"
COMMON_INCLUDE = ROOT / "include"  # mlx_attn_common/rules.h, shared with the CPU kernel


def _compiler():
    for name in (os.environ.get("CXX"), "g++", "clang++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_compiler() is None, reason="no host C++ compiler (g++/clang++) on PATH")
@pytest.mark.parametrize("name", ["layout_check", "bwd_check", "rules_check"])
def test_cuda_host_self_check(tmp_path, name):
    source = HOST_TESTS / f"{name}.cpp"
    exe = tmp_path / name
    build = subprocess.run([_compiler(), "-std=c++17", "-O1", "-Wall", "-I", str(INCLUDE),
                            "-I", str(COMMON_INCLUDE),
                            str(source), "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, f"compiling {name}.cpp failed:\n{build.stderr}"
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{name} failed:\n{run.stdout}\n{run.stderr}"
    assert run.stdout.startswith("OK "), run.stdout
