"""Translates the MSL subset into C++ that compiles against the shim headers.

The translation is token-level and keeps every line where it was, so compiler
messages and the line numbers in hazard reports point at the Metal source.

Rewrites:
* ``[[...]]`` attributes are dropped; ``kernel``, ``thread`` and ``restrict``
  keywords are dropped.
* ``device T*`` / ``constant T*`` (with any ``const``) become the bounds-checked
  ``::msl_emu::dptr<T>``; ``device``/``constant`` before anything else (a
  reference, a program-scope constant) are dropped. ``reinterpret_cast`` to
  such a pointer becomes ``static_cast``.
* ``threadgroup T name[N]...;`` declared in a function body becomes a reference
  to storage shared by the threadgroup; ``threadgroup`` on pointers and
  references is dropped.
* floating literals without suffix become ``float`` (MSL has no double),
  ``1.0h`` becomes a ``half``.
* swizzles ``.xy``, ``.zyx``, ``.rgb`` ... become calls on the vector type.
* every conditional expression ``c ? a : b`` becomes ``c ? static_cast<A>(a) :
  static_cast<B>(b)``, A and B computed from ``decltype((a))`` and ``decltype((b))``
  by ``msl_emu::cond_of`` (shim/msl_types.h), so that the operands get MSL's usual
  arithmetic conversions (``c ? half : float`` is a float, ``c ? half : int`` a
  half), which C++ rejects with a class-type ``half``. Other conditionals keep
  their C++ type and value category, and only one operand is evaluated.
"""
from __future__ import annotations

import re

from .errors import MetalTranslateError

_TOKEN = re.compile(
    r"""(?P<ws>\\\n|[ \t\r\f\v]+)
      |(?P<nl>\n)
      |(?P<comment>//[^\n]*|/\*.*?\*/)
      |(?P<string>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
      |(?P<number>\.?[0-9](?:[eEpP][+-]|[0-9A-Za-z_.'])*)
      |(?P<ident>[A-Za-z_][A-Za-z_0-9]*)
      |(?P<punct>::|->|&&|\|\||\+\+|--|==|!=|<=|>=|[-+*/%&|^]=|\.\.\.|.)""",
    re.X | re.S,
)

