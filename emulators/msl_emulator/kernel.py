"""``metal_kernel``: the emulator's stand-in for ``mx.fast.metal_kernel``."""
from __future__ import annotations

import threading

from . import compiler, runtime
from .signature import METAL_ATTRIBUTES, InputDesc, KernelSource, dtype_name, generate
from .translate import translate

_GLUE_ATTR = {
    "uint": "__ti->{a}",
    "uint3": "::metal::uint3(__ti->{a}[0], __ti->{a}[1], __ti->{a}[2])",
}

_NATIVE_ATTR = dict(METAL_ATTRIBUTES)

_sources: dict[str, tuple[int, KernelSource]] = {}
_sources_lock = threading.Lock()


def _with_line_markers(body: str, ks: KernelSource) -> str:
    """#line markers so compiler messages and hazard reports say "source line N"
    (line N of the `source` string), "header line N" or "signature line N"."""
    lines = body.split("\n")
    marks = {ks.body_line: "source"}
    if ks.line_marks is not None:
        marks = dict(ks.line_marks)
    elif ks.signature_line >= 0:
        marks[ks.signature_line] = "signature"
        if ks.signature_line > 0:
            marks[0] = "header"
    else:  # the header's last line runs into the signature
        marks[0] = "header"
    out = []
    for i, line in enumerate(lines):
        if i in marks:
            out.append(f'#line 1 "{ks.kernel_name}.{marks[i]}"')
        out.append(line)
    return "\n".join(out)


def cpp_source(ks: KernelSource, label: str) -> str:
    """The complete C++ translation unit for one kernel instantiation."""
    body, _ = translate(ks.function_source, label)
    body = _with_line_markers(body, ks)
    args = []
    for i, p in enumerate(ks.params):
        t = f"::metal::atomic<{p.ctype}>" if p.atomic else p.ctype
        if p.ref:
            args.append(f"*({'const ' if p.is_const else ''}{t}*)__b[{i}].ptr")
        elif p.is_const:
            args.append(f"::msl_emu::dptr<const {t}>(&__b[{i}])")
        else:
            args.append(f"::msl_emu::dptr<{t}>(&__b[{i}])")
    for attr, t in ks.attributes:
        if t == "uint" and _NATIVE_ATTR.get(attr) == "uint3":
            args.append(f"__ti->{attr}[0]")  # a whole source may take the x component alone
        else:
            args.append(_GLUE_ATTR[t].format(a=attr))
    call = ks.kernel_name + ks.template_args
    arglist = ",\n      ".join(args)
    return (
        '#include "msl_shim.h"\n'
        f"{body}\n"
        '#line 1 "msl_emulator.glue"\n'
        "static void __msl_thread(const simt_thread_info* __ti, const simt_buffer* __b, void*) {\n"
        "  (void)__ti; (void)__b;\n"
        f"  {call}(\n      {arglist});\n"
        "}\n"
        'extern "C" simt_kernel_fn msl_kernel_entry(void) { return &__msl_thread; }\n'
    )


