"""The PTX of the MLX entry points that the build emits (cuda_bridge/CMakeLists.txt,
MLX_ATTN_CUDA_MLX_PTX): every image names the seven entries of its (dtype, head-dim bucket), and
each entry's parameter list is what the MLX launcher passes, in MLX's order: a 64-bit pointer per
input and output, then a 32-bit int or float per scalar (mlx_launch.py). Also that the launcher's
threads per block fit each entry's __launch_bounds__ (.maxntid). No GPU needed; skips without a
build of the CUDA bridge."""
from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from mlx_attn.backends.cuda import mlx_launch

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("prefill", "decode", "combine", "delta", "dq", "dkdv", "convert")


def _images() -> list[Path]:
    found = sorted(mlx_launch.KERNEL_DIR.glob("mlx_*.ptx.gz"))
    return found or sorted(ROOT.glob("build/*/cuda_bridge/mlx_ptx/mlx_*.ptx.gz"))


IMAGES = _images()
pytestmark = pytest.mark.skipif(
    not IMAGES, reason="no PTX of the MLX entry points: the CUDA bridge is not built here "
                       "(cmake -DMLX_ATTN_BUILD_CUDA=ON ...; see docs/cuda.md)")
_ENTRY = re.compile(r"\.visible \.entry (\w+)\(\s*(.*?)\)\s*(.*?)\{", re.S)


def _entries(path: Path) -> dict:
    """{name: ([param types], maxntid or None)} of one image."""
    text = gzip.decompress(path.read_bytes()).decode()
    out = {}
    for name, params, directives in _ENTRY.findall(text):
        types = re.findall(r"\.param \.(\w+)", params)
        ntid = re.search(r"\.maxntid (\d+)", directives)
        out[name] = (types, int(ntid.group(1)) if ntid else None)
    return out


def _expected(tag: str, bucket: int) -> dict:
    """{entry: (param types, threads)} from the launcher's own launch records."""
    from cuda_emulator import attention  # launch_dims.cuh's numbers, as the bridge has them

    dtype = {"fp16": "float16", "bf16": "bfloat16"}[tag]
    dims = attention.launch_dims(bucket)
    s = dict.fromkeys(mlx_launch.FWD_SCALARS + mlx_launch.BWD_SCALARS, 1)
    s.update(b=1, hq=2, hkv=1, lq=5, lk=7, d=bucket, d_v=bucket, varlen=0, total_q=0)
    kv = (1, 1, 7, bucket)
    launches = (mlx_launch.forward_launches(s, dims, 0, 1, dtype, bucket) +
                mlx_launch.forward_launches(s, dims, 1, 2, dtype, bucket) +
                mlx_launch.backward_launches(s, dims, dtype, bucket, False, kv, kv) +
                mlx_launch.backward_launches(s, dims, dtype, bucket, True, kv, kv))
    out = {}
    for launch in launches:
        names = mlx_launch.FWD_SCALARS + (mlx_launch.BWD_SCALARS if launch.backward else ())
        scalars = ["f32" if n in mlx_launch.FLOAT_SCALARS else "u32" for n in names]
        out[launch.entry] = (["u64"] * (len(launch.inputs) + len(launch.outputs)) + scalars,
                             launch.threadgroup[0])
    return out


@pytest.mark.parametrize("path", IMAGES, ids=[p.name for p in IMAGES])
def test_image_names_the_entries_with_the_launchers_arguments(path):
    tag, bucket = re.match(r"mlx_(fp16|bf16)_hdim(\d+)\.ptx\.gz", path.name).groups()
    entries = _entries(path)
    assert sorted(entries) == sorted(f"ma_{'fwd' if k in KINDS[:3] else 'bwd'}_{k}_{tag}_{bucket}"
                                     for k in KINDS)
    for name, (types, threads) in _expected(tag, int(bucket)).items():
        got, ntid = entries[name]
        assert got == types, f"{name}: PTX parameters {got}, the launcher passes {types}"
        assert ntid is None or threads <= ntid, f"{name}: {threads} threads > .maxntid {ntid}"


def test_ptx_targets_the_oldest_built_architecture():
    text = gzip.decompress(IMAGES[0].read_bytes()).decode()
    target = re.search(r"^\.target (sm_\d+)", text, re.M).group(1)
    assert int(target[3:]) >= 80, target
