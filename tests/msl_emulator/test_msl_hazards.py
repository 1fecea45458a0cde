"""Hazards the emulator must report with the kernel name and the thread ids,
bad launches, and the ways host code swaps the emulator in."""
import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from msl_emulator import (  # noqa: E402
    MetalCompileError, MetalEmulatorError, MetalTranslateError, emulator_options, metal_kernel,
    metal_kernel_factory, patched_metal_kernel)


def launch(name, source, n=64, tg=64, out_n=64, inputs=None, **kw):
    inputs = inputs if inputs is not None else [mx.arange(64, dtype=mx.float32)]
    names = [f"in{i}" for i in range(len(inputs))]
    k = metal_kernel(name, names, ["out"], source, **kw)
    return k(inputs=inputs, grid=(n, 1, 1), threadgroup=(tg, 1, 1), output_shapes=[(out_n,)],
             output_dtypes=[mx.float32])[0]


def test_divergent_barrier_is_reported():
    src = """
  uint t = thread_position_in_threadgroup.x;
  if (t < 40) {
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  out[thread_position_in_grid.x] = in0[thread_position_in_grid.x];
"""
    with pytest.raises(MetalEmulatorError) as e:
        launch("emu_hz_divergent", src)
    msg = str(e.value)
    assert "emu_hz_divergent" in msg and "barrier" in msg
    assert "source line 4" in msg  # the barrier's line in `source`
    assert "thread_position_in_threadgroup=(40,0,0)" in msg  # the first thread that skipped it
    assert "(0,0,0)" in msg  # the threads left waiting


def test_barriers_on_different_lines_are_reported():
    src = """
  uint t = thread_position_in_threadgroup.x;
  if (t % 2 == 0) {
    threadgroup_barrier(mem_flags::mem_threadgroup);
  } else {
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  out[t] = 1.0f;
"""
    with pytest.raises(MetalEmulatorError, match=r"(?s)emu_hz_twobarriers.*source line 4.*source line 6"):
        launch("emu_hz_twobarriers", src)


def test_out_of_bounds_write_is_reported():
    src = """
  uint i = thread_position_in_grid.x;
  out[i + 3] = in0[i];
"""
    with pytest.raises(MetalEmulatorError) as e:
        launch("emu_hz_oobw", src, n=64, tg=32)
    msg = str(e.value)
    assert "emu_hz_oobw" in msg and "out-of-bounds" in msg and "'out'" in msg
    assert "element 64" in msg and "64 elements" in msg
    assert "thread_position_in_grid=(61,0,0)" in msg


def test_out_of_bounds_read_is_reported():
    src = """
  uint i = thread_position_in_grid.x;
  out[i] = in0[i * 2];
"""
    with pytest.raises(MetalEmulatorError, match=r"(?s)emu_hz_oobr.*read of device buffer input 'in0'.*"
                                                 r"thread_position_in_grid=\(32,0,0\)"):
        launch("emu_hz_oobr", src)


def test_threadgroup_memory_over_32kb_is_reported():
    src = """
  threadgroup float big[6000];
  threadgroup float more[3000];
  uint t = thread_position_in_threadgroup.x;
  big[t] = 1.0f; more[t] = 2.0f;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[t] = big[t] + more[t];
"""
    with pytest.raises(MetalEmulatorError, match=r"(?s)emu_hz_tgmem.*32768-byte limit.*'more'"):
        launch("emu_hz_tgmem", src)
    # 32 KB exactly is allowed
    ok = launch("emu_hz_tgmem_ok", src.replace("6000", "5192").replace("3000", "3000"))
    assert np.all(np.array(ok) == 3.0)


def test_threadgroup_array_overflow_is_reported():
    src = """
  threadgroup float buf[32];
  uint t = thread_position_in_threadgroup.x;
  buf[t] = 1.0f;  // 64 threads, 32 slots
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[t] = buf[t % 32];
"""
    with pytest.raises(MetalEmulatorError, match=r"(?s)emu_hz_tgoverflow.*past the end of threadgroup array 'buf'"):
        launch("emu_hz_tgoverflow", src)


