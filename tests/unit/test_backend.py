"""Backend selection (EDGENODE_BACKEND) and the `edgenode version` command, in real processes."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

import edgenode
from edgenode import _pure
from edgenode._backend import choose, load_native
from edgenode.errors import ConfigError


def run_edgenode(*args: str, backend: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("EDGENODE_BACKEND", None)
    if backend is not None:
        env["EDGENODE_BACKEND"] = backend
    return subprocess.run(
        [sys.executable, "-m", "edgenode", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (None, "rust"),
        ("auto", "rust"),
        ("rust", "rust"),
        ("python", "python"),
        ("PYTHON", "python"),
    ],
)
def test_version_names_the_backend_the_environment_selects(requested, expected):
    result = run_edgenode("version", backend=requested)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"edgenode {edgenode.__version__} backend={expected} arch={platform.machine()}"
    )


def test_an_unknown_backend_name_fails_loudly_naming_the_choices():
    result = run_edgenode("version", backend="fortran")
    assert result.returncode != 0
    assert "EDGENODE_BACKEND='fortran' is not one of auto, rust, python" in result.stderr


def test_choosing_python_gives_the_pure_namespace():
    assert choose("python") == ("python", _pure)


def test_choosing_auto_prefers_the_extension_when_it_is_built():
    native = load_native()
    assert native is not None, "the Rust extension must be built for the test run"
    assert choose("auto") == ("rust", native)


def test_choosing_an_unknown_backend_raises_config_error():
    with pytest.raises(ConfigError, match="is not one of"):
        choose("go")


def test_rust_backend_without_the_extension_raises_import_error_naming_it(tmp_path):
    # A copy of the pure package without the compiled module: `rust` must refuse, `auto` falls back.
    package = tmp_path / "edgenode"
    source = os.path.dirname(edgenode.__file__)
    subprocess.run(["cp", "-r", source, str(package)], check=True, timeout=60)
    for compiled in package.glob("_edgecore_fast*.so"):
        compiled.unlink()
    code = "import edgenode; print(edgenode.backend)"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONSAFEPATH": "1"}
    auto = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "EDGENODE_BACKEND": "auto"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert auto.returncode == 0, auto.stderr
    assert auto.stdout.strip() == "python"
    forced = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "EDGENODE_BACKEND": "rust"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert forced.returncode != 0
    assert (
        "EDGENODE_BACKEND=rust but the extension edgenode._edgecore_fast is not installed"
        in forced.stderr
    )


def test_both_namespaces_export_the_same_names(rust):
    public = set(_pure.__all__)
    native = {name for name in dir(rust) if not name.startswith("_")}
    assert public <= native, f"missing in Rust: {sorted(public - native)}"


def test_a_broken_extension_falls_back_to_python_with_a_warning_that_says_why(tmp_path):
    package = tmp_path / "edgenode"
    subprocess.run(
        ["cp", "-r", os.path.dirname(edgenode.__file__), str(package)], check=True, timeout=60
    )
    for compiled in package.glob("_edgecore_fast*.so"):
        compiled.write_bytes(b"this is not a shared object")
    result = subprocess.run(
        [sys.executable, "-c", "import edgenode; print(edgenode.backend)"],
        env={
            **os.environ,
            "PYTHONPATH": str(tmp_path),
            "PYTHONSAFEPATH": "1",
            "EDGENODE_BACKEND": "auto",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "python"
    assert "edgenode._edgecore_fast is installed but failed to load" in result.stderr
