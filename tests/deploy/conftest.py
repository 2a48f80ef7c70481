"""Fixtures of the deploy tests: the local base image, the wheelhouse and the hub image,
each made once per run with the project's own scripts (what users run), and a per-test
record of what the test created in the engine (removed when it ends)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.engine import (
    BASE_IMAGE,
    BUILD_TIMEOUT,
    IMAGES,
    ROOT,
    Resources,
    docker,
    require_engine,
    resources,
    run_logged,
    unique,
)

WHEELHOUSE = ROOT / "dist" / "wheelhouse"
"""Where ``deploy/images/wheelhouse.sh`` writes and ``cloud/Containerfile`` reads."""


@pytest.fixture(scope="session")
def build_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One log of every build step of the run (its tail is in any failure message)."""
    return tmp_path_factory.mktemp("deploy-builds") / "build.log"


@pytest.fixture(scope="session")
def base_image(build_log: Path) -> str:
    """``edgenode-base:bookworm``, made by debootstrap (kept; rebuilt when inputs change)."""
    require_engine()
    run_logged([str(IMAGES / "base.sh")], build_log)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def wheelhouse(build_log: Path) -> Path:
    """``dist/wheelhouse`` from the unoptimised build scripts/setup.sh made (seconds; the
    shipped wheels are the same script's release profile)."""
    require_engine()
    run_logged([str(IMAGES / "wheelhouse.sh"), "--profile", "dev"], build_log)
    return WHEELHOUSE


@pytest.fixture(scope="session")
def hub_image(base_image: str, wheelhouse: Path, build_log: Path) -> Iterator[str]:
    """cloud/Containerfile built from the local base image, as README.md says; removed at
    the end of the run with its build stage."""
    tag = unique("hub") + ":latest"
    build_stage = tag.replace(":latest", "-build:latest")
    common = ["docker", "build", "--build-arg", f"BASE_IMAGE={base_image}", "-f"]
    common += ["cloud/Containerfile"]
    try:
        # The build stage gets a tag of its own so that it can be removed too (the legacy
        # builder keeps it as an untagged image otherwise); the second build reuses it.
        run_logged([*common, "--target", "build", "-t", build_stage, "."], build_log)
        run_logged([*common, "-t", tag, "."], build_log, timeout=BUILD_TIMEOUT)
        yield tag
    finally:
        docker("rmi", "-f", tag, build_stage, check=False)


@pytest.fixture
def engine_resources() -> Iterator[Resources]:
    require_engine()
    with resources() as created:
        yield created
