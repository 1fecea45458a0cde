"""Builds a custom kernel's Metal source the way ``mx.fast.metal_kernel`` does.

MLX generates the kernel's signature from the call: inputs become
``const device T*`` (``const constant T*`` when the array has fewer than 8
elements, ``const constant T&`` when it is 0-d), ``<name>_shape`` /
``<name>_strides`` / ``<name>_ndim`` buffers are added when the body mentions
them, outputs become ``device T*`` (``device atomic<T>*`` with
``atomic_outputs``), and every thread-position builtin whose name appears in the
body becomes a parameter with its attribute. Template arguments turn the kernel
into a template with one explicit instantiation. This module reproduces that
text exactly (it is what ``verbose=True`` prints) and also describes each
parameter for the emulator's glue code.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# Inputs with fewer elements than this are passed in the constant address space.
MAX_CONSTANT_ARRAY_SIZE = 8

# (attribute, type) in the order MLX emits them.
METAL_ATTRIBUTES: tuple[tuple[str, str], ...] = (
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

# dtype name -> (Metal type string as MLX writes it, itemsize)
TYPE_STRINGS: dict[str, tuple[str, int]] = {
    "float32": ("float", 4),
    "float16": ("float16_t", 2),
    "bfloat16": ("bfloat16_t", 2),
    "float64": ("double", 8),
    "complex64": ("complex64_t", 8),
    "bool": ("bool", 1),
    "int8": ("int8_t", 1),
    "int16": ("int16_t", 2),
    "int32": ("int32_t", 4),
    "int64": ("int64_t", 8),
    "uint8": ("uint8_t", 1),
    "uint16": ("uint16_t", 2),
    "uint32": ("uint32_t", 4),
    "uint64": ("uint64_t", 8),
}


def dtype_name(dtype) -> str:
    """'float32', 'bfloat16', ... for an ``mx.Dtype`` (or such a string)."""
    if isinstance(dtype, str):
        name = dtype
    else:
        name = str(dtype).rsplit(".", 1)[-1]
    if name == "bool_":
        name = "bool"
    if name not in TYPE_STRINGS:
        raise ValueError(f"[metal_kernel] Unsupported dtype {dtype!r}.")
    return name


def type_string(dtype) -> str:
    return TYPE_STRINGS[dtype_name(dtype)][0]


def shape_infos(source: str, input_names) -> list[tuple[bool, bool, bool]]:
    # MLX looks for the plain substrings, so `a_shape` also matches `data_shape`.
    return [(f"{n}_shape" in source, f"{n}_strides" in source, f"{n}_ndim" in source) for n in input_names]


def attributes(source: str) -> list[tuple[str, str]]:
    return [(a, t) for a, t in METAL_ATTRIBUTES if a in source]


def template_kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if _is_dtype(value):
        return "typename"
    raise ValueError("[metal_kernel] Invalid template argument. Must be `mlx.core.Dtype`, `int` or `bool`.")


def template_value(value) -> str:
    kind = template_kind(value)
    if kind == "bool":
        return "1" if value else "0"  # MLX streams the bool without boolalpha
    if kind == "int":
        return str(int(value))
    return type_string(value)


def _is_dtype(value) -> bool:
    return type(value).__name__ == "Dtype"


def write_template(template_args) -> str:
    return "<" + ", ".join(template_value(v) for _, v in template_args) + ">"


@dataclass
class InputDesc:
    name: str
    dtype: str  # dtype name
    ndim: int
    size: int

    @property
    def location(self) -> str:
        return "constant" if self.size < MAX_CONSTANT_ARRAY_SIZE else "device"


@dataclass
class Param:
    """One kernel buffer parameter, in buffer-index order."""

    name: str
    kind: str  # input | shape | strides | ndim | output
    ctype: str  # element type as written in the signature
    ref: bool  # passed by reference (0-d inputs, ndim)
    is_const: bool
    atomic: bool = False
    input_index: int = -1
    output_index: int = -1


@dataclass
class KernelSource:
    kernel_name: str
    source: str  # the full Metal source MLX would compile
    function_source: str  # header + templated kernel function, without the instantiation
    template_args: str  # "<float, 4>" or ""
    params: list[Param] = field(default_factory=list)
    attributes: list[tuple[str, str]] = field(default_factory=list)
    # 0-based line of function_source where the signature / the body starts
    # (hazard reports name "header line N" / "source line N").
    signature_line: int = 0
    body_line: int = 0
    # {0-based line: label} of the #line markers; None: header / signature / source as above
    # (a whole source handed to torch_mps.compile_shader is marked "source" from its first line)
    line_marks: dict | None = None


def kernel_name(name: str, template_args, inputs: list[InputDesc], output_dtypes) -> str:
    out = "custom_kernel_" + name
    if template_args:
        h = re.sub(r"<|>|(, )", "_", write_template(template_args))[:-1]
        out += "_" + h
    for inp in inputs:
        out += "_" + type_string(inp.dtype)
        if inp.ndim == 0:
            out += "s"
        elif inp.size < MAX_CONSTANT_ARRAY_SIZE:
            out += "c"
    for d in output_dtypes:
        out += "_" + type_string(d)
    return out


def write_signature(func_name, header, source, input_names, inputs: list[InputDesc], output_names, output_dtypes,
                    template_args, attrs, infos, atomic_outputs) -> tuple[str, list[Param]]:
    params: list[Param] = []
    ks = header
    if template_args:
        ks += "template <" + ", ".join(f"{template_kind(v)} {n}" for n, v in template_args) + ">\n"
    ks += "[[kernel]] void " + func_name + "(\n"
    index = 0
    for i, inp in enumerate(inputs):
        name = input_names[i]
        t = type_string(inp.dtype)
        ref = "&" if inp.ndim == 0 else "*"
        ks += f"  const {inp.location} {t}{ref} {name} [[buffer({index})]],\n"
        params.append(Param(name, "input", t, inp.ndim == 0, True, input_index=i))
        index += 1
        if inp.ndim > 0:
            if infos[i][0]:
                ks += f"  const constant int* {name}_shape [[buffer({index})]],\n"
                params.append(Param(f"{name}_shape", "shape", "int", False, True, input_index=i))
                index += 1
            if infos[i][1]:
                ks += f"  const constant int64_t* {name}_strides [[buffer({index})]],\n"
                params.append(Param(f"{name}_strides", "strides", "int64_t", False, True, input_index=i))
                index += 1
            if infos[i][2]:
                ks += f"  const constant int& {name}_ndim [[buffer({index})]],\n"
                params.append(Param(f"{name}_ndim", "ndim", "int", True, True, input_index=i))
                index += 1
    for i, name in enumerate(output_names):
        t = type_string(output_dtypes[i])
        ks += "  device " + (f"atomic<{t}>" if atomic_outputs else t) + f"* {name} [[buffer({index})]]"
        params.append(Param(name, "output", t, False, False, atomic=atomic_outputs, output_index=i))
        # Same test as MLX (it counts shape/stride buffers in `index`).
        if index < len(inputs) + len(output_names) - 1 or len(attrs) > 0:
            ks += ",\n"
        else:
            ks += ") {\n"
        index += 1
    for j, (attr, t) in enumerate(attrs):
        ks += f"  {t} {attr} [[{attr}]]"
        ks += ",\n" if j < len(attrs) - 1 else ") {\n"
    ks += source
    ks += "\n}\n"
    return ks, params


def generate(name, input_names, output_names, source, header, inputs: list[InputDesc], output_dtypes,
             template_args, atomic_outputs) -> KernelSource:
    """The Metal source and parameter layout for one call of a custom kernel."""
    template_args = list(template_args or [])
    for n, v in template_args:
        if not isinstance(n, str):
            raise ValueError("[metal_kernel] Template argument names must be strings.")
        template_kind(v)
    kname = kernel_name(name, template_args, inputs, output_dtypes)
    attrs = attributes(source)
    infos = shape_infos(source, input_names)
    fsrc, params = write_signature(kname, header, source, input_names, inputs, output_names, output_dtypes,
                                   template_args, attrs, infos, atomic_outputs)
    full = fsrc
    tdef = ""
    if template_args:
        tdef = write_template(template_args)
        inst = kname + tdef
        full += f'\ntemplate [[host_name("{kname}")]] [[kernel]] decltype({inst}) {inst};\n'
    body_line = fsrc.count("\n") - source.count("\n") - 2
    sig_line = header.count("\n") if header.endswith("\n") or not header else -1
    return KernelSource(kname, full, fsrc, tdef, params, attrs, sig_line, body_line)