def test_divergent_simd_functions_use_partial_masks():
    """Lanes on different branches run their SIMD-group functions with only
    the lanes of their own branch active (as the GPU does), in loops too."""
    src = """
  uint lane = thread_index_in_simdgroup;
  float v = in0[thread_position_in_grid.x];
  if (lane < 16) v = simd_sum(v); else v = simd_max(v);
  float c = 0.0f;
  for (uint it = 0; it < 1 + lane % 3; ++it) c += simd_sum(1.0f);  // 32, 21, 10 lanes
  out[thread_position_in_grid.x] = v + 1000.0f * c;
"""
    x = np.arange(64, dtype=np.float32)
    got = np.array(launch("emu_hz_simd", src, inputs=[mx.array(x)]))
    lane = np.arange(64) % 32
    g = x.reshape(2, 32)
    first = np.where(lane < 16, np.repeat(g[:, :16].sum(1), 32), np.repeat(g[:, 16:].max(1), 32))
    per_iter = [32.0, float((np.arange(32) % 3 >= 1).sum()), float((np.arange(32) % 3 >= 2).sum())]
    c = np.array([sum(per_iter[: 1 + l % 3]) for l in lane])
    np.testing.assert_array_equal(got, first + 1000.0 * c)


def test_simd_function_with_inactive_lanes():
    """Lanes that returned are inactive: a reduction over the rest is legal MSL."""
    src = """
  uint i = thread_position_in_grid.x;
  if (thread_index_in_simdgroup >= 20) return;
  out[i] = simd_sum(in0[i]);
"""
    got = np.array(launch("emu_hz_inactive", src, inputs=[mx.ones((64,))]))
    lane = np.arange(64) % 32
    assert np.all(got[lane < 20] == 20.0)


def test_missing_barrier_shows_under_another_schedule():
    """A read of another thread's threadgroup write without a barrier: the
    reverse schedule exposes it (the forward one happens to hide it)."""
    src = """
  threadgroup float buf[64];
  uint t = thread_position_in_threadgroup.x;
  buf[t] = float(t);
  out[t] = buf[(t + 1) % 64];
"""
    fwd = np.array(launch("emu_hz_race", src))
    with emulator_options(schedule="reverse"):
        rev = np.array(launch("emu_hz_race", src))
    want = ((np.arange(64) + 1) % 64).astype(np.float32)
    assert not (np.array_equal(fwd, want) and np.array_equal(rev, want))


def test_translate_and_compile_errors_name_the_kernel():
    with pytest.raises(MetalCompileError, match=r"(?s)emu_hz_syntax.*source:3"):
        launch("emu_hz_syntax", "\n  uint i = thread_position_in_grid.x;\n  out[i] = in0[i] +;\n")
    with pytest.raises(MetalTranslateError, match="emu_hz_tginit"):
        launch("emu_hz_tginit", "\n  threadgroup float b[4] = {0};\n  out[0] = b[0];\n")


def test_bad_launches_raise_value_errors():
    k = metal_kernel("emu_hz_args", ["a"], ["out"], "out[0] = a[0];")
    a = mx.zeros((8,))
    with pytest.raises(ValueError, match="inputs"):
        k(inputs=[a, a], grid=(1, 1, 1), threadgroup=(1, 1, 1), output_shapes=[(1,)], output_dtypes=[mx.float32])
    with pytest.raises(ValueError, match="output_dtypes"):
        k(inputs=[a], grid=(1, 1, 1), threadgroup=(1, 1, 1), output_shapes=[(1,)], output_dtypes=[])
    with pytest.raises(ValueError, match="1024"):
        k(inputs=[a], grid=(2048, 1, 1), threadgroup=(2048, 1, 1), output_shapes=[(1,)],
          output_dtypes=[mx.float32])
    with pytest.raises(ValueError, match="output"):
        metal_kernel("emu_hz_noout", ["a"], [], "")


