"""The CUDA kernels on MLX arrays: launch records for the flat-argument entry points and their
launch through `mx.fast.precompiled_cuda_kernel`.

MLX launches one `extern "C"` kernel of a PTX image by name: a pointer per input, a pointer per
output, then the scalars (int32 / float32 here), in that order (cuda_bridge/include/
mlx_attn_cuda/mlx_entries.cuh declares the entries in the same order). Its `grid` counts
threads, not blocks: a launch of `ctas` blocks of `threads` threads passes grid
`ctas * threads` and threadgroup `threads`. The records hold plain ints and names, so that the
emulator's stand-in (emulators/cuda_emulator/mlx_cuda.py) receives exactly what MLX would.

The grids restate the bridge's C++ launchers (launch.cuh launch_fwd_traits, bwd_launch.cuh
launch_bwd) for these entries; the tile sizes, threads and shared memory come from the bridge
(`launch_dims`, read from the traits tables) and the configuration from its planner (`plan`).

Images: the wheel ships `kernels/mlx_<fp16|bf16>_hdim<D>.ptx.gz` beside this file (built by
cuda_bridge/CMakeLists.txt). Under MLX_ATTN_CUDA_EMULATE=1 the "image" is the entry source the
emulator compiles instead (`cuda_emulator.mlx_cuda.kernel_source`).
"""
from __future__ import annotations

import functools
import gzip
import importlib
from dataclasses import dataclass
from pathlib import Path

from .extension import emulated, extension

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
EMULATOR_MODULE = "cuda_emulator.mlx_cuda"
TAGS = {"float16": "fp16", "bfloat16": "bf16"}
# MaskType (params.h) per mask dtype name
MASK_TYPES = {"bool": 1, "float32": 2, "float16": 3, "bfloat16": 4}
INT32_MAX = 2**31 - 1

# The scalars of the entries, in the order of MA_FLAT_FWD_SCALARS / MA_FLAT_BWD_SCALARS.
FWD_SCALARS = ("b", "hq", "hkv", "lq", "lk", "d", "d_v", "q_sb", "q_sh", "q_sl", "k_sb", "k_sh",
               "k_sl", "v_sb", "v_sh", "v_sl", "o_sb", "o_sh", "o_sl", "mask_type", "m_sb",
               "m_sh", "m_sq", "m_sk", "causal", "window_left", "window_right", "num_splits",
               "scale", "scale_log2", "softcap", "varlen", "total_q")
BWD_SCALARS = ("do_sb", "do_sh", "do_sl", "dq_sb", "dq_sh", "dq_sl", "dk_sb", "dk_sh", "dk_sl",
               "dv_sb", "dv_sh", "dv_sl", "has_dlse", "deterministic")
FLOAT_SCALARS = frozenset({"scale", "scale_log2", "softcap"})


@dataclass(frozen=True)
class Launch:
    entry: str                # the kernel's name in the image
    inputs: tuple             # names of the input arrays, in the entry's order
    outputs: tuple            # names of the outputs this launch produces ("" = a placeholder)
    output_shapes: tuple      # shapes, one per output, in the entry's order
    output_dtypes: tuple      # dtype names
    grid: tuple               # threads (MLX's convention), 3 ints
    threadgroup: tuple        # threads per block, 3 ints
    shared_memory: int = 0    # dynamic shared memory, bytes
    init_value: float | None = None  # fill every output first (the dQ atomics accumulate)
    backward: bool = False    # the entry takes the backward's scalars after the forward's


def _grid(ctas: int, threads: int, what: str, y: int = 1) -> tuple:
    if ctas * threads > INT32_MAX:
        raise ValueError(f"mlx_attn CUDA (MLX): too many blocks for one {what} launch "
                         f"({ctas} x {threads} threads exceeds MLX's int32 grid)")
    return (ctas * threads, y, 1)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def shapes(s: dict) -> dict:
    """Shapes of q, out and lse (the lse, delta and dq_accum rows: lse_rows) of problem `s`.
    Dense: [B, Hq, Lq, D], [B, Hq, Lq, Dv], [B, Hq, Lq]. Fused varlen (params.h): packed
    [total_q, Hq, D], [total_q, Hq, Dv], lse [Hq, total_q]."""
    Hq, D, Dv = s["hq"], s["d"], s["d_v"]
    if s["varlen"]:
        T = s["total_q"]
        return dict(q=(T, Hq, D), out=(T, Hq, Dv), lse=(Hq, T), lse_rows=Hq * T)
    B, Lq = s["b"], s["lq"]
    return dict(q=(B, Hq, Lq, D), out=(B, Hq, Lq, Dv), lse=(B, Hq, Lq), lse_rows=B * Hq * Lq)


