"""CPU self-check of the CUDA kernels' index maps and block logic (no GPU needed).

Compiles cuda_bridge/host_tests/layout_check.cpp with the host C++ compiler against the very
headers the kernels include, and runs it: swizzle bijection, bank-conflict-free ldmatrix phases,
m16n8k16 fragment coverage, emulated ldmatrix/ldmatrix.trans at the kernel's lane addresses
against the fragments mma.sync expects, and a scalar emulation of the blocked online softmax
(key-block ranges, masking only where the kernel masks, packed GQA rows, split-KV + combine)
against a direct reference.  See the comments in that file.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "cuda_bridge" / "host_tests" / "layout_check.cpp"
INCLUDE = ROOT / "cuda_bridge" / "include"


def _compiler():
    for name in (os.environ.get("CXX"), "g++", "clang++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(not SOURCE.exists(), reason="cuda_bridge/host_tests/layout_check.cpp is absent")
@pytest.mark.skipif(_compiler() is None, reason="no host C++ compiler (g++/clang++) on PATH")
def test_cuda_index_maps_and_block_logic(tmp_path):
    exe = tmp_path / "layout_check"
    build = subprocess.run([_compiler(), "-std=c++17", "-O1", "-Wall", "-I", str(INCLUDE),
                            str(SOURCE), "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, f"compiling layout_check.cpp failed:\n{build.stderr}"
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"layout_check failed:\n{run.stdout}\n{run.stderr}"
    assert run.stdout.startswith("OK "), run.stdout
