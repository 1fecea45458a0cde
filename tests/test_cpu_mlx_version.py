"""An MLX other than the one the `cpu` primitive was built against: the built wheel requires that
exact mlx (build_support/mlx_pin.py fills pyproject.toml's `{mlx}` at build time), and where
another one is installed anyway the decline is never silent: explain(), backends() and the
doctor's backend table give one line with both versions and the exact rebuild command."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

from cpu_helpers import HAVE_MLX, native_or_skip, rand
from mlx_attn import backends, explain
from mlx_attn.backends.cpu import status

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PY = shlex.quote(sys.executable)
# Written out here, not taken from status.py: the line a user copies must be exactly this.
TOOLS = f"{PY} -m pip install 'scikit-build-core>=1.0' nanobind==3.1.0 'cmake>=3.24' ninja"
REBUILD = f"{TOOLS} && {PY} -m pip install --no-build-isolation --force-reinstall --no-deps"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture
def source(monkeypatch):
    """Pretend mlx_attn was installed from a local clone at a path that needs quoting."""
    monkeypatch.setattr(status, "install_source", lambda: ("/opt/src/mlx attn", False))
    return "'/opt/src/mlx attn'"


@pytest.fixture
def mismatch(monkeypatch, source):
    """Another installed mlx (9.9.9) than the one the primitive was built against."""
    native_or_skip()
    monkeypatch.setattr(status, "installed_mlx_version", lambda: "9.9.9")
    status.mlx_reasons.cache_clear()
    yield status.built_mlx_version()
    status.mlx_reasons.cache_clear()


# ---- the reason line ----

def test_mismatch_line_names_both_versions_and_the_exact_rebuild(source):
    reason = status.version_reason("0.32.4", "0.33.0")
    assert "\n" not in reason
    assert reason.startswith("the MLX primitive was built for mlx 0.32.4 but mlx 0.33.0 is "
                             "installed; rebuild mlx_attn against mlx 0.33.0 with `")
    assert f"`{REBUILD} {source}`" in reason
    assert status.version_reason("0.32.4", "0.32.4") is None


def test_built_without_mlx_line_has_the_rebuild(source):
    reason = status.version_reason("", "0.33.0")
    assert "without the MLX primitive" in reason and "0.33.0" in reason and "\n" not in reason
    assert f"`{REBUILD} {source}`" in reason


def test_rebuild_command_per_source(monkeypatch):
    monkeypatch.setattr(status, "install_source", lambda: ("/home/me/mlx_attn", True))
    assert status.rebuild_command() == f"{REBUILD} -e /home/me/mlx_attn"
    monkeypatch.setattr(status, "install_source", lambda: (None, False))
    assert status.rebuild_command() == f"{REBUILD} <your mlx_attn clone or sdist>"


def test_rebuild_installs_what_the_build_requires():
    """The tools of the line are pyproject.toml's build-system requirements (all but mlx: the
    installed one is the point) and the CMake that CMakeLists.txt requires."""
    import re
    tools = {Requirement(t).name: Requirement(t) for t in status.BUILD_TOOLS}
    for text in pyproject()["build-system"]["requires"]:
        req = Requirement(text)
        if req.name != "mlx":
            assert req.name in tools and tools[req.name].specifier == req.specifier, text
    minimum = re.search(r"cmake_minimum_required\(VERSION ([\d.]+)\)",
                        (ROOT / "CMakeLists.txt").read_text()).group(1)
    assert str(tools["cmake"].specifier) == f">={minimum}"


def test_go_back_line_pins_the_backend_package_too(monkeypatch):
    """On Linux `mlx` alone has no backend: going back must pin mlx-cpu as well."""
    have = {"mlx-cpu"}

    def version(name):
        if name in have:
            return "0.33.0"
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(status.importlib.metadata, "version", version)
    assert status.reinstall_mlx_command("0.32.4") == \
        f"{PY} -m pip install mlx==0.32.4 mlx-cpu==0.32.4"
    have.clear()
    assert status.reinstall_mlx_command("0.32.4") == f"{PY} -m pip install mlx==0.32.4"


def test_direct_url_sources(tmp_path):
    """What pip records (PEP 610 direct_url.json) becomes what pip can build from again."""
    clone = tmp_path / "my clone%25"  # as_uri() quotes both: decoded once
    clone.mkdir()
    (clone / "pyproject.toml").write_text("")
    sdist = tmp_path / "mlx_attn-0.1.0.tar.gz"
    sdist.write_bytes(b"")
    src = status._direct_url_source
    assert src({"url": clone.as_uri(), "dir_info": {}}) == (str(clone), False)
    assert src({"url": clone.as_uri(), "dir_info": {"editable": True}}) == (str(clone), True)
    assert src({"url": (tmp_path / "gone").as_uri(), "dir_info": {}}) == (None, False)
    assert src({"url": sdist.as_uri(), "archive_info": {}}) == (str(sdist), False)
    assert src({"url": (tmp_path / "x.whl").as_uri(), "archive_info": {}}) == (None, False)
    assert src({"url": "https://example.org/mlx_attn-0.1.0.tar.gz", "archive_info": {}}) == \
        ("https://example.org/mlx_attn-0.1.0.tar.gz", False)
    assert src({"url": "https://example.org/mlx_attn-0.1.0-cp311-linux_x86_64.whl",
                "archive_info": {}}) == (None, False)
    assert src({"url": "https://github.com/o/mlx_attn", "vcs_info": {
        "vcs": "git", "commit_id": "abc123"}}) == ("git+https://github.com/o/mlx_attn@abc123", False)


def test_install_source_of_this_run():
    """From the clone (the source tree on the path, or an editable install): the clone, `-e`;
    a `pip install <clone>`: the clone, recorded by pip."""
    import mlx_attn
    here = Path(mlx_attn.__file__).resolve().parent
    if here == ROOT / "src" / "mlx_attn":
        assert status.install_source() == (str(ROOT), True)
        return
    try:
        info = json.loads(importlib.metadata.distribution("mlx_attn").read_text("direct_url.json"))
    except Exception:
        pytest.skip("mlx_attn installed without a direct_url.json")
    if info.get("url") != ROOT.as_uri():
        pytest.skip("the installed mlx_attn was not built from this clone")
    assert status.install_source() == (str(ROOT), bool(info["dir_info"].get("editable")))


# ---- never a silent fall to math ----

@pytest.mark.skipif(not HAVE_MLX, reason="mlx not installed")
def test_explain_shows_the_line(mismatch, source):
    import mlx.core as mx
    mx.set_default_device(mx.cpu)
    x = mx.array(rand(np.random.default_rng(0), 1, 2, 4, 8))
    text = explain(x, x, x)
    assert "math   chosen" in text
    cpu_line = next(line for line in text.splitlines() if line.lstrip().startswith("cpu"))
    assert f"built for mlx {mismatch} but mlx 9.9.9 is installed" in cpu_line
    assert f"`{REBUILD} {source}`" in cpu_line
    info = next(b for b in backends() if b.name == "cpu")
    assert f"`{REBUILD} {source}`" in info.summary


def test_doctor_table_shows_the_line(mismatch, source):
    from rich.console import Console

    from mlx_attn.doctor.report import backend_table
    console = Console(width=2000, record=True, file=open("/dev/null", "w"))
    console.print(backend_table())
    row = next(line for line in console.export_text().splitlines() if "│ cpu " in line)
    assert f"built for mlx {mismatch} but mlx 9.9.9 is installed" in row
    assert f"`{REBUILD} {source}`" in row


def test_explain_shows_the_line_when_built_without_mlx(monkeypatch, source):
    native_or_skip()
    if not HAVE_MLX:
        pytest.skip("mlx not installed")
    import mlx.core as mx
    monkeypatch.setattr(status, "built_mlx_version", lambda: "")
    status.mlx_reasons.cache_clear()
    try:
        mx.set_default_device(mx.cpu)
        x = mx.array(rand(np.random.default_rng(0), 1, 2, 4, 8))
        text = explain(x, x, x)
        assert "math   chosen" in text and "without the MLX primitive" in text
        assert f"`{REBUILD} {source}`" in text
    finally:
        status.mlx_reasons.cache_clear()


# ---- the wheel's mlx requirement is the build's mlx ----

def _mlx_pin():
    spec = importlib.util.spec_from_file_location("mlx_pin", ROOT / "build_support" / "mlx_pin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mlx_requirements(fields: dict) -> dict:
    """{where: [Requirement on mlx]} over dependencies and every extra."""
    out = {"dependencies": [Requirement(r) for r in fields["dependencies"]]}
    for extra, reqs in fields["optional-dependencies"].items():
        out[extra] = [Requirement(r) for r in reqs]
    return {k: [r for r in v if r.name == "mlx"] for k, v in out.items()}


def _build_system_pins() -> dict:
    """{marker: version} of the build-system requirement on mlx (per platform)."""
    pins = {}
    for text in pyproject()["build-system"]["requires"]:
        req = Requirement(text)
        if req.name == "mlx":
            (spec,) = req.specifier
            assert spec.operator == "==", f"the build must use one exact mlx: {text}"
            pins[str(req.marker)] = spec.version
    return pins


ENVIRONMENTS = {"linux": {"sys_platform": "linux", "platform_machine": "x86_64"},
                "macos": {"sys_platform": "darwin", "platform_machine": "arm64"}}


@pytest.mark.parametrize("platform", sorted(ENVIRONMENTS))
def test_isolated_build_pins_the_build_system_mlx(platform):
    """pyproject.toml: where mlx is required at run time (extras mlx and test; the macOS core
    dependency), the wheel of an isolated build pins the build-system requirement's version."""
    env = ENVIRONMENTS[platform]
    built = [v for marker, v in _build_system_pins().items() if Marker(marker).evaluate(env)]
    assert len(built) == 1, "one build-system mlx per platform"
    settings = pyproject()["tool"]["dynamic-metadata"][0]
    reqs = _mlx_requirements(_mlx_pin().render(settings, built[0]))
    for where in ("mlx", "test") + (("dependencies",) if platform == "macos" else ()):
        here = [r for r in reqs[where] if r.marker is None or r.marker.evaluate(env)]
        assert here, f"{where} requires no mlx on {platform}"
        for r in here:
            assert str(r.specifier) == f"=={built[0]}", f"{where}: {r}"
    if platform == "linux":  # mlx alone has no CPU backend on Linux
        assert all("cpu" in r.extras for r in reqs["mlx"] + reqs["test"] if r.marker.evaluate(env))


