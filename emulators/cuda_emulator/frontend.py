"""The emulator's front end: the two CUDA constructs plain C++ cannot express, lowered as
nvcc's own front end (cudafe++) lowers them, keeping every line where it was:

* ``__shared__`` declarations in a function body become block-shared storage in the runtime's
  per-block arena: ``__shared__ T name[N];`` ->
  ``auto& name = *::cuda_emu::shared_var<T[N]>(slot, "name");`` (one slot per declaration), and
  ``extern __shared__ T name[];`` -> a pointer to the launch's dynamic shared memory;
* launches ``k<<<grid, block, smem, stream>>>(args)`` ->
  ``k * ::cuda_emu::launch_config(grid, block, smem, stream)(args)`` (cuda_runtime.h).

Everything else is compiled as written, against the shim headers. A ``__shared__`` declaration
of another form (several declarators, an initialiser, at namespace scope) is left alone and
fails to compile with a message naming it.
"""
from __future__ import annotations

import re

_DECL = re.compile(
    r"^(?P<ext>extern\s+)?(?:static\s+)?(?:volatile\s+)?__shared__\s+(?P<rest>[^;=,{}]*?)\s*;$", re.S)
_ALIGN = re.compile(r"__align__\s*\(\s*(\d+)\s*\)")
_NAMED = re.compile(r"^(?P<type>.*?[\w>*&\s])\s*\b(?P<name>[A-Za-z_]\w*)\s*(?P<dims>(?:\[[^\]]*\]\s*)*)$", re.S)
_SCOPE = re.compile(r"\b(namespace|struct|class|union|enum)\b|extern\s*\"C(\+\+)?\"")


class Rewriter:
    """Rewrites sources one after another; shared-memory slots are numbered across all of them
    (slot 0 is the dynamic shared memory)."""

    def __init__(self):
        self.next_slot = 1

    def rewrite(self, text: str) -> str:
        out, i, n = [], 0, len(text)
        scopes: list[bool] = []  # per open brace: True for a code block (function body, ...)
        stmt_start = 0           # where the current statement began (in text)
        while i < n:
            c = text[i]
            if text.startswith("//", i):
                j = text.find("\n", i)
                j = n if j < 0 else j
                out.append(text[i:j])
                i = j
                continue
            if text.startswith("/*", i):
                j = text.find("*/", i + 2)
                j = n if j < 0 else j + 2
                out.append(text[i:j])
                i = j
                continue
            if c in "\"'":
                j = _string_end(text, i)
                out.append(text[i:j])
                i = j
                continue
            if c == "#" and _line_start(text, i):
                j = _directive_end(text, i)
                out.append(text[i:j])
                i = j
                stmt_start = i
                continue
            if c == "{":
                head = text[stmt_start:i]
                scopes.append(not (_SCOPE.search(head) and "(" not in head.split("{")[-1]))
                out.append(c)
                i += 1
                stmt_start = i
                continue
            if c in "};":
                if c == "}" and scopes:
                    scopes.pop()
                out.append(c)
                i += 1
                stmt_start = i
                continue
            if text.startswith("<<<", i):
                j = _launch_end(text, i + 3)
                if j >= 0:
                    out.append(" * ::cuda_emu::launch_config(" + text[i + 3:j] + ")")
                    i = j + 3
                    continue
            if text.startswith("__shared__", i) and _word_at(text, i, "__shared__") and any(scopes):
                start = _decl_start(text, stmt_start, i)
                end = text.find(";", i)
                if start >= 0 and end >= 0:
                    new = self._declaration(text[start:end + 1])
                    if new is not None:
                        # drop what was already copied of this statement, keep its line count
                        _unwind(out, i - start)
                        out.append(new + "\n" * text.count("\n", start, end + 1))
                        i = end + 1
                        stmt_start = i
                        continue
            out.append(c)
            i += 1
        return "".join(out)

    def _declaration(self, decl: str) -> str | None:
        m = _DECL.match(decl.strip())
        if not m:
            return None
        rest = m.group("rest")
        align = 0
        am = _ALIGN.search(rest)
        if am:
            align = int(am.group(1))
            rest = _ALIGN.sub(" ", rest)
        nm = _NAMED.match(" ".join(rest.split()))
        if not nm or not nm.group("type").strip():
            return None
        typ, name = nm.group("type").strip(), nm.group("name")
        dims = "".join(nm.group("dims").split())
        if m.group("ext"):
            if dims != "[]":
                return None
            return f'{typ}* const {name} = ::cuda_emu::dynamic_shared<{typ}>({align}, "{name}");'
        if "[]" in dims:
            return None
        slot = self.next_slot
        self.next_slot += 1
        return (f'auto& {name} = *::cuda_emu::shared_var<{typ}{dims}, {align}>({slot}, "{name}");')


def _string_end(text: str, i: int) -> int:
    q, j = text[i], i + 1
    if q == "'" and i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"):
        return i + 1  # a digit separator (1'000), not a character literal
    while j < len(text) and text[j] != q:
        j += 2 if text[j] == "\\" else 1
    return min(j + 1, len(text))


def _line_start(text: str, i: int) -> bool:
    k = text.rfind("\n", 0, i) + 1
    return text[k:i].strip() == ""


def _directive_end(text: str, i: int) -> int:
    j = i
    while True:
        k = text.find("\n", j)
        if k < 0:
            return len(text)
        if text[k - 1] != "\\":
            return k
        j = k + 1


def _word_at(text: str, i: int, word: str) -> bool:
    before = text[i - 1] if i else " "
    after = text[i + len(word)] if i + len(word) < len(text) else " "
    return not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_")


def _decl_start(text: str, stmt_start: int, i: int) -> int:
    """Where the declaration starts (its `extern` / `static` / `volatile`), or -1 if something
    other than comments precedes it in the statement."""
    head = text[stmt_start:i]
    m = re.search(r"(?:(?:extern|static|volatile)\s+)*$", head)
    prefix = re.sub(r"//[^\n]*|/\*.*?\*/", "", head[:m.start()], flags=re.S)
    return stmt_start + m.start() if not prefix.strip() else -1


def _launch_end(text: str, j: int) -> int:
    depth = 0
    while j < len(text):
        if text.startswith(">>>", j) and depth == 0:
            return j
        c = text[j]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == ";":
            return -1
        j += 1
    return -1


def _unwind(out: list[str], count: int) -> None:
    while count > 0 and out:
        last = out.pop()
        if len(last) > count:
            out.append(last[:-count])
            return
        count -= len(last)
