"""Array kinds: recognising mlx / torch / numpy arrays and the few operations we need on each.

Recognition looks at the type's module so that neither torch nor mlx is imported unless the
caller already handed us one of their arrays.
"""
from __future__ import annotations

import importlib

KINDS = ("mlx", "torch", "numpy")


def kind_of(x) -> str | None:
    """"mlx", "torch" or "numpy" for an array of that framework, else None."""
    module = type(x).__module__ or ""
    if module.startswith("mlx"):
        return "mlx"
    if _is_torch(x):  # covers Parameter and other Tensor subclasses
        return "torch"
    if module == "numpy" and type(x).__name__ == "ndarray":
        return "numpy"
    return None


def _is_torch(x) -> bool:
    torch = importlib.sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def ops_for(kind: str):
    """The `Ops` object for an array kind (imports that framework)."""
    module = importlib.import_module(f"{__name__}.{kind}_ops")
    return module.OPS
