"""Build-time metadata: the wheel requires exactly the MLX its `cpu` primitive is compiled against.

A scikit-build-core dynamic-metadata provider (pyproject.toml, `[[tool.dynamic-metadata]]`; it
runs in the build environment, never at run time). mlx_attn's `dependencies` and
`optional-dependencies` are written in that table with `{mlx}` where the mlx version specifier
goes; here `{mlx}` becomes `==<version of the mlx distribution in the build environment>`, the
MLX that cpu_bridge/CMakeLists.txt finds (`python -m mlx --cmake-dir`, same interpreter) and compiles
`mlx_attn.backends.cpu._mlx_primitive` against. An isolated build (`pip install .`) therefore pins the
build-system requirement's mlx, and a `--no-build-isolation` build pins the mlx installed in that
environment. Where the build environment has no mlx, no primitive is built and `{mlx}` becomes
the `unpinned` setting (the oldest supported mlx).
"""
from __future__ import annotations

import importlib.metadata
import re
from typing import Any, Mapping

PLACEHOLDER = "{mlx}"
FIELDS = ("dependencies", "optional-dependencies")
_MLX = re.compile(r"\s*mlx(?![\w.-])", re.IGNORECASE)  # the distribution named mlx


def build_mlx_version() -> str | None:
    """The version of the mlx distribution this build compiles against (None: no mlx here)."""
    try:
        return importlib.metadata.version("mlx")
    except importlib.metadata.PackageNotFoundError:
        return None


def mlx_specifier(settings: Mapping[str, Any], version: str | None) -> str:
    if version:
        return f"=={version}"
    return settings["unpinned"]


def _fill(requirement: str, spec: str) -> str:
    # every requirement on mlx itself (not mlx-lm) takes the build's version: a literal specifier
    # would let the wheel run with an MLX the primitive was not built for
    if _MLX.match(requirement) and PLACEHOLDER not in requirement:
        raise ValueError(f"mlx requirement {requirement!r} must use {PLACEHOLDER} for its version "
                         "(build_support/mlx_pin.py)")
    return requirement.replace(PLACEHOLDER, spec)


def render(settings: Mapping[str, Any], version: str | None) -> dict[str, Any]:
    """The `dependencies` and `optional-dependencies` fields for an MLX build of `version`."""
    spec = mlx_specifier(settings, version)
    out: dict[str, Any] = {"dependencies": [_fill(r, spec) for r in settings["dependencies"]]}
    out["optional-dependencies"] = {
        extra: [_fill(r, spec) for r in requirements]
        for extra, requirements in settings["optional-dependencies"].items()}
    return out


# ---- the dynamic-metadata hooks ----

def dynamic_metadata(settings: Mapping[str, Any], project: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(settings) - {"unpinned", *FIELDS}
    if unknown:
        raise RuntimeError(f"build_support/mlx_pin.py: unknown settings {sorted(unknown)}")
    return render(settings, build_mlx_version())


def dynamic_wheel(settings: Mapping[str, Any]) -> dict[str, bool]:
    """A wheel built from the sdist pins the MLX of *its* build, so the sdist's Requires-Dist is
    marked Dynamic (the extras' names, Provides-Extra, do not change)."""
    return {"dependencies": True, "optional-dependencies": False}