@pytest.mark.parametrize("options, error, match", [
    ({"math_mode": "fast", "fast_math": True}, ValueError, r"Unknown compile option `fast_math`\..*`math_mode`"),
    ({"mathmode": "fast"}, ValueError, r"Unknown compile option `mathmode`\..*`math_mode`"),
    ({"math_mode": "fastest"}, ValueError, r"math_mode to be 'safe', 'relaxed', or 'fast', got 'fastest'"),
    ({"math_mode": 1}, TypeError, r"math_mode to be .* got 1"),
    ({1: "fast"}, TypeError, r"names must be str, got 1\..*`math_mode`"),
    ([("math_mode", "fast")], ValueError, r"Expected `compile_options` to be a dict"),
], ids=["extra_key", "misspelt_key", "bad_mode", "mode_not_str", "key_not_str", "not_a_dict"])
def test_compile_options_are_checked_like_mlx(options, error, match):
    # mx.fast.metal_kernel rejects every key but math_mode (python/src/fast.cpp)
    with pytest.raises(error, match=match):
        metal_kernel("emu_hz_opts", ["a"], ["out"], "out[0] = a[0];", compile_options=options)


def _mlx_param_names(doc):
    """Parameter names from the signature line nanobind puts first in a docstring."""
    import re

    return [n for n in re.findall(r"[(,]\s*(\w+)\s*:", doc.splitlines()[0]) if n != "self"]


def test_keywords_and_compile_options_match_mlx():
    import inspect

    import mlx.core as mxc

    from msl_emulator import EmulatedKernel

    assert list(inspect.signature(metal_kernel).parameters) == _mlx_param_names(mxc.fast.metal_kernel.__doc__)
    real = mxc.fast.metal_kernel(name="emu_hz_sig", input_names=["a"], output_names=["out"], source="")
    call = [n for n in inspect.signature(EmulatedKernel.__call__).parameters if n != "self"]
    assert call == _mlx_param_names(real.__doc__)
    a = mx.arange(4, dtype=mx.float32)
    run = dict(inputs=[a], grid=(1, 1, 1), threadgroup=(1, 1, 1), output_shapes=[(1,)], output_dtypes=[mx.float32])
    for options in (None, {}, {"math_mode": "safe"}, {"math_mode": "relaxed"}, {"math_mode": "fast"}):
        k = metal_kernel("emu_hz_opts", ["a"], ["out"], "out[0] = a[3];", compile_options=options)
        assert float(np.array(k(**run)[0])[0]) == 3.0
    with pytest.raises(TypeError, match="fast_math"):
        metal_kernel("emu_hz_opts", ["a"], ["out"], "out[0] = a[3];", fast_math=True)
    with pytest.raises(TypeError, match="compile_options"):
        k(compile_options={"math_mode": "fast"}, **run)


def test_swap_in_helpers():
    import mlx.core as mxc

    real = mxc.fast.metal_kernel
    assert metal_kernel_factory(emulate=True) is metal_kernel
    assert metal_kernel_factory(emulate=False) is real
    with patched_metal_kernel(metal_available=True) as factory:
        assert factory is metal_kernel and mxc.fast.metal_kernel is metal_kernel
        assert mxc.metal.is_available()
        k = mxc.fast.metal_kernel(name="emu_hz_patched", input_names=["a"], output_names=["o"],
                                  source="o[thread_position_in_grid.x] = 2 * a[thread_position_in_grid.x];")
        (o,) = k(inputs=[mx.arange(5, dtype=mx.float32)], grid=(5, 1, 1), threadgroup=(8, 1, 1),
                 output_shapes=[(5,)], output_dtypes=[mx.float32])
        np.testing.assert_array_equal(np.array(o), 2 * np.arange(5))
    assert mxc.fast.metal_kernel is real


def test_environment_switch(monkeypatch):
    monkeypatch.setenv("MLX_ATTN_MSL_EMULATE", "1")
    assert metal_kernel_factory() is metal_kernel
    monkeypatch.setenv("MLX_ATTN_MSL_EMULATE", "0")
    assert metal_kernel_factory() is not metal_kernel
