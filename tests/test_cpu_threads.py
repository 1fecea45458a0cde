"""The native kernel's threads: torch calls on torch's OpenMP threads (mlx_attn/backends/cpu/openmp.py:
found among the loaded libraries, used only when asked, the same bits as the kernel's own pool),
and the kernel's own pool in a forked child."""
from __future__ import annotations

import multiprocessing
import os
import sys

import numpy as np
import pytest

from cpu_helpers import native_or_skip, rand


@pytest.fixture(scope="module")
def native():
    return native_or_skip()


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def test_finds_runtimes_in_a_maps_file(tmp_path):
    from mlx_attn.backends.cpu.openmp import loaded_openmp_runtimes
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f01 r-xp 00000000 08:01 1 /opt/t/torch/lib/libgomp.so.1\n"
        "7f01-7f02 r-xp 00000000 08:01 2 /usr/lib/libgomp-a34b3233.so.1.0.0\n"
        "7f02-7f03 r-xp 00000000 08:01 3 /usr/lib/libgompfoo.so\n"
        "7f03-7f04 r-xp 00000000 08:01 4 /usr/lib/libiomp5.so\n"
        "7f04-7f05 r-xp 00000000 08:01 5 /usr/lib/libc.so.6\n")
    assert loaded_openmp_runtimes(str(maps)) == [
        "/opt/t/torch/lib/libgomp.so.1", "/usr/lib/libgomp-a34b3233.so.1.0.0",
        "/usr/lib/libiomp5.so"]
    assert loaded_openmp_runtimes(str(tmp_path / "missing")) == []


def test_attach_never_loads_a_library(native, tmp_path):
    reason = native.attach_openmp(str(tmp_path / "libgomp.so.1"))
    assert native.openmp_attached() or "not loaded" in reason


def test_torch_calls_use_torch_openmp_when_it_is_the_backend(native, torch):
    from mlx_attn.backends.cpu.openmp import torch_openmp
    openmp_backend = "ATen parallel backend: OpenMP" in torch.__config__.parallel_info()
    turned_off = os.environ.get("MLX_ATTN_CPU_OPENMP", "1").lower() in ("0", "off", "false")
    if turned_off or not openmp_backend:
        assert not torch_openmp()
        pytest.skip("MLX_ATTN_CPU_OPENMP=0" if turned_off else
                    "torch's ATen parallel backend is not OpenMP here")
    assert torch_openmp() and native.openmp_attached()


def test_env_turns_it_off(native, torch, monkeypatch):
    from mlx_attn.backends.cpu.openmp import torch_openmp
    torch_openmp.cache_clear()
    monkeypatch.setenv("MLX_ATTN_CPU_OPENMP", "0")
    try:
        assert not torch_openmp()
    finally:
        torch_openmp.cache_clear()


def _desc(a):
    return (a.ctypes.data, *(s // a.itemsize for s in a.strides))


@pytest.mark.parametrize("Lq", [1, 300])  # the decode kernel with split keys, and row blocks
def test_same_bits_on_either_thread_team(native, torch, Lq):
    from mlx_attn.backends.cpu.openmp import torch_openmp
    if not torch_openmp():
        pytest.skip("torch's OpenMP runtime is not attached")
    rng = np.random.default_rng(0)
    Hkv = 1 if Lq == 1 else 4  # decode: one kv head, so that the keys are split over threads
    q, do = rand(rng, 1, 4, Lq, 64), rand(rng, 1, 4, Lq, 64)
    k, v = rand(rng, 1, Hkv, 2000, 64), rand(rng, 1, Hkv, 2000, 64)
    results = []
    for openmp in (False, True):
        o, dq, dk, dv = np.empty_like(q), np.empty_like(q), np.empty_like(k), np.empty_like(v)
        lse = np.empty(q.shape[:3], np.float32)
        spec = dict(dtype=0, B=1, Hq=4, Hkv=Hkv, Lq=Lq, Lk=2000, D=64, Dv=64, scale=0.125,
                    softcap=0.0, causal=Lq > 1, wl=-1, wr=-1, q=_desc(q), k=_desc(k), v=_desc(v),
                    o=_desc(o), out_f32=False, lse=_desc(lse), mask=None, mask_kind=0,
                    mask_type=0, cu_q=None, cu_k=None)
        native.forward(**spec, openmp=openmp)
        native.backward(**spec, dout=_desc(do), dlse=None, dq=_desc(dq), dk=_desc(dk),
                        dv=_desc(dv), openmp=openmp)
        results.append((o, lse, dq, dk, dv))
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def _child_attention(q, queue):
    from mlx_attn import flash_attention
    queue.put(flash_attention(q, q, q, backend="cpu"))


@pytest.mark.skipif(sys.platform == "win32", reason="no fork")
def test_forked_child_runs_the_kernel(native):
    """A child forked after the parent's pool started has none of its threads: it must start its
    own pool instead of waiting for them (it used to hang)."""
    from mlx_attn import flash_attention
    q = rand(np.random.default_rng(0), 1, 4, 300, 64)
    expected = flash_attention(q, q, q, backend="cpu")  # the parent's pool is running now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_attention, args=(q, queue))
    child.start()
    try:
        got = queue.get(timeout=60)  # before join: the child exits once its result is sent
    except Exception:
        got = None
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert got is not None, "the forked child hung in the kernel"
    assert np.array_equal(got, expected)
