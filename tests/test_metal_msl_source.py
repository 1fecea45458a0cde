"""msl_source.py: the whole Metal source the torch launcher compiles is the one MLX would
generate from the same body (same buffer names in the same order, same attributes), with the
documented differences (lists for shapes/strides/ip/fp, constants for template arguments).
Checked against the MSL emulator's reproduction of MLX's generator (emulators/msl_emulator/
signature.py, itself tested against MLX's `verbose=True` output)."""
from __future__ import annotations

import re

import pytest

from mlx_attn.backends.metal import launches, msl_source
from mlx_attn.backends.metal.launches import Config, Problem
from mlx_attn.backends.metal.shaders import SIGNATURES

CFG = Config(0.125, 0.0, -1, 0, mask_kind=1)
PROBLEM = Problem(1, 4, 33, 64, 2, 40, 64, "float16", "bool")


def _launches():
    partial, merge, _ = launches.decode(CFG, PROBLEM)
    return [launches.prefill(CFG, PROBLEM), partial, merge, *launches.backward(CFG, PROBLEM)]


def _dtypes(launch):
    inputs = SIGNATURES[launch.kernel][0]
    named = dict(q="float16", k="float16", v="float16", mask="bool", cu_q="int32",
                 cu_k="int32", dout="float16", lse="float32", delta="float32",
                 part_o="float32", part_ml="float32")
    return {n: named[n] for n in inputs if n not in ("ip", "fp")}


@pytest.mark.parametrize("launch", _launches(), ids=lambda l: l.kernel)
def test_buffers_in_mlx_order_with_mlx_names(launch):
    mx = pytest.importorskip("mlx.core")
    from msl_emulator.signature import InputDesc, generate
    from mlx_attn.backends.metal.shaders import body, header

    src = msl_source.kernel_source(launch.kernel, launch.template, _dtypes(launch),
                                   launch.output_dtypes)
    assert msl_source.declared_buffers(src.source) == len(src.bindings)
    ours = [b.name if b.kind in ("input", "params", "output") else f"{b.name}_{b.kind}"
            for b in src.bindings]
    inputs, outputs = SIGNATURES[launch.kernel]
    dtypes = {**_dtypes(launch), "ip": "int32", "fp": "float32"}
    descs = [InputDesc(n, dtypes[n], 1 if n in ("ip", "fp") else 4, 16) for n in inputs]
    template = [(n, getattr(mx, "bool_" if v == "bool" else v) if isinstance(v, str) else v)
                for n, v in launch.template]
    mlx = generate(launch.kernel, list(inputs), list(outputs), body(launch.kernel), header(),
                   descs, list(launch.output_dtypes), template, False)
    assert ours == [p.name for p in mlx.params]
    assert [a for a, _ in mlx.attributes] == re.findall(r"\[\[(\w+)\]\]", src.source)[1:]


def test_template_arguments_become_constants():
    src = msl_source.kernel_source("forward_prefill", launches.prefill(CFG, PROBLEM).template,
                                   _dtypes(launches.prefill(CFG, PROBLEM)), ("bfloat16", "float32"))
    assert "typedef half T;" in src.source and "typedef bool MT;" in src.source
    assert "constant constexpr int D = 64;" in src.source
    assert "constant constexpr bool VARLEN = false;" in src.source
    assert "device bfloat* out [[buffer(" in src.source
    assert src.function.startswith("mlx_attn_forward_prefill_half_bool_1_64_64_")


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="kernel"):
        msl_source.kernel_source("nope", (), {}, ())
    with pytest.raises(ValueError, match="input_dtypes"):
        msl_source.kernel_source("decode_merge", (), {}, ("float16", "float32"))
    with pytest.raises(TypeError, match="float64"):
        msl_source.kernel_source("decode_merge", (("T", "float64"),),
                                 dict(part_o="float32", part_ml="float32", cu_q="int32"),
                                 ("float16", "float32"))
