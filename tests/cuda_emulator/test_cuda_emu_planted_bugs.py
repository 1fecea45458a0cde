"""The emulated tests can fail: a bug planted in each kernel (in the emulator's copy of the
headers, never in the sources) makes the same check as the main suite fail."""
import concurrent.futures
import os
import re
from dataclasses import dataclass

import numpy as np
import pytest

from cuda_emu_cases import Problem, check_backward, check_forward
from cuda_emu_varlen_cases import VarlenProblem, check_forward_varlen
from cuda_emulator import CudaEmulatorError, attention


@dataclass(frozen=True)
class Bug:
    name: str
    file: str
    old: str
    new: str
    dtype: str
    D: int
    check: str  # how the main suite exercises the code

    @property
    def patches(self):
        return {f"mlx_attn_cuda/{self.file}": [(self.old, self.new)]}


BUGS = [
    Bug("swizzle not a bijection (chunks >= 8 collide)", "layout.h", "return chunk ^ (row & 7);",
        "return (chunk ^ row) & 7;", "float16", 128, "prefill"),
    Bug("dropped cp_async_wait before the V tile", "fwd_kernel.cuh",
        "    cp_async_wait<Tr::kAhead - 1>();\n    __syncthreads();\n    if (2 * t + 1 + Tr::kAhead < npos)",
        "    __syncthreads();\n    if (2 * t + 1 + Tr::kAhead < npos)", "float16", 64, "prefill"),
    Bug("missing __syncthreads before the K tile", "fwd_kernel.cuh",
        "    cp_async_wait<Tr::kAhead - 1>();\n    __syncthreads();\n    if (2 * t + Tr::kAhead < npos)",
        "    cp_async_wait<Tr::kAhead - 1>();\n    if (2 * t + Tr::kAhead < npos)", "bfloat16", 64, "decode"),
    Bug("causal range off by one", "softmax.cuh", "if (jr < lo_rel || jr > hi_rel)",
        "if (jr < lo_rel || jr > hi_rel + 1)", "float16", 64, "prefill"),
    Bug("combine drops the last split", "combine_kernel.cuh", "for (int s = 0; s < S; ++s) {",
        "for (int s = 0; s < S - 1; ++s) {", "float16", 64, "decode"),
    Bug("delta adds dlse instead of subtracting it", "bwd_kernel.cuh",
        "p.delta[row] = acc - (p.dlse ? p.dlse[row] : 0.f);", "p.delta[row] = acc + (p.dlse ? p.dlse[row] : 0.f);",
        "float16", 64, "backward"),
    Bug("dK/dV query range off by one", "bwd_kernel.cuh", "for (int i = i_lo; i <= i_hi; ++i) {",
        "for (int i = i_lo; i < i_hi; ++i) {", "bfloat16", 64, "backward"),
    Bug("dQ key range off by one", "bwd_kernel.cuh", "for (int j = j_lo; j <= j_hi; ++j) {",
        "for (int j = j_lo + 1; j <= j_hi; ++j) {", "float16", 32, "backward"),
    # the shared-memory epilogue and fused varlen (tile_io.cuh, blocks.h seq_view, fwd_kernel.cuh)
    Bug("staged O store drops the row predicate", "tile_io.cuh",
        "if (r >= p.rows || c * 8 >= p.dv) continue;", "if (c * 8 >= p.dv) continue;",
        "float16", 64, "prefill"),
    Bug("varlen out pointer drops the sequence's first row", "blocks.h",
        "v.out = static_cast<T*>(p.out) + s.q0 * p.o_sl;", "v.out = static_cast<T*>(p.out);",
        "float16", 64, "varlen"),
    Bug("varlen causal / key tail use the longest lk, not the sequence's", "blocks.h",
        "v.lk = s.lk;", "v.lk = p.lk;", "bfloat16", 64, "varlen"),
    Bug("varlen K/V tiles start at row 0, not the sequence's first key", "fwd_kernel.cuh",
        "const int64_t k0 = p.cu_seqlens_k != nullptr ? p.cu_seqlens_k[bb] : 0;",
        "const int64_t k0 = 0;", "float16", 64, "varlen"),
    Bug("varlen lse at the dense index", "fwd_kernel.cuh",
        "p.lse[lse_index(p, seq_o, b, h, i)] = lse;", "p.lse[((int64_t)b * p.hq + h) * p.lq + i] = lse;",
        "bfloat16", 64, "varlen"),
]


def run_check(bug: Bug, patches):
    if bug.check == "varlen":  # ragged, with empty sequences, Lq != Lk, GQA
        p = VarlenProblem(bug.dtype, [5, 0, 17, 3, 0, 9], [9, 4, 0, 30, 0, 9], 4, 2, bug.D, seed=23,
                          causal=True)
        check_forward_varlen(p, config="prefill", patches=patches)
        return
    # decode: three splits of one 128-key block each
    p = Problem(bug.dtype, 1, 4, 2, 70, 300 if bug.check == "decode" else 75, bug.D, seed=21, causal=True)
    if bug.check == "prefill":
        check_forward(p, config="prefill", splits=1, patches=patches)
    elif bug.check == "decode":
        check_forward(p, config="decode", splits=3, patches=patches)
    else:
        check_backward(p, with_dlse=True, patches=patches)


@pytest.fixture(scope="module", autouse=True)
def patched_libraries():
    with concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda b: attention.library(b.dtype, b.D, b.patches), BUGS))


@pytest.mark.parametrize("bug", BUGS, ids=[b.name for b in BUGS])
def test_planted_bug_is_caught(bug):
    run_check(bug, None)
    with pytest.raises((AssertionError, CudaEmulatorError)):
        run_check(bug, bug.patches)


def test_out_of_bounds_read_in_a_real_kernel_names_buffer_line_and_thread():
    rng = np.random.default_rng(22)
    q, k, v = (rng.standard_normal((1, 2, 40, 64)).astype(np.float16) for _ in range(3))
    off_by_one = {"mlx_attn_cuda/tile_io.cuh": [("const bool valid = col_ok && n0 + row < lk;",
                                                 "const bool valid = col_ok && n0 + row <= lk;")]}
    with pytest.raises(CudaEmulatorError) as info:
        attention.forward(q, k, v, config="decode", splits=1, patches=off_by_one)
    msg = str(info.value)
    assert "kernel 'void mlx_attn_cuda::fwd_kernel<" in msg
    assert "0 bytes past the end of device buffer 'k'" in msg
    assert re.search(r"from tile_io.cuh line \d+ \(mlx_attn_cuda::load_kv_tile", msg), msg
    assert re.search(r"blockIdx=\(\d+,0,0\) threadIdx=\(\d+,0,0\)", msg), msg