_DROP_LINE = re.compile(r"^[ \t]*#[ \t]*(include[ \t]*<metal_\w+>|pragma[ \t]+METAL\b).*$", re.M)
_SWIZZLE = re.compile(r"^(?:[xyzw]{2,4}|[rgba]{2,4})$")
_SWZ_INDEX = {"x": 0, "y": 1, "z": 2, "w": 3, "r": 0, "g": 1, "b": 2, "a": 3}
_ASSIGN_OPS = {"=", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^="}
_DROPPED_KEYWORDS = {"kernel", "thread", "restrict", "__restrict", "__restrict__"}


class Tok:
    __slots__ = ("kind", "text", "pp")

    def __init__(self, kind: str, text: str, pp: bool):
        self.kind, self.text, self.pp = kind, text, pp

    def __repr__(self):
        return f"Tok({self.kind},{self.text!r})"


def tokenize(src: str) -> list[Tok]:
    toks: list[Tok] = []
    in_pp = False
    line_start = True
    for m in _TOKEN.finditer(src):
        kind = m.lastgroup
        text = m.group()
        if kind == "nl":
            in_pp = False
            line_start = True
        elif kind not in ("ws", "comment"):
            if line_start and text == "#":
                in_pp = True
            line_start = False
        toks.append(Tok(kind, text, in_pp and kind != "nl"))
    return toks


class _Translator:
    def __init__(self, src: str, kernel_label: str):
        src = _DROP_LINE.sub("", src)
        self.toks = tokenize(src)
        self.sig = [i for i, t in enumerate(self.toks) if t.kind not in ("ws", "nl", "comment")]
        self.orig = [self.toks[i].text for i in self.sig]  # before any rewrite
        self.label = kernel_label
        self.tg_slot = 0
        self.tg_decls: list[str] = []

    # ---- helpers over significant tokens (indices into self.sig)
    def text(self, k: int) -> str:
        return self.toks[self.sig[k]].text if 0 <= k < len(self.sig) else ""

    def crosses_line(self, k0: int, k1: int) -> bool:
        """True when a newline lies between significant tokens k0 < k1."""
        a, b = self.sig[k0], self.sig[k1]
        return any(t.kind == "nl" for t in self.toks[a + 1:b])

    def blank(self, k0: int, k1: int, replacement: str):
        """Replace significant tokens k0..k1 (inclusive) and what lies between by
        `replacement`, keeping the newlines so lines do not move."""
        a, b = self.sig[k0], self.sig[k1]
        nls = sum(t.text.count("\n") for t in self.toks[a:b + 1])
        for t in self.toks[a:b + 1]:
            t.text = ""
        self.toks[a].text = replacement + "\n" * nls

    def span_text(self, k0: int, k1: int) -> str:
        """Source text of significant tokens k0..k1 inclusive (comments dropped)."""
        if k1 < k0:
            return ""
        a, b = self.sig[k0], self.sig[k1]
        return "".join(" " if t.kind in ("ws", "nl", "comment") else t.text for t in self.toks[a:b + 1]).strip()

    def fail(self, k: int, msg: str):
        line = 1 + sum(t.text.count("\n") for t in self.toks[: self.sig[k]])
        raise MetalTranslateError(f"kernel '{self.label}': line {line}: {msg}")

    # ---- passes
    def run(self) -> str:
        self.drop_attributes()
        n = len(self.sig)
        depth = 0
        for k in range(n):
            t = self.toks[self.sig[k]]
            if t.kind == "number":
                t.text = self.number(t.text)
            elif t.kind == "ident":
                if t.text in _DROPPED_KEYWORDS:
                    t.text = ""
                elif t.text in ("device", "constant"):
                    self.address_space(k)
                elif t.text == "threadgroup":
                    self.threadgroup(k, depth)
                elif _SWIZZLE.match(t.text) and self.text(k - 1) in (".", "->"):
                    self.swizzle(k)
            elif t.kind == "punct":
                if t.text == "{":
                    depth += 1
                elif t.text == "}":
                    depth -= 1
        return "".join(t.text for t in self.toks)

    def drop_attributes(self):
        sig, toks = self.sig, self.toks
        k = 0
        while k < len(sig) - 1:
            if toks[sig[k]].text == "[" and sig[k + 1] == sig[k] + 1 and toks[sig[k + 1]].text == "[":
                depth, j = 0, k
                while j < len(sig):
                    tx = toks[sig[j]].text
                    depth += tx in ("[", "(") and 1 or (tx in ("]", ")") and -1 or 0)
                    if depth == 0:
                        break
                    j += 1
                if j >= len(sig):
                    self.fail(k, "unterminated attribute")
                self.blank(k, j, " ")
                k = j + 1
            else:
                k += 1

    @staticmethod
    def number(s: str) -> str:
        low = s.lower()
        if low.startswith("0x"):
            if "p" not in low or low.endswith("f"):
                return s
            return s + "f"
        if "." not in s and "e" not in low:
            return s  # integer literal
        if low.endswith("h"):
            return f"((::metal::half){s[:-1]}f)"
        if low.endswith("f"):
            return s
        if low.endswith("l"):
            return s[:-1] + "f"
        return s + "f"

    def address_space(self, k: int):
        """`device`/`constant` at significant index k."""
        n = len(self.sig)
        pp = self.toks[self.sig[k]].pp
        angle = paren = 0
        j = k + 1
        kind = "drop"
        while j < n:
            if pp and self.crosses_line(j - 1, j):
                break
            tx = self.text(j)
            if tx == "<":
                angle += 1
            elif tx == ">":
                if angle == 0:
                    break
                angle -= 1
            elif tx == "(" and angle:
                paren += 1
            elif tx == ")" and paren:
                paren -= 1
            elif angle == 0 and paren == 0:
                if tx == "*":
                    kind = "ptr"
                    break
                if tx in ("&", "&&", ";", ",", ")", "=", "{", "}", "[", "(", ":", "?"):
                    break
            j += 1
        if kind == "drop":
            self.toks[self.sig[k]].text = ""
            return
        start = k
        quals = []
        while self.text(start - 1) in ("const", "volatile") and not (pp and self.crosses_line(start - 1, start)):
            start -= 1
            quals.insert(0, self.text(start))
        pointee = " ".join(quals + [self.span_text(k + 1, j - 1)]).strip()
        if self.text(start - 1) == "<" and self.text(start - 2) in ("reinterpret_cast", "const_cast"):
            self.toks[self.sig[start - 2]].text = "static_cast"
        self.blank(start, j, f"::msl_emu::dptr<{pointee}>")

    def threadgroup(self, k: int, depth: int):
        n = len(self.sig)
        pp = self.toks[self.sig[k]].pp
        angle = bracket = paren = 0
        j = k + 1
        ptr = init = False
        end = None
        while j < n:
            if pp and self.crosses_line(j - 1, j):
                break
            tx = self.text(j)
            if tx == "[":
                bracket += 1
            elif tx == "]":
                bracket -= 1
            elif bracket == 0 and tx == "<":
                angle += 1
            elif bracket == 0 and tx == ">":
                if angle == 0:
                    break
                angle -= 1
            elif tx == "(":
                paren += 1
                if bracket == 0 and angle == 0:
                    ptr = True  # function-pointer-ish or `(&ref)[N]` declarator: treat as a pointer
            elif tx == ")":
                if paren == 0:
                    break
                paren -= 1
            elif bracket == 0 and angle == 0 and paren == 0:
                if tx in ("*", "&", "&&"):
                    ptr = True
                elif tx == "=":
                    init = True
                elif tx in (";", "{", "}", ","):
                    if tx == ",":
                        j += 1
                        continue
                    end = j
                    break
            j += 1
        prev = self.orig[k - 1] if k > 0 else ""
        statement_start = k == 0 or prev in (";", "{", "}") or (self.toks[self.sig[k - 1]].pp and not pp)
        if ptr or end is None or self.text(end) != ";" or end == k + 1:
            if not ptr and end is not None and end == k + 1:
                pass  # member-function qualifier `... ) threadgroup {`
            elif not ptr and statement_start:
                self.fail(k, "unsupported threadgroup declaration")
            self.toks[self.sig[k]].text = ""
            return
        if not statement_start:
            self.fail(k, "threadgroup variables must be declared as a statement of their own "
                         "(`threadgroup T name[N];`), not inside macros or other declarations")
        if init:
            self.fail(k, "threadgroup variables cannot have an initializer in MSL")
        if depth == 0:
            self.fail(k, "threadgroup variables must be declared inside the kernel (or a function) body")
        # split declarators at top-level commas
        parts, cur, br, an = [], [], 0, 0
        for m in range(k + 1, end):
            tx = self.text(m)
            br += (tx == "[") - (tx == "]")
            if br == 0:
                an += (tx == "<") - (tx == ">")
            if tx == "," and br == 0 and an == 0:
                parts.append(cur)
                cur = []
            else:
                cur.append(m)
        parts.append(cur)
        decls = []
        type_text = None
        for p in parts:
            first_br = next((i for i, m in enumerate(p) if self.text(m) == "["), len(p))
            if first_br == 0 or self.toks[self.sig[p[first_br - 1]]].kind != "ident":
                self.fail(k, "cannot parse threadgroup declaration")
            name_k = p[first_br - 1]
            if type_text is None:
                type_text = self.span_text(p[0], name_k - 1)
                if not type_text:
                    self.fail(k, "cannot parse threadgroup declaration")
            name = self.text(name_k)
            dims = self.span_text(p[first_br], p[-1]) if first_br < len(p) else ""
            decls.append(f'auto& {name} = ::msl_emu::tg_var<{type_text} {dims}>({self.tg_slot}, "{name}");')
            self.tg_decls.append(name)
            self.tg_slot += 1
        self.blank(k, end, " ".join(decls))

    def swizzle(self, k: int):
        name = self.text(k)
        idx = ",".join(str(_SWZ_INDEX[c]) for c in name)
        fn = "_swref" if self.text(k + 1) in _ASSIGN_OPS else "_sw"
        self.toks[self.sig[k]].text = f"template {fn}<{idx}>()"


_OPEN = {"(", "[", "{"}
_CLOSE = {")", "]", "}"}
# names before `<` that always open a template argument list (casts, MSL and shim templates)
_TEMPLATE_NAMES = {"static_cast", "reinterpret_cast", "const_cast", "dynamic_cast", "as_type", "vec", "packed_vec",
                   "numeric_limits", "Limits", "simdgroup_matrix", "atomic", "dptr", "tg_var", "_sw", "_swref"}
# tokens that end the search for the `>` of a template argument list
_NOT_TEMPLATE_ARGS = {";", "?", ":", "&&", "||", "="} | _ASSIGN_OPS


def _cond_cast(a: str, b: str) -> str:
    # no comma outside parentheses: the conditional may be a macro argument
    return f"static_cast<typename ::msl_emu::cond_of<decltype(({a}))>::template vs<decltype(({b}))>::type>("


def _cond_value(a: str, b: str) -> str:
    return (f"::msl_emu::cond_make<typename ::msl_emu::cond_of<decltype(({a}))>::template "
            f"result<decltype(({b}))>::type>()")


class _Conditionals:
    """Rewrites the operands of every conditional expression of (translated)
    C++ text; see the module docstring. Token-level: the second operand runs
    from `?` to its matching `:`; the third to the first `,` `;` `:` or
    unmatched closing bracket at its nesting level (the C++ grammar: an
    assignment-expression). A conditional whose extent is not certain (inside
    `#if`, across a preprocessor line, a `>` that may close a template argument
    list) is left as it is. Inserted text never contains a newline."""

    def __init__(self, src: str):
        self.toks = tokenize(src)
        self.sig = [i for i, t in enumerate(self.toks) if t.kind not in ("ws", "nl", "comment")]
        # which preprocessor directive (if any) each significant token belongs to
        self.directive: list[int] = []
        self.skip_directive: set[int] = set()
        cur, prev_pp = -1, False
        for k, i in enumerate(self.sig):
            t = self.toks[i]
            if t.pp and (not prev_pp or (t.text == "#" and self._line_start(i))):
                cur += 1
                nxt = self.toks[self.sig[k + 1]] if k + 1 < len(self.sig) else None
                if nxt is None or not nxt.pp or nxt.text != "define":
                    self.skip_directive.add(cur)
            self.directive.append(cur if t.pp else -1)
            prev_pp = t.pp
        self.ternary: dict[int, tuple[int, int]] = {}  # `?` -> (`:`, end of third operand, exclusive)
        for k, i in enumerate(self.sig):
            if self.toks[i].text == "?" and self.directive[k] not in self.skip_directive:
                ext = self._extent(k)
                if ext is not None:
                    self.ternary[k] = ext

    def _line_start(self, i: int) -> bool:
        j = i - 1
        while j >= 0 and self.toks[j].kind == "ws":
            j -= 1
        return j < 0 or self.toks[j].kind == "nl"

    def text(self, k: int) -> str:
        return self.toks[self.sig[k]].text

    def _level(self, k: int, d: int, step: int = 1):
        """(index, token) of the significant tokens from k on (step -1: backwards) that lie
        at k's bracket depth in directive d; ends with (index, None) at the bracket that
        closes that depth, or where the directive or the text ends."""
        deeper, shallower = (_OPEN, _CLOSE) if step > 0 else (_CLOSE, _OPEN)
        depth = 0
        while 0 <= k < len(self.sig) and self.directive[k] == d:
            t = self.text(k)
            if t in deeper:
                depth += 1
            elif t in shallower:
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0:
                yield k, t
            k += step
        yield k, None

    def _extent(self, q: int):
        d = self.directive[q]
        # second operand: up to the matching `:`
        nested = 0
        for k, t in self._level(q + 1, d):
            if t is None or t == ";":
                return None
            if t == "?":
                nested += 1
            elif t == ":":
                if nested == 0:
                    break
                nested -= 1
        colon = k
        if colon == q + 1:
            return None
        # third operand: an assignment-expression
        nested, skip_to = 0, -1
        for k, t in self._level(colon + 1, d):
            if t is None:
                break
            if k <= skip_to:
                continue  # inside a template argument list: `static_cast<vec<float, 2>>(x)`
            if t == ";" or (t == "," and nested == 0):
                break
            if t == "?":
                nested += 1
            elif t == ":":
                if nested == 0:
                    break
                nested -= 1
            elif t == "<":
                close = self._template_close(k)
                if close is not None:
                    skip_to = close
            elif t == ">" and self._open_angle_before(q):
                return None  # `f<c ? a : b>`: may close a template argument list
        if k == colon + 1:
            return None
        return colon, k

    def _may_open_template(self, k: int) -> bool:
        """Whether `<` at significant index k may open a template argument list
        (it follows a name, not `)`, `]` or a literal)."""
        return k > 0 and self.directive[k - 1] == self.directive[k] and self.toks[self.sig[k - 1]].kind == "ident"

    def _template_close(self, k: int):
        """The `>` closing `<` at k when `<` opens a template argument list: after
        `template name`, a cast or a known template, or when the matching `>` is
        followed by `(`, `::` or `{`; None for a comparison."""
        if not self._may_open_template(k):
            return None
        prev = self.text(k - 1)
        definite = prev in _TEMPLATE_NAMES or (k >= 2 and self.text(k - 2) == "template")
        n, d = len(self.sig), self.directive[k]
        angle = 1
        for j, t in self._level(k + 1, d):
            if t is None:
                return None
            if t == "<" and self._may_open_template(j):
                angle += 1
            elif t == ">":
                angle -= 1
                if angle == 0:
                    after = self.text(j + 1) if j + 1 < n and self.directive[j + 1] == d else ""
                    return j if definite or after in ("(", "::", "{") else None
            elif t in _NOT_TEMPLATE_ARGS:
                return None
        return None

    def _open_angle_before(self, q: int) -> bool:
        """Whether a `<` that may open a template argument list, and is not closed
        by a `>`, precedes `?` in its expression."""
        balance = 0
        for k, t in self._level(q - 1, self.directive[q], step=-1):
            if t is None or t == ";":
                return False
            if t == ">":
                balance += 1
            elif t == "<" and self._may_open_template(k):
                balance -= 1
                if balance < 0:
                    return True
        return False

    def _joined(self, k: int, last: int) -> str:
        """Separator after significant token k (k < last): a space when the
        source has one there (so `>` `>` stays `>>`), else nothing."""
        if k >= last:
            return ""
        return " " if self.sig[k + 1] != self.sig[k] + 1 else ""

    def type_form(self, lo: int, hi: int) -> str:
        """An expression with the type and value category of significant tokens
        lo..hi-1, for use inside decltype: nested conditionals are replaced by
        `c ? cond_make<...>() : throw 0` so the text stays linear
        in the depth of nesting (and has no newline)."""
        out = []
        k = lo
        while k < hi:
            ext = self.ternary.get(k)
            if ext is not None and ext[1] <= hi:
                colon, end = ext
                out.append(f"? {_cond_value(self.type_form(k + 1, colon), self.type_form(colon + 1, end))} : throw 0")
                k = end
                out.append(self._joined(k - 1, hi) if k < hi else "")
                continue
            out.append(self.text(k))
            out.append(self._joined(k, hi))
            k += 1
        return "".join(out).strip()

    def run(self) -> str:
        if not self.ternary:
            return "".join(t.text for t in self.toks)
        before: dict[int, list[tuple[int, str]]] = {}
        after: dict[int, list[tuple[int, str]]] = {}
        for q, (colon, end) in self.ternary.items():
            a = self.type_form(q + 1, colon)
            b = self.type_form(colon + 1, end)
            before.setdefault(self.sig[q + 1], []).append((q, _cond_cast(a, b)))
            after.setdefault(self.sig[colon - 1], []).append((q, ")"))
            before.setdefault(self.sig[colon + 1], []).append((q, _cond_cast(b, a)))
            after.setdefault(self.sig[end - 1], []).append((q, ")"))
        out = []
        for i, t in enumerate(self.toks):
            if i in before:
                out.extend(s for _, s in sorted(before[i]))  # outer conditional first
            out.append(t.text)
            if i in after:
                out.extend(s for _, s in sorted(after[i], reverse=True))  # inner conditional first
        return "".join(out)


def lower_conditionals(cpp: str) -> str:
    """Gives every `c ? a : b` of C++ text MSL's operand conversions (see _Conditionals)."""
    if "?" not in cpp:
        return cpp
    return _Conditionals(cpp).run()


def translate(metal_source: str, kernel_label: str = "kernel") -> tuple[str, list[str]]:
    """C++ text for `metal_source`, and the names of its threadgroup variables."""
    tr = _Translator(metal_source, kernel_label)
    return lower_conditionals(tr.run()), tr.tg_decls
