"""``runtime: container``: an App's image run through docker or podman.

The engine is found once when the App service starts (``[apps] container_runtime``:
``auto`` tries docker, then podman; an engine counts only if it answers
``ENGINE version`` within ENGINE_PROBE_SECONDS) and reported in ``apps.json``, ``edgenode
status`` and the node's status record. Without one, container Apps are ``Failed``
(``NoContainerEngine``).

An instance is the engine's client in the foreground, ``ENGINE run --name
edgenode-<node>-<app> ...``, supervised like a process: its output (the container's
stdout and stderr) goes to the App's rotating log, its exit is the container's. Exactly
one instance: the name is fixed, and ``ENGINE rm -f NAME`` runs before every start (a
container left by a killed daemon goes first) and after every exit. Options:

- ``--init`` (the engine's tiny init as PID 1: signals reach the command, zombies are
  reaped), ``--network host`` (the App reaches the node's MQTT broker on 127.0.0.1, and
  health checks reach the App), ``--stop-signal`` = ``stopSignal``;
- ``memoryMax`` → ``--memory`` and ``--memory-swap`` (the same: no swap), ``cpuMax`` →
  ``--cpus``; an OOM kill is read from ``ENGINE inspect`` (``.State.OOMKilled``);
- environment variables by name only (``-e NAME``; the values reach the client through its
  environment, so they never show in ``ps``);
- when the App has artifacts or Config files, its work dir is mounted at ``/app``.

Stopping: the stop signal goes to the client, which forwards it to the container
(``--sig-proxy``, the default); after the grace period ``ENGINE kill NAME``.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edgenode.apps.process import run_command, signal_name
from edgenode.apps.spec import AppSpec

ENGINES: Final = ("docker", "podman")
ENGINE_PROBE_SECONDS: Final = 10.0
ENGINE_CALL_SECONDS: Final = 30.0
"""Bound on ``rm``, ``kill``, ``inspect`` calls (a hung engine must not hang the node)."""
CONTAINER_APP_DIR: Final = "/app"
ENGINE_ERROR_CODES: Final = (125,)
"""``ENGINE run`` exits 125 when the engine could not run the container at all (image
missing, bad option): reported ``StartFailed`` with the engine's last output line."""
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")
MAX_NAME_CHARS: Final = 200


@dataclass(frozen=True)
class Engine:
    name: str
    path: str
    version: str

    def describe(self) -> str:
        return f"{self.name} {self.version}"


async def find_engine(setting: str, env: dict[str, str] | None = None) -> tuple[Engine | None, str]:
    """The container engine per ``[apps] container_runtime``, or None and why not."""
    import shutil

    if setting == "none":
        return None, "[apps] container_runtime is none"
    reasons = []
    for name in ENGINES if setting == "auto" else (setting,):
        path = shutil.which(name)
        if path is None:
            reasons.append(f"no {name} on PATH")
            continue
        fmt = "{{.Server.Version}}" if name == "docker" else "{{.Version}}"
        result = await run_command(
            [path, "version", "--format", fmt], timeout=ENGINE_PROBE_SECONDS, env=env
        )
        version = result.output.decode(errors="replace").strip()
        if result.code == 0 and version:
            return Engine(name, path, version.splitlines()[-1]), ""
        why = result.error or (version.splitlines()[-1] if version else f"exit {result.code}")
        reasons.append(f"{name} does not answer: {why}")
    return None, "; ".join(reasons)


def container_name(node: str, app: str) -> str:
    """``edgenode-<node>-<app>`` (characters an engine refuses become ``-``)."""
    return _NAME_UNSAFE.sub("-", f"edgenode-{node}-{app}")[:MAX_NAME_CHARS]


def run_argv(
    engine: Engine, name: str, spec: AppSpec, env_names: Iterable[str], work: Path | None
) -> list[str]:
    """The engine client's command line for one instance of ``spec``."""
    argv = [
        engine.path,
        "run",
        "--name",
        name,
        "--init",
        "--network",
        "host",
        "--stop-signal",
        signal_name(spec.stop_signal),
        "--label",
        f"edgenode.app={spec.name}",
    ]
    for key in env_names:
        argv += ["-e", key]
    memory, cpus = spec.resources.memory_max, spec.resources.cpu_max
    if memory is not None:
        argv += ["--memory", f"{memory}b", "--memory-swap", f"{memory}b"]
    if cpus is not None:
        argv += ["--cpus", f"{cpus:g}"]
    if work is not None:
        argv += ["-v", f"{work}:{CONTAINER_APP_DIR}"]
    argv.append(spec.image)
    argv += list(spec.command)
    return argv


async def remove(engine: Engine, name: str) -> str:
    """``ENGINE rm -f NAME``; an error text, or "" (also when there was none)."""
    result = await run_command([engine.path, "rm", "-f", name], timeout=ENGINE_CALL_SECONDS)
    text = result.output.decode(errors="replace").strip()
    if result.code == 0 or "no such container" in text.lower():
        return ""
    return result.error or text or f"exit {result.code}"


async def kill(engine: Engine, name: str, signum: int = signal.SIGKILL) -> None:
    await run_command(
        [engine.path, "kill", "--signal", signal_name(signum), name], timeout=ENGINE_CALL_SECONDS
    )


async def inspect_exit(engine: Engine, name: str) -> tuple[int, bool] | None:
    """The container's exit code and whether it was OOM-killed (None: unknown)."""
    result = await run_command(
        [engine.path, "inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", name],
        timeout=ENGINE_CALL_SECONDS,
    )
    fields = result.output.decode(errors="replace").split()
    if result.code != 0 or len(fields) != 2 or not fields[0].lstrip("-").isdigit():
        return None
    return int(fields[0]), fields[1].lower() == "true"


def exec_argv(engine: Engine, name: str, command: Iterable[str]) -> list[str]:
    """A health check's command inside the running container."""
    return [engine.path, "exec", name, *command]
