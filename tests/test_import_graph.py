"""Imports in mlx_attn only go downward: no module imports (at any level, function bodies
included) a module that imports it back, directly or through others. Read from the source with
`ast`, so a cycle hidden in a function-level import counts too."""
import ast
import pathlib

import mlx_attn

PACKAGE = "mlx_attn"
EXTENSIONS = {"_kernel", "_mlx_primitive", "_cuda"}  # built by cpu_bridge/ and cuda_bridge/
EXTENSION = "<compiled extension>"


def modules(root: pathlib.Path) -> dict:
    """Module name -> (path, is_package) for every .py file of the package under `root`."""
    found = {}
    for path in (root / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imported(name: str, is_package: bool, node, known: dict) -> list:
    """The package's modules an import statement of module `name` loads."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)] if node.level else []
        target = ".".join(base + ([node.module] if node.module else []))
        # `from . import _kernel`: a compiled extension beside the package's .py files (never a
        # name its __init__ defines); it imports nothing of ours, so it is a leaf
        targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in known
                   else EXTENSION if a.name in EXTENSIONS else target for a in node.names]
    out = []
    for target in targets:
        if target != PACKAGE and not target.startswith(PACKAGE + "."):
            continue
        while target not in known and "." in target:  # a name inside a module
            target = target.rsplit(".", 1)[0]
        out.append(target)
    return out


def import_graph(root: pathlib.Path) -> dict:
    known = modules(root)
    graph = {}
    for name, (path, is_package) in known.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(d for d in imported(name, is_package, node, known) if d != name)
        graph[name] = deps
    return graph


def cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_the_package():
    root = pathlib.Path(mlx_attn.__file__).resolve().parents[1]
    graph = import_graph(root)
    assert "mlx_attn.api" in graph and "mlx_attn.dispatch" in graph["mlx_attn.api"]
    assert cycles(graph) == []


def test_the_check_sees_a_cycle(tmp_path):
    """A planted cycle through a function-level import is found."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from ..a import something\n")
    assert cycles(import_graph(tmp_path)) == [["mlx_attn.a", "mlx_attn.b", "mlx_attn.sub.c"]]
