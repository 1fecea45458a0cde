"""msl_emulator.torch_mps: the stand-in for torch.mps.compile_shader binds arguments as torch
does (buffer i = argument i; tensors in place at their first element; int lists as int64, float
lists as float32; int scalars as int64, floats as float32), takes `threads` as a grid of threads
and `group_size` per dimension, and refuses arguments that do not match their parameters."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from msl_emulator import MetalEmulatorError, MetalTranslateError  # noqa: E402
from msl_emulator.torch_mps import compile_shader  # noqa: E402

SOURCE = r"""
#include <metal_stdlib>
using namespace metal;
typedef half T;
constant constexpr int BIAS = 3;

// a comment with kernel void fake(int x) in it
[[kernel]] void axpb(const device T* x [[buffer(0)]],
                     device float* out [[buffer(1)]],
                     constant float& a [[buffer(2)]],
                     const constant int64_t* extra [[buffer(3)]],
                     uint3 pos [[thread_position_in_grid]],
                     uint3 per_grid [[threads_per_grid]]) {
  if (pos.x < per_grid.x) {
    out[pos.y * per_grid.x + pos.x] = float(x[pos.y * per_grid.x + pos.x]) * a + float(extra[1]) + BIAS;
  }
}

kernel void fill(device int* out [[buffer(0)]], constant long& value [[buffer(1)]],
                 uint i [[thread_position_in_grid]]) {
  out[i] = int(value);
}
"""


def test_library_lists_its_kernels_and_binds_in_order():
    lib = compile_shader(SOURCE)
    assert dir(lib) == ["axpb", "fill"]
    x = torch.arange(14, dtype=torch.float16)[2:]         # bound at its storage offset
    out = torch.zeros(6)
    lib.axpb(x, out, 2.0, [1, 100], threads=(3, 2), group_size=(2, 2))
    assert out.tolist() == [2.0 * (i + 2) + 103 for i in range(6)]
    # a strided view is bound at its first element too: the kernel reads raw memory (as on
    # the GPU), so the caller passes strides (the torch launcher does)
    lib.axpb(torch.arange(12, dtype=torch.float16)[::2], out, 2.0, [1, 100], threads=(3, 2),
             group_size=(2, 2))
    assert out.tolist() == [2.0 * i + 103 for i in range(6)]
    y = torch.zeros(5, dtype=torch.int32)
    lib.fill(y, 7)                                         # threads default: the first numel
    assert y.tolist() == [7] * 5


def test_mismatched_arguments_are_refused():
    lib = compile_shader(SOURCE)
    x, out = torch.zeros(4, dtype=torch.float16), torch.zeros(4)
    with pytest.raises(MetalEmulatorError, match=r"argument 0 \(x\).*float32 tensor"):
        lib.axpb(out, x, 2.0, [1, 2], threads=4, group_size=4)
    with pytest.raises(MetalEmulatorError, match=r"argument 2 \(a\).*int64 scalar"):
        lib.axpb(x, out, 2, [1, 2], threads=4, group_size=4)
    with pytest.raises(MetalEmulatorError, match=r"argument 3 \(extra\).*float32 list"):
        lib.axpb(x, out, 2.0, [1.0, 2.0], threads=4, group_size=4)
    with pytest.raises(ValueError, match="4 buffer parameters, got 3"):
        lib.axpb(x, out, 2.0, threads=4, group_size=4)
    with pytest.raises(ValueError, match="group_size"):
        lib.axpb(x, out, 2.0, [1, 2], threads=(4, 1), group_size=4)
    with pytest.raises(AttributeError, match="no kernel function 'nope'"):
        lib.nope


def test_out_of_bounds_is_a_hazard():
    lib = compile_shader(SOURCE)
    y = torch.zeros(5, dtype=torch.int32)
    with pytest.raises(MetalEmulatorError, match="out-of-bounds"):
        lib.fill(y, 7, threads=6, group_size=32)


def test_unsupported_sources_are_named():
    with pytest.raises(MetalTranslateError, match="buffer\\(0\\)"):
        compile_shader("kernel void k(device float* a [[buffer(1)]]) {}")
    with pytest.raises(MetalTranslateError, match="template"):
        compile_shader("template <typename T>\nkernel void k(device T* a [[buffer(0)]]) {}")
