"""The whole Metal source of one kernel variant, for launchers that compile MSL themselves.

`mx.fast.metal_kernel` takes only a kernel body and writes the `[[kernel]]` signature around it;
`torch.mps.compile_shader` compiles a whole source. `kernel_source` writes, from the same body,
header and SIGNATURES (shaders.py), the source MLX would generate for the variant, with the
differences that torch's argument binding needs (torch binds each call argument to
`[[buffer(i)]]` in order: a tensor as a device buffer at its storage offset, a list of Python
ints as an int64 array, of floats as a float32 array, in the constant address space):

- every data input is a `const device T*`, every output a `device T*` (MLX also uses `constant`
  for inputs of fewer than 8 elements; torch has no such rule);
- `<name>_shape` and `<name>_strides` follow their input, as in MLX, when the body mentions them,
  as `const constant int64_t*` (MLX: `int*` for shapes): the launcher passes them as lists;
- the parameter inputs ip/fp (common.h) are `const constant int64_t*` and `const constant
  float*`, passed as lists (MLX: int32 and float32 arrays);
- template arguments become program-scope constants after the header (`typedef half T;`,
  `constant constexpr int D = 64;`) instead of a template and its explicit instantiation;
- the thread-position attributes the body names follow, in MLX's order and types.

`Binding` records say what each `[[buffer(i)]]` receives, so the launcher assembles its
arguments from them and never restates the order.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .shaders import PARAM_INPUTS, SIGNATURES, body, header

# dtype name -> MSL type name
MSL_TYPES = {"float16": "half", "bfloat16": "bfloat", "float32": "float", "bool": "bool",
             "int32": "int", "int64": "long", "uint32": "uint", "uint8": "uchar", "int8": "char"}

# (attribute, type), in the order MLX writes them (mlx/backend/metal/custom_kernel.cpp)
ATTRIBUTES = (
    ("dispatch_quadgroups_per_threadgroup", "uint"),
    ("dispatch_simdgroups_per_threadgroup", "uint"),
    ("dispatch_threads_per_threadgroup", "uint3"),
    ("grid_origin", "uint3"),
    ("grid_size", "uint3"),
    ("quadgroup_index_in_threadgroup", "uint"),
    ("quadgroups_per_threadgroup", "uint"),
    ("simdgroup_index_in_threadgroup", "uint"),
    ("simdgroups_per_threadgroup", "uint"),
    ("thread_execution_width", "uint"),
    ("thread_index_in_quadgroup", "uint"),
    ("thread_index_in_simdgroup", "uint"),
    ("thread_index_in_threadgroup", "uint"),
    ("thread_position_in_grid", "uint3"),
    ("thread_position_in_threadgroup", "uint3"),
    ("threadgroup_position_in_grid", "uint3"),
    ("threadgroups_per_grid", "uint3"),
    ("threads_per_grid", "uint3"),
    ("threads_per_simdgroup", "uint"),
    ("threads_per_threadgroup", "uint3"),
)


@dataclass(frozen=True)
class Binding:
    """What `[[buffer(index)]]` receives: kind is "input" (a tensor), "shape" or "strides" (of
    the input `name`, a list of ints), "params" (the ip or fp list) or "output"."""
    index: int
    kind: str
    name: str


@dataclass(frozen=True)
class KernelSource:
    function: str           # the [[kernel]] function's name in the library
    source: str             # the whole MSL source
    bindings: tuple         # Binding per [[buffer(i)]], in index order


def msl_type(dtype: str, what: str) -> str:
    try:
        return MSL_TYPES[dtype]
    except KeyError:
        raise TypeError(f"{what}: dtype {dtype} has no Metal type here (supported: "
                        f"{', '.join(sorted(MSL_TYPES))})") from None


def _template_line(name: str, value) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return f"constant constexpr bool {name} = {'true' if value else 'false'};"
    if isinstance(value, int):
        return f"constant constexpr int {name} = {value};"
    if isinstance(value, str):
        return f"typedef {msl_type(value, f'template argument {name}')} {name};"
    raise TypeError(f"template argument {name}: expected a dtype name, an int or a bool, "
                    f"got {value!r}")


def function_name(kernel: str, template) -> str:
    """mlx_attn_<kernel>_<template values>, e.g. mlx_attn_forward_prefill_half_bool_1_64_..."""
    parts = [MSL_TYPES.get(v, v) if isinstance(v, str) else str(int(v)) for _, v in template]
    return "_".join([f"mlx_attn_{kernel}"] + parts)


def kernel_source(kernel: str, template, input_dtypes: dict, output_dtypes) -> KernelSource:
    """The whole source of `kernel` (a SIGNATURES key) for one template variant.

    template: ((name, value), ...) as launches.Launch holds it; input_dtypes: data input name ->
    dtype name (the parameter inputs ip/fp need none); output_dtypes: dtype names in output order.
    """
    if kernel not in SIGNATURES:
        raise ValueError(f"kernel: unknown kernel {kernel!r} (known: {', '.join(SIGNATURES)})")
    inputs, outputs = SIGNATURES[kernel]
    text = body(kernel)
    params, bindings = [], []

    def add(decl: str, kind: str, name: str):
        index = len(bindings)
        params.append(f"  {decl} [[buffer({index})]]")
        bindings.append(Binding(index, kind, name))

    for name in inputs:
        if name in PARAM_INPUTS:
            element = "int64_t" if PARAM_INPUTS[name] == "int" else "float"
            add(f"const constant {element}* {name}", "params", name)
            continue
        if name not in input_dtypes:
            raise ValueError(f"input_dtypes: no dtype for input {name!r} of {kernel}")
        add(f"const device {msl_type(input_dtypes[name], name)}* {name}", "input", name)
        # the same substring test as MLX: the buffers exist when the body names them
        for suffix in ("shape", "strides"):
            if f"{name}_{suffix}" in text:
                add(f"const constant int64_t* {name}_{suffix}", suffix, name)
    if len(output_dtypes) != len(outputs):
        raise ValueError(f"output_dtypes: {kernel} has {len(outputs)} outputs, got "
                         f"{len(output_dtypes)} dtypes")
    for name, dtype in zip(outputs, output_dtypes):
        add(f"device {msl_type(dtype, name)}* {name}", "output", name)
    params += [f"  {t} {a} [[{a}]]" for a, t in ATTRIBUTES if a in text]

    function = function_name(kernel, template)
    constants = "\n".join(_template_line(n, v) for n, v in template)
    source = (
        "#include <metal_stdlib>\n"
        "using namespace metal;\n\n"
        f"{header()}\n"
        f"// template arguments of this variant\n{constants}\n\n"
        f"[[kernel]] void {function}(\n" + ",\n".join(params) + ") {\n"
        f"{text}\n}}\n")
    return KernelSource(function, source, tuple(bindings))


def declared_buffers(source: str) -> int:
    """How many [[buffer(i)]] parameters a source declares (a check for tests and tools)."""
    return len(re.findall(r"\[\[buffer\(\d+\)\]\]", source))