def test_every_mlx_requirement_follows_the_build():
    settings = pyproject()["tool"]["dynamic-metadata"][0]
    assert set(pyproject()["project"]["dynamic"]) >= {"dependencies", "optional-dependencies"}
    pin = _mlx_pin()
    for version, expected in (("1.2.3", "==1.2.3"), (None, settings["unpinned"])):
        reqs = _mlx_requirements(pin.render(settings, version))
        assert sum(len(v) for v in reqs.values()) >= 5
        for where, rs in reqs.items():
            for r in rs:
                assert str(r.specifier) == expected, f"{where}: {r}"
    bad = dict(settings, dependencies=["mlx>=0.32"])
    with pytest.raises(ValueError, match="must use"):
        pin.render(bad, "1.2.3")


def _skbuild_at_least_1():
    try:
        return int(importlib.metadata.version("scikit-build-core").split(".")[0]) >= 1
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not HAVE_MLX or not _skbuild_at_least_1(), reason="needs mlx and "
                    "scikit-build-core>=1.0")
def test_build_backend_pins_the_mlx_of_its_environment(tmp_path):
    """The real PEP 517 hook (what pip calls, without building): the wheel's metadata pins the
    mlx of the build environment, here this one (a `--no-build-isolation` build)."""
    code = ("import sys; from scikit_build_core.build import prepare_metadata_for_build_wheel "
            "as p; print(p(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    dist_info = done.stdout.strip().splitlines()[-1]
    metadata = (tmp_path / dist_info / "METADATA").read_text()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]
    mlx = [Requirement(r) for r in requires if Requirement(r).name == "mlx"]
    assert len(mlx) == 5
    version = importlib.metadata.version("mlx")
    assert all(str(r.specifier) == f"=={version}" for r in mlx), mlx


def test_installed_wheel_requires_its_built_mlx():
    """An installed (non-editable) mlx_attn: its mlx requirement is MLX_BUILT_VERSION."""
    native_or_skip()
    import mlx_attn
    built = status.built_mlx_version()
    if not built:
        pytest.skip("built without the MLX primitive")
    try:
        dist = importlib.metadata.distribution("mlx_attn")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("mlx_attn is not installed")
    if Path(dist.locate_file("mlx_attn")).resolve() != Path(mlx_attn.__file__).resolve().parent:
        pytest.skip("the mlx_attn under test is not the installed distribution")
    mlx = [Requirement(r) for r in dist.requires or [] if Requirement(r).name == "mlx"]
    assert mlx and all(str(r.specifier) == f"=={built}" for r in mlx), mlx