class EmulatedKernel:
    """The callable returned by :func:`metal_kernel` (same call signature as
    the object returned by ``mx.fast.metal_kernel``)."""

    def __init__(self, name, input_names, output_names, source, header, ensure_row_contiguous, atomic_outputs,
                 compile_options):
        self.name = name
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.source = source
        self.header = header
        self.ensure_row_contiguous = bool(ensure_row_contiguous)
        self.atomic_outputs = bool(atomic_outputs)
        self.compile_options = dict(compile_options or {})

    def generate(self, inputs, output_dtypes, template=None) -> KernelSource:
        """The Metal source MLX would build for these inputs (no compilation)."""
        descs = []
        for n, a in zip(self.input_names, inputs):
            descs.append(InputDesc(n, dtype_name(a.dtype), a.ndim, a.size))
        return generate(self.name, self.input_names, self.output_names, self.source, self.header, descs,
                        list(output_dtypes), template, self.atomic_outputs)

    def _compiled(self, ks: KernelSource) -> int:
        with _sources_lock:
            hit = _sources.get(ks.source)
        if hit is not None:
            return hit[0]
        fn = compiler.load_kernel(cpp_source(ks, self.name), self.name)
        with _sources_lock:
            _sources[ks.source] = (fn, ks)
        return fn

    def __call__(self, *, inputs, output_shapes, output_dtypes, grid, threadgroup, template=None,
                 init_value=None, verbose=False, stream=None):
        import mlx.core as mx

        inputs = [x if isinstance(x, mx.array) else mx.array(x) for x in inputs]
        if len(inputs) != len(self.input_names):
            raise ValueError(f"[metal_kernel] Expected `inputs` to have size {len(self.input_names)} "
                             f"but got size {len(inputs)}.")
        if len(output_shapes) != len(self.output_names):
            raise ValueError(f"[metal_kernel] Expected `output_shapes` to have size {len(self.output_names)} "
                             f"but got size {len(output_shapes)}.")
        if len(output_dtypes) != len(self.output_names):
            raise ValueError(f"[metal_kernel] Expected `output_dtypes` to have size {len(self.output_names)} "
                             f"but got size {len(output_dtypes)}.")
        grid = tuple(int(g) for g in grid)
        threadgroup = tuple(int(t) for t in threadgroup)
        if len(grid) != 3 or len(threadgroup) != 3:
            raise ValueError("[metal_kernel] grid and threadgroup must be 3-tuples.")
        ks = self.generate(inputs, output_dtypes, template)
        if verbose:
            print(f"Generated source code for `{self.name}`:\n```\n{ks.source}\n```")
        fn = self._compiled(ks)
        prepared = [runtime.prepare_input(a, self.ensure_row_contiguous) for a in inputs]
        return runtime.launch(fn, self.name, ks.params, prepared, output_shapes, output_dtypes, grid,
                              threadgroup, init_value)


# The keys of mx.fast.metal_kernel's `compile_options` and their allowed values
# (MLX's python/src/fast.cpp, parse_compile_options); MLX rejects any other key.
COMPILE_OPTIONS = {"math_mode": ("safe", "relaxed", "fast")}


def check_compile_options(compile_options) -> dict:
    """``compile_options`` checked as ``mx.fast.metal_kernel`` checks them: None
    or a dict whose keys are among :data:`COMPILE_OPTIONS`, each with one of its
    allowed string values. Returns a copy; raises ValueError (an unknown key, a
    value not allowed, not a dict) or TypeError (a key or value that is not a str)."""
    if compile_options is None:
        return {}
    supported = ", ".join(f"`{k}`" for k in COMPILE_OPTIONS)
    if not isinstance(compile_options, dict):
        raise ValueError(f"[metal_kernel] Expected `compile_options` to be a dict, got "
                         f"{type(compile_options).__name__}. Supported options: {supported}.")
    for key, value in compile_options.items():
        if not isinstance(key, str):
            raise TypeError(f"[metal_kernel] compile option names must be str, got {key!r}. "
                            f"Supported options: {supported}.")
        if key not in COMPILE_OPTIONS:
            raise ValueError(f"[metal_kernel] Unknown compile option `{key}`. Supported options: {supported}.")
        allowed = COMPILE_OPTIONS[key]
        choices = ", ".join(repr(a) for a in allowed[:-1]) + f", or {allowed[-1]!r}"
        if not isinstance(value, str):
            raise TypeError(f"[metal_kernel] Expected {key} to be {choices} (a str), got {value!r}.")
        if value not in allowed:
            raise ValueError(f"[metal_kernel] Expected {key} to be {choices}, got {value!r}.")
    return dict(compile_options)


def metal_kernel(name: str, input_names, output_names, source: str, header: str = "",
                 ensure_row_contiguous: bool = True, atomic_outputs: bool = False, compile_options=None):
    """Drop-in replacement for ``mx.fast.metal_kernel`` that runs the kernel on
    the CPU under the MSL emulator. ``compile_options`` is checked as MLX checks
    it (only ``math_mode``, one of "safe", "relaxed", "fast"; any other key is an
    error) and then ignored: the emulator always computes IEEE results."""
    if not output_names:
        raise ValueError("[metal_kernel] Must specify at least one output.")
    compile_options = check_compile_options(compile_options)
    return EmulatedKernel(name, input_names, output_names, source, header, ensure_row_contiguous, atomic_outputs,
                          compile_options)
