"""Whether the `cpu` backend's compiled modules can run here, and if not, why (in words).

`_kernel` serves numpy and torch; it records the MLX version `_mlx_primitive` was built against.
An MLX extension must run with that exact libmlx (C++ ABI, nanobind domain), so any other
installed version is declined here *before* `_mlx_primitive` is imported: a reason, never a crash.
The reason is one line that ends with the exact command rebuilding mlx_attn against the installed
MLX (`rebuild_command`), so that explain(), backends() and the doctor say how to get the `cpu`
path back. (A wheel built by pyproject.toml requires the mlx it was built against,
build_support/mlx_pin.py, so `pip install mlx_attn[mlx]` installs that one; but pip does not
check extras afterwards, and on Linux mlx is only an extra: a later `pip install mlx==other`
goes unnoticed until here.)
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import shlex
import sys
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

# What a `--no-build-isolation` build needs in the environment besides mlx: pyproject.toml's
# build-system requirements (tests/test_cpu_mlx_version.py checks that they agree) and CMake (the
# minimum of CMakeLists.txt) with a generator, which an isolated build would add itself.
BUILD_TOOLS = ("scikit-build-core>=1.0", "nanobind==3.1.0", "cmake>=3.24", "ninja")
# Shown where pip recorded no source that can be built (installed from a wheel).
UNKNOWN_SOURCE = "<your mlx_attn clone or sdist>"


@functools.cache
def native():
    """The compiled kernel module; raises ImportError when it is not built."""
    from . import _kernel  # noqa: PLC0415
    return _kernel


def kernel_reasons() -> list[str]:
    """Why the kernel cannot run at all (empty when it can)."""
    try:
        native()
    except ImportError as error:
        return [f"the native extension mlx_attn.backends.cpu._kernel is not built ({error}); "
                "build it with `pip install .` (cmake option MLX_ATTN_BUILD_CPU)"]
    return []


def version_reason(built: str, installed: str) -> str | None:
    """Why an MLX primitive built against mlx `built` cannot serve mlx `installed` (None if it can):
    one line, with the command that rebuilds mlx_attn against `installed`."""
    if not built:
        return ("the extension was built without the MLX primitive (no MLX at build time); build "
                f"it against the installed mlx {installed} with `{rebuild_command()}`")
    if built != installed:
        return (f"the MLX primitive was built for mlx {built} but mlx {installed} is installed; "
                f"rebuild mlx_attn against mlx {installed} with `{rebuild_command()}` "
                f"(or go back to mlx {built}: `{reinstall_mlx_command(built)}`)")
    return None


def _pip() -> str:
    return f"{shlex.quote(sys.executable)} -m pip install"


def rebuild_command() -> str:
    """The shell line that rebuilds this mlx_attn against the mlx installed in this environment:
    the build tools, then mlx_attn from its source without build isolation (so that CMake finds
    this environment's MLX, and the new wheel requires it) and without touching its dependencies."""
    source, editable = install_source()
    target = UNKNOWN_SOURCE if source is None else shlex.quote(source)
    if editable:
        target = "-e " + target
    tools = " ".join(shlex.quote(tool) for tool in BUILD_TOOLS)
    return (f"{_pip()} {tools} && "
            f"{_pip()} --no-build-isolation --force-reinstall --no-deps {target}")


def reinstall_mlx_command(version: str) -> str:
    """The line that installs mlx `version` with the backend packages installed here (on Linux
    mlx alone has no backend: mlx-cpu or mlx-cuda-* come from its extras)."""
    pins = [f"mlx=={version}"]
    for backend in ("mlx-cpu", "mlx-cuda-12", "mlx-cuda-13", "mlx-cuda"):
        try:
            importlib.metadata.version(backend)
        except importlib.metadata.PackageNotFoundError:
            continue
        pins.append(f"{backend}=={version}")
    return f"{_pip()} {' '.join(pins)}"


def install_source() -> tuple[str | None, bool]:
    """Where this mlx_attn can be built from, as pip takes it: (path or URL, editable), or
    (None, False) when that is unknown (installed from a wheel, or the recorded source is gone).

    Running from a clone (an editable install, or the source tree on the path) it is the clone;
    otherwise what pip recorded in the dist-info's direct_url.json (PEP 610): the local directory
    or sdist of `pip install <path>`, the VCS URL and commit, or the sdist's URL."""
    package = Path(__file__).resolve().parents[2]  # mlx_attn/
    root = package.parents[1]
    if package.parent.name == "src" and (root / "pyproject.toml").is_file():
        return str(root), True
    try:
        dist = importlib.metadata.distribution("mlx_attn")
        located = Path(dist.locate_file("mlx_attn")).resolve()
        info = json.loads(dist.read_text("direct_url.json") or "null")
    except Exception:  # not installed as a distribution, or unreadable metadata
        return None, False
    if located != package or not isinstance(info, dict):
        return None, False
    return _direct_url_source(info)


def _direct_url_source(info: dict) -> tuple[str | None, bool]:
    url = info.get("url", "")
    subdirectory = info.get("subdirectory")
    if "vcs_info" in info:
        vcs = info["vcs_info"]
        spec = f"{vcs.get('vcs', 'git')}+{url}"
        if vcs.get("commit_id"):
            spec += "@" + vcs["commit_id"]
        return spec + (f"#subdirectory={subdirectory}" if subdirectory else ""), False
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(url2pathname(parsed.path))  # url2pathname unquotes
        if "dir_info" in info:
            if subdirectory:
                path = path / subdirectory
            if (path / "pyproject.toml").is_file():
                return str(path), bool(info["dir_info"].get("editable"))
            return None, False
        if path.is_file() and not path.name.endswith(".whl"):
            return str(path), False  # a local sdist
        return None, False
    if "archive_info" in info and url and not parsed.path.endswith(".whl"):
        return url, False  # an sdist's URL
    return None, False


def built_mlx_version() -> str:
    return getattr(native(), "MLX_BUILT_VERSION", "")


def installed_mlx_version() -> str:
    """mlx.core.__version__; raises ImportError when mlx cannot be imported."""
    import mlx.core as mx  # noqa: PLC0415
    return mx.__version__


@functools.cache
def mlx_reasons() -> tuple:
    """Why MLX arrays cannot use the kernel here (empty when they can)."""
    reasons = kernel_reasons()
    if reasons:
        return tuple(reasons)
    try:
        installed = installed_mlx_version()
    except Exception as error:  # ImportError, or a broken mlx install failing while loading
        return (f"mlx is not importable ({type(error).__name__}: {error})",)
    reason = version_reason(built_mlx_version(), installed)
    if reason:
        return (reason,)
    try:
        from . import _mlx_primitive  # noqa: F401, PLC0415
    except ImportError as error:
        detail = " ".join(str(error).split())
        return (f"the MLX primitive mlx_attn.backends.cpu._mlx_primitive failed to load ({detail}); "
                f"rebuild it against the installed mlx {installed} with `{rebuild_command()}`",)
    return ()
