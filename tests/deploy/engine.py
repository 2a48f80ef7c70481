"""The container engine the deploy tests drive, and what they leave behind.

The deploy tests build and run the three ways users run edgenode (the hub image, the
systemd unit under systemd as PID 1, a compose fleet) with the real ``docker`` command.
Where there is no engine they are skipped with the reason, which ``tests/conftest.py``
also prints once in the run's header; where there is one, every failure is a failure.

Everything a test creates (containers, volumes, networks, images) carries a unique name
and is removed by :class:`Resources` when the test ends; the images made from Debian's
packages by ``deploy/images/base.sh`` are kept (they are rebuilt only when their inputs
change, see their ``org.edgenode.inputs`` label).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "deploy" / "images"
BASE_IMAGE = "edgenode-base:bookworm"
DOCKER_TIMEOUT = 120.0
"""Bound of one ordinary docker command (run, exec, stop, inspect)."""
BUILD_TIMEOUT = 900.0
"""Bound of an image build or a script of deploy/images/ (debootstrap under qemu: minutes)."""
POLL = 0.25
T = TypeVar("T")


@dataclass(frozen=True)
class Engine:
    available: bool
    detail: str
    """The engine's version when available, else why not."""


@functools.cache
def engine() -> Engine:
    """Is there a container engine this process can use? (asked once per run)"""
    if shutil.which("docker") is None:
        return Engine(False, "no docker command on PATH")
    try:
        result = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Engine(False, "docker version did not answer within 30 s")
    if result.returncode != 0 or not result.stdout.strip():
        why = (result.stderr.strip().splitlines() or ["no server version"])[-1]
        return Engine(False, f"docker cannot reach its engine: {why}")
    return Engine(True, f"Docker engine {result.stdout.strip()}")


def header_line() -> str:
    """One line for the start of the test run: do the deploy tests run here, and if not why."""
    status = engine()
    if status.available:
        return f"deploy tests (hub image, systemd unit, compose fleet): run on {status.detail}"
    return (
        "deploy tests (hub image, systemd unit, compose fleet): NOT RUN, they need a "
        f"container engine: {status.detail}"
    )


def require_engine() -> None:
    status = engine()
    if not status.available:
        pytest.skip(f"needs a container engine: {status.detail}")


def docker(
    *args: str,
    timeout: float = DOCKER_TIMEOUT,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``docker ARGS``; with ``check`` a non-zero exit fails the test with its output."""
    result = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}"
        )
    return result


def run_logged(
    command: list[str],
    log: Path,
    *,
    timeout: float = BUILD_TIMEOUT,
    cwd: Path = ROOT,
    **env: str,
) -> None:
    """Run a long build step with its output in ``log``; on failure the tail goes into the
    assertion (the whole log stays for a closer look)."""
    started = time.monotonic()
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        result = subprocess.run(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            env={**os.environ, **env},
            cwd=cwd,
            check=False,
        )
        out.write(f"[{time.monotonic() - started:.1f} s, exit {result.returncode}]\n")
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise AssertionError(f"{' '.join(command)}: exit {result.returncode}\n{tail}")


def unique(prefix: str) -> str:
    """A name no other test run uses (several runs may share one engine)."""
    return f"edgenode-test-{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(what: str, check: Callable[[], T | None], timeout: float) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL)


@dataclass
class Container:
    """A running container, by name."""

    name: str

    def exec(
        self, *command: str, check: bool = True, timeout: float = DOCKER_TIMEOUT, user: str = ""
    ) -> subprocess.CompletedProcess[str]:
        options = ["--user", user] if user else []
        return docker("exec", *options, self.name, *command, check=check, timeout=timeout)

    def sh(self, script: str, *, check: bool = True, timeout: float = DOCKER_TIMEOUT) -> str:
        return self.exec("sh", "-c", script, check=check, timeout=timeout).stdout

    def inspect(self) -> dict[str, Any]:
        return json.loads(docker("inspect", self.name).stdout)[0]  # type: ignore[no-any-return]

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def port(self, container_port: int) -> int:
        """The host port published for ``container_port``/tcp."""
        text = docker("port", self.name, f"{container_port}/tcp").stdout.split()[0]
        return int(text.rsplit(":", 1)[1])

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])


@dataclass
class Resources:
    """What a test created in the engine, removed (in reverse order) when it ends."""

    created: list[tuple[str, str]] = field(default_factory=list)

    def container(self, name: str) -> Container:
        self.created.append(("container", name))
        return Container(name)

    def volume(self, name: str) -> str:
        self.created.append(("volume", name))
        return name

    def network(self, name: str) -> str:
        self.created.append(("network", name))
        return name

    def image(self, tag: str) -> str:
        self.created.append(("image", tag))
        return tag

    def cleanup(self) -> list[str]:
        """Remove everything; what could not be removed (reported, not raised)."""
        left: list[str] = []
        commands = {
            "container": ["rm", "-f", "-v"],
            "volume": ["volume", "rm", "-f"],
            "network": ["network", "rm"],
            "image": ["rmi", "-f"],
        }
        for kind, name in reversed(self.created):
            result = docker(*commands[kind], name, check=False)
            if result.returncode != 0 and "No such" not in result.stderr:
                left.append(f"{kind} {name}: {result.stderr.strip()}")
        self.created.clear()
        return left


@contextlib.contextmanager
def resources() -> Iterator[Resources]:
    created = Resources()
    try:
        yield created
    finally:
        left = created.cleanup()
        if left:
            print("could not remove:", *left, sep="\n  ")
