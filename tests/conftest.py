"""Shared fixtures: every behavioural test of the core runs on both backends."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from edgenode import _pure
from edgenode._backend import load_native

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.register_profile(
    "thorough", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=2000
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def native_core() -> ModuleType:
    """The Rust extension; its absence is a failure, never a skip."""
    native = load_native()
    if native is None:
        pytest.fail(
            "the Rust extension edgenode._edgecore_fast is not built (run scripts/setup.sh)"
        )
    return native


@pytest.fixture(params=["python", "rust"])
def core(request: pytest.FixtureRequest) -> ModuleType:
    """The flat namespace of one backend: ``edgenode._pure`` or the Rust extension."""
    return _pure if request.param == "python" else native_core()


@pytest.fixture
def after_crash(core: ModuleType, tmp_path: Path) -> Callable[[str], Any]:
    """``after_crash(name)``: the store at ``tmp_path / "node.db"`` as a restart after a
    crash now would open it — the database and its WAL copied as they are on disk into
    ``tmp_path / name`` (the running store is left alone)."""

    def reopen(name: str) -> Any:
        copy = tmp_path / name
        copy.mkdir()
        for suffix in ("", "-wal"):
            source = tmp_path / f"node.db{suffix}"
            if source.exists():
                (copy / source.name).write_bytes(source.read_bytes())
        return core.Store(str(copy / "node.db"))

    return reopen


@pytest.fixture
def pure() -> ModuleType:
    return _pure


@pytest.fixture
def rust() -> ModuleType:
    return native_core()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say once, at the start of the run, whether the deploy and kubectl tests run here."""
    from deploy.engine import header_line

    kubectl = shutil.which("kubectl")
    return [
        header_line(),
        f"kubectl: {kubectl} (tests/hub/test_kubectl.py drives the hub with it)"
        if kubectl
        else "kubectl: not on PATH, so tests/hub/test_kubectl.py is skipped",
    ]
