"""The kernel source is built exactly as mx.fast.metal_kernel builds it (no compilation here)."""
import pytest

mx = pytest.importorskip("mlx.core")

from msl_emulator import metal_kernel  # noqa: E402
from msl_emulator.translate import translate  # noqa: E402

BODY = """
  uint i = thread_position_in_grid.x + threads_per_threadgroup.x * 0;
  out[i] = T(a[elem_to_loc(i, a_shape, a_strides, 2)] * s + c[0] * N);
"""


def test_signature_template_constants_and_attributes():
    k = metal_kernel("sig", ["a", "s", "c"], ["out"], BODY)
    ks = k.generate([mx.zeros((3, 4)), mx.array(2.0), mx.array([1, 2, 3], dtype=mx.int32)], [mx.float16],
                    [("T", mx.float16), ("N", 4), ("flag", True)])
    name = "custom_kernel_sig__float16_t_4_1_float_floats_int32_tc_float16_t"
    assert ks.kernel_name == name
    want = (
        "template <typename T, int N, bool flag>\n"
        f"[[kernel]] void {name}(\n"
        "  const device float* a [[buffer(0)]],\n"
        "  const constant int* a_shape [[buffer(1)]],\n"
        "  const constant int64_t* a_strides [[buffer(2)]],\n"
        "  const constant float& s [[buffer(3)]],\n"
        "  const constant int32_t* c [[buffer(4)]],\n"
        "  device float16_t* out [[buffer(5)]],\n"
        "  uint3 thread_position_in_grid [[thread_position_in_grid]],\n"
        "  uint3 threads_per_threadgroup [[threads_per_threadgroup]]) {\n"
        f"{BODY}\n}}\n"
        f'\ntemplate [[host_name("{name}")]] [[kernel]] decltype({name}<half, 4, 1>) {name}<half, 4, 1>;\n'
    ).replace("<half, 4, 1>", "<float16_t, 4, 1>")
    assert ks.source == want


def test_signature_without_attributes_or_templates_and_atomic_outputs():
    # MLX counts the x_ndim buffer when deciding where the parameter list ends, so
    # with several outputs and no thread attributes it closes the list one output
    # early; the emulator reproduces that (the kernel then fails to compile, as on Metal).
    k = metal_kernel("plain", ["x"], ["o1", "o2"], "o1[0] = x[0]; o2[0] = x_ndim;", header="// h\n",
                     atomic_outputs=True)
    ks = k.generate([mx.zeros((8,), dtype=mx.bfloat16)], [mx.float32, mx.int32])
    assert ks.source == (
        "// h\n"
        "[[kernel]] void custom_kernel_plain_bfloat16_t_float_int32_t(\n"
        "  const device bfloat16_t* x [[buffer(0)]],\n"
        "  const constant int& x_ndim [[buffer(1)]],\n"
        "  device atomic<float>* o1 [[buffer(2)]]) {\n"
        "  device atomic<int32_t>* o2 [[buffer(3)]]) {\n"
        "o1[0] = x[0]; o2[0] = x_ndim;\n}\n")


def test_translation_keeps_lines_and_rewrites_address_spaces():
    src = "kernel void f(const device float4* p [[buffer(0)]],\n threadgroup float* t) {\n" \
          "  threadgroup half buf[4][8];\n  float2 v = p[0].xy; v.yx = v;\n}\n"
    out, tg = translate(src)
    assert out.count("\n") == src.count("\n")
    assert "::msl_emu::dptr<const float4>" in out and "device" not in out and "[[" not in out
    assert tg == ["buf"] and "tg_var<half [4][8]>" in out
    assert "_sw<0,1>()" in out and "_swref<1,0>()" in out
