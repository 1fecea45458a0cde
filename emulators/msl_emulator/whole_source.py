"""Reads the `[[kernel]]` functions of a whole Metal source (what ``torch.mps.compile_shader``
compiles), for the emulator's glue: each kernel's `[[buffer(i)]]` parameters and the
thread-position attributes it takes. Kept small on purpose: plain (non-template) kernel
functions whose buffers come first, numbered 0, 1, 2, ... in order, then the attributes.
"""
from __future__ import annotations

import re

from .errors import MetalTranslateError
from .signature import KernelSource, Param

_KERNEL = re.compile(r"(?:\[\[\s*kernel\s*\]\]|\bkernel)\s+void\s+(\w+)\s*\(")
_ATTR = re.compile(r"\[\[\s*(\w+)\s*(?:\(\s*(\d+)\s*\))?\s*\]\]\s*$")
_ALIAS = re.compile(r"^\s*(?:typedef\s+([\w:]+)\s+(\w+)|using\s+(\w+)\s*=\s*([\w:]+))\s*;", re.M)
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_QUALIFIERS = {"const", "device", "constant", "volatile", "thread", "threadgroup"}
_GLUE_ATTRIBUTE_TYPES = {"uint", "uint3"}  # what kernel.py's glue can pass


def _closing_paren(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise MetalTranslateError("unbalanced parentheses in a kernel's parameter list")


def _split_params(params: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in params:
        if ch in "(<[":
            depth += 1
        elif ch in ")>]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur))
    return [p.strip() for p in out]


def _param(kernel: str, text: str):
    """('buffer', index, Param) or ('attribute', attr, type) for one parameter's text."""
    m = _ATTR.search(text)
    if not m:
        raise MetalTranslateError(f"kernel {kernel}: parameter `{text}` has no [[buffer(i)]] or "
                                  f"thread-position attribute")
    decl = text[:m.start()].strip()
    name_m = re.search(r"(\w+)\s*$", decl)
    if not name_m:
        raise MetalTranslateError(f"kernel {kernel}: cannot read the name of `{text}`")
    name, before = name_m.group(1), decl[:name_m.start()].strip()
    if m.group(1) != "buffer":
        return "attribute", m.group(1), before
    ref = before.endswith("&")
    if not (ref or before.endswith("*")):
        raise MetalTranslateError(f"kernel {kernel}: buffer parameter `{text}` is neither a "
                                  f"pointer nor a reference")
    words = before[:-1].replace("<", " < ").replace(">", " > ").split()
    is_const = "const" in words  # as written: the glue's argument type must match the C++ one
    words = [w for w in words if w not in _QUALIFIERS]
    atomic = bool(words) and words[0] == "atomic"
    ctype = " ".join(w for w in words if w not in ("atomic", "<", ">")) if atomic else " ".join(words)
    return "buffer", int(m.group(2)), Param(name, "buffer", ctype, ref, is_const, atomic=atomic)


def type_aliases(source: str) -> dict[str, str]:
    """Program-scope `typedef A B;` / `using B = A;` as {B: A}."""
    aliases = {}
    for m in _ALIAS.finditer(_COMMENT.sub("", source)):
        if m.group(1):
            aliases[m.group(2)] = m.group(1)
        else:
            aliases[m.group(3)] = m.group(4)
    return aliases


def kernels(source: str) -> dict[str, KernelSource]:
    """{function name: KernelSource} for every [[kernel]] function of `source`."""
    code = _COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), source)  # keep offsets
    found = {}
    for m in _KERNEL.finditer(code):
        name = m.group(1)
        close = _closing_paren(code, m.end() - 1)
        if re.search(r"template\s*<[^;{]*>\s*$", code[:m.start()]):
            raise MetalTranslateError(f"kernel {name}: template kernels are not supported by "
                                      f"the emulator's whole-source front end")
        params, attrs = [], []
        for text in _split_params(code[m.end():close]):
            kind, key, value = _param(name, text)
            if kind == "attribute":
                if value not in _GLUE_ATTRIBUTE_TYPES:
                    raise MetalTranslateError(f"kernel {name}: attribute {key} declared as "
                                              f"`{value}`; the emulator passes uint or uint3")
                attrs.append((key, value))
                continue
            if attrs:
                raise MetalTranslateError(f"kernel {name}: buffer {value.name} after a "
                                          f"thread-position parameter (buffers must come first)")
            if key != len(params):
                raise MetalTranslateError(f"kernel {name}: buffer {value.name} is [[buffer({key})]]"
                                          f"; expected [[buffer({len(params)})]] (buffers in "
                                          f"order, from 0)")
            params.append(value)
        found[name] = KernelSource(name, source, source, "", params, attrs, line_marks={0: "source"})
    return found
