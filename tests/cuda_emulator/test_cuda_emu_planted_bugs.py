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
    kw: tuple = ()  # the backward's problem: extra Problem keywords and the dQ mode

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
    # the backward (bwd_kernel.cuh, bwd_tile.cuh, bwd_math.h); "backward" runs GQA 2, causal,
    # 70 queries / 75 keys (two tiles each way), with dlse
    Bug("delta adds dlse instead of subtracting it", "bwd_kernel.cuh",
        "sdelta[x] = sum - (p.dlse ? p.dlse[row] : 0.f);", "sdelta[x] = sum + (p.dlse ? p.dlse[row] : 0.f);",
        "float16", 64, "backward"),
    Bug("softcap slope without the tanh chain rule", "bwd_math.h", "d = f.scale * (1.f - t * t);",
        "d = f.scale;", "bfloat16", 64, "backward", (("softcap", 3.0),)),
    Bug("dK/dV sums only the first query head of a GQA group", "bwd_kernel.cuh",
        "const int steps = n_m * f.group;", "const int steps = n_m;", "float16", 128, "backward"),
    Bug("dK/dV query-tile range off by one (drops the last tile)", "bwd_kernel.cuh",
        "const int n_m = qs.hi >= qs.lo ? qs.hi / kBM - m_lo + 1 : 0;",
        "const int n_m = qs.hi >= qs.lo ? qs.hi / kBM - m_lo : 0;", "bfloat16", 32, "backward"),
    Bug("dQ kernel key-block range off by one", "bwd_kernel.cuh",
        "const int n_lo = ks.lo / kBN;", "const int n_lo = ks.lo / kBN + 1;", "float16", 32, "backward",
        (("deterministic", True), ("window", (20, 0)))),
    # D=256: 4 of the 8 warps have no share of S^T (32 x 32) but one of dK/dV: they read dS^T
    # at once (the emulator runs threads round-robin between collectives and barriers)
    Bug("missing __syncthreads between writing P^T/dS^T and reading them", "bwd_kernel.cuh",
        "                                   slse + slot * kBM, sdelta + slot * kBM, sP, sdS, warp, lane);\n"
        "    __syncthreads();",
        "                                   slse + slot * kBM, sdelta + slot * kBM, sP, sdS, warp, lane);",
        "float16", 256, "backward"),
    # a warp reads Q / dO chunks that other threads copied before they waited for them: NaN
    Bug("missing __syncthreads after the wait for the step's Q/dO tiles", "bwd_kernel.cuh",
        "    cp_async_wait<0>();\n    __syncthreads();\n    if constexpr (kS == 2) {\n"
        "      if (t + 1 < steps) issue(t + 1);  // into the buffer step t - 1 used",
        "    cp_async_wait<0>();\n    if constexpr (kS == 2) {\n"
        "      if (t + 1 < steps) issue(t + 1);  // into the buffer step t - 1 used",
        "bfloat16", 64, "backward"),
    Bug("dq atomics into the wrong query head's row", "bwd_kernel.cuh",
        "float* row = p.dq_accum + lse_index(f, s, b, at.h, i) * f.d;",
        "float* row = p.dq_accum + lse_index(f, s, b, hk * f.group, i) * f.d;", "float16", 96, "backward"),
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
        kw = dict(bug.kw)
        deterministic = kw.pop("deterministic", False)
        p = Problem(bug.dtype, 1, 4, 2, 70, 75, bug.D, seed=21, **{"causal": True, **kw})
        check_backward(p, with_dlse=True, patches=patches, deterministic=deterministic)


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