FWD_INPUTS = ("q", "k", "v", "mask", "cu_q", "cu_k")


def forward_launches(s: dict, dims: dict, config: int, splits: int, dtype: str,
                     bucket: int) -> list:
    """The forward of problem `s` (FWD_SCALARS values) with the planner's (config, splits) on
    the entries of (dtype, head-dim bucket) whose launch_dims are `dims`: the prefill or decode
    kernel, then the combine when the key range is split (dense only). Grids: launch.cuh
    (varlen: b sequences and lq the longest, CTAs past a sequence's rows exit)."""
    tag = f"{TAGS[dtype]}_{bucket}"
    B, Hq, Lq, Dv = s["b"], s["hq"], s["lq"], s["d_v"]
    rows_per_cta, threads, smem = dims["prefill" if config == 0 else "decode"]
    ctas = ceil_div(Lq * (Hq // s["hkv"]), rows_per_cta) * B * s["hkv"]
    split = splits > 1
    if split and s["varlen"]:
        raise ValueError("mlx_attn CUDA (MLX): varlen takes num_splits == 1")
    one, sh = (1,), shapes(s)
    main = Launch(
        f"ma_fwd_{'prefill' if config == 0 else 'decode'}_{tag}", FWD_INPUTS,
        ("", "", "o_accum", "lse_accum") if split else ("out", "lse", "", ""),
        (one if split else sh["out"], one if split else sh["lse"],
         (splits, B, Hq, Lq, Dv) if split else one, (splits, B, Hq, Lq) if split else one),
        (dtype, "float32", "float32", "float32"), _grid(ctas, threads, "forward", splits),
        (threads, 1, 1), smem)
    if not split:
        return [main]
    rows, threads, _ = dims["combine"]
    combine = Launch(f"ma_fwd_combine_{tag}", ("o_accum", "lse_accum"), ("out", "lse"),
                     ((B, Hq, Lq, Dv), (B, Hq, Lq)), (dtype, "float32"),
                     _grid(ceil_div(B * Hq * Lq, rows), threads, "split-KV combine"),
                     (threads, 1, 1))
    return [main, combine]


BWD_INPUTS = ("q", "k", "v", "mask", "lse", "dout", "dlse", "delta", "cu_q", "cu_k")


def backward_launches(s: dict, dims: dict, dtype: str, bucket: int, deterministic: bool,
                      k_shape: tuple, v_shape: tuple) -> list:
    """The backward as bwd_launch.cuh runs it. Default: delta pass, dK/dV with dQ atomics into
    a zero-filled float32 dq_accum, conversion. Deterministic: the dQ kernel (delta, dq), then
    dK/dV without atomics. Each launch's outputs: delta, dq, dk, dv, dq_accum (placeholders of
    one element where that kernel writes nothing). Grids: bwd_launch.cuh."""
    tag = f"{TAGS[dtype]}_{bucket}"
    B, Hq, Hkv, Lq, Lk, D = s["b"], s["hq"], s["hkv"], s["lq"], s["lk"], s["d"]
    sh = shapes(s)
    q_shape, lse_shape, lse_rows = sh["q"], sh["lse"], sh["lse_rows"]
    one, f32 = (1,), "float32"
    dq_rows, dq_threads, dq_smem = dims["bwd_dq"]
    kv_rows, kv_threads, kv_smem = dims["bwd_dkdv"]
    q_grid = _grid(ceil_div(Lq, dq_rows) * B * Hq, dq_threads, "backward dQ")
    k_grid = _grid(ceil_div(Lk, kv_rows) * B * Hkv, kv_threads, "backward dK/dV")
    dtypes = (f32, dtype, dtype, dtype, f32)
    if deterministic:
        return [
            Launch(f"ma_bwd_dq_{tag}", BWD_INPUTS, ("delta", "dq", "", "", ""),
                   (lse_shape, q_shape, one, one, one), dtypes,
                   q_grid, (dq_threads, 1, 1), dq_smem, backward=True),
            Launch(f"ma_bwd_dkdv_{tag}", BWD_INPUTS, ("", "", "dk", "dv", ""),
                   (one, one, k_shape, v_shape, one), dtypes,
                   k_grid, (kv_threads, 1, 1), kv_smem, backward=True),
        ]
    rows, threads, _ = dims["bwd_convert"]
    return [
        Launch(f"ma_bwd_delta_{tag}", BWD_INPUTS, ("delta", "", "", "", ""),
               (lse_shape, one, one, one, one), dtypes,
               q_grid, (dq_threads, 1, 1), dq_smem, backward=True),
        Launch(f"ma_bwd_dkdv_{tag}", BWD_INPUTS, ("", "", "dk", "dv", "dq_accum"),
               (one, one, k_shape, v_shape, (lse_rows, D)),
               dtypes, k_grid, (kv_threads, 1, 1), kv_smem, init_value=0.0, backward=True),
        Launch(f"ma_bwd_convert_{tag}", ("dq_accum", "cu_q"), ("dq",), (q_shape,), (dtype,),
               _grid(ceil_div(lse_rows, rows), threads, "dq conversion"), (threads, 1, 1),
               backward=True),
    ]


def scalars(s: dict, backward: bool) -> list:
    """The scalar arguments in the entry's order: int for the sizes, strides and flags, float
    for scale, scale_log2 and softcap (MLX passes them as int32 and float32)."""
    names = FWD_SCALARS + (BWD_SCALARS if backward else ())
    return [float(s[n]) if n in FLOAT_SCALARS else int(s[n]) for n in names]


# -- images --------------------------------------------------------------------------------------
def image_path(dtype: str, bucket: int) -> Path:
    return KERNEL_DIR / f"mlx_{TAGS[dtype]}_hdim{bucket}.ptx.gz"


def image_reason(dtype: str, bucket: int) -> str:
    """Why the image of (dtype, bucket) cannot be had ('' when it can)."""
    if emulated():
        return ""
    path = image_path(dtype, bucket)
    if not path.is_file():
        return (f"the PTX of the MLX entry points for {dtype}, head-dim bucket {bucket} is not "
                f"in this build ({path.name} missing beside the cuda backend; built by "
                f"cuda_bridge/CMakeLists.txt with MLX_ATTN_CUDA_MLX_PTX=ON)")
    return ""


def image(dtype: str, bucket: int) -> bytes:
    """The kernel image MLX loads: PTX (NUL-terminated, as cuModuleLoadData wants it), or under
    the emulator the entry source it compiles."""
    return _image(dtype, bucket, emulated())


@functools.cache  # per mode: MLX_ATTN_CUDA_EMULATE may change within a process
def _image(dtype: str, bucket: int, emulate: bool) -> bytes:
    if emulate:
        return importlib.import_module(EMULATOR_MODULE).kernel_source(dtype, bucket).encode()
    reason = image_reason(dtype, bucket)
    if reason:
        raise RuntimeError(f"mlx_attn CUDA (MLX): {reason}")
    return gzip.decompress(image_path(dtype, bucket).read_bytes()) + b"\0"


def launch_dims(bucket: int) -> dict:
    """{kernel: (rows per CTA, threads, dynamic smem bytes)} of a head-dim bucket, from the
    bridge (launch_dims.cuh)."""
    return _launch_dims(bucket, emulated())


@functools.cache
def _launch_dims(bucket: int, emulate: bool) -> dict:
    return dict(extension().launch_dims(bucket))


# -- launching -----------------------------------------------------------------------------------
def _launcher():
    """mx.fast.precompiled_cuda_kernel, or the emulator's stand-in."""
    if emulated():
        return importlib.import_module(EMULATOR_MODULE).precompiled_cuda_kernel
    import mlx.core as mx
    return mx.fast.precompiled_cuda_kernel


def run_all(launches: list, arrays: dict, s: dict, dtype: str, bucket: int) -> dict:
    """Runs the launches in order, each reading its inputs from `arrays` by name and adding its
    named outputs there; returns `arrays`."""
    for launch in launches:
        outs = run(launch, arrays, s, dtype, bucket)
        arrays.update((name, x) for name, x in zip(launch.outputs, outs) if name)
    return arrays


def run(launch: Launch, arrays: dict, s: dict, dtype: str, bucket: int) -> list:
    """Runs one launch with the named input `arrays`; returns its outputs (MLX arrays)."""
    import mlx.core as mx

    return _launcher()(
        name=launch.entry, compiled_source=image(dtype, bucket),
        inputs=[arrays[n] for n in launch.inputs], output_shapes=[tuple(x) for x in launch.output_shapes],
        output_dtypes=[getattr(mx, d) for d in launch.output_dtypes],
        scalars=scalars(s, launch.backward), grid=launch.grid, threadgroup=launch.threadgroup,
        shared_memory=launch.shared_memory, init_value=launch.init_value,
        ensure_row_contiguous=True)
