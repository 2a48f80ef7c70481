"""Fixtures for the node daemon's integration tests: a real hub, a proxy, real node
processes (``python -m edgenode run``) with scaled-down timers, killed in finalizers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.fakehub import Background, FakeHub, Proxy, wait_for

NODE_NAME = "ship-7"
STOP_TIMEOUT = 10.0


def terminate(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
    return proc.returncode


class NodeProcess:
    """One ``edgenode run`` subprocess, its config file, data_dir and log file."""

    def __init__(self, tmp_path: Path, name: str = NODE_NAME) -> None:
        self.dir = tmp_path
        self.name = name
        self.data_dir = tmp_path / "data"
        self.config_path = tmp_path / "node.toml"
        self.log_path = tmp_path / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def configure(self, hub_url: str | None, token: str = "secret", **sections: Any) -> None:
        """Write the TOML config: fast timers by default, overrides per section."""
        config: dict[str, dict[str, Any]] = {
            "node": {"name": self.name, "data_dir": str(self.data_dir)},
            "status": {"interval": 60.0},
            "metrics": {"listen": ""},
            "log": {"level": "info"},
        }
        if hub_url is not None:
            config["hub"] = {
                "url": hub_url,
                "token": token,
                "backoff_base": 0.05,
                "backoff_cap": 0.3,
                "handshake_timeout": 1.0,
            }
        for section, values in sections.items():
            config.setdefault(section, {}).update(values)
        lines: list[str] = []
        for section, values in config.items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(
        self, *, args: list[str] | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        command = args or [
            sys.executable,
            "-m",
            "edgenode",
            "run",
            "--config",
            str(self.config_path),
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"---- run {self.runs}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=log,
                env={**os.environ, **(env or {})},
            )
        return self.proc

    def log(self, run: int | None = None) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        if run is None:
            return text
        return text.split(f"---- run {run}\n", 1)[1].split("---- run ", 1)[0]

    def link_state(self) -> dict[str, Any]:
        try:
            return json.loads((self.data_dir / "link-state.json").read_text())
        except (OSError, ValueError):
            return {}

    def wait_state(self, state: str, timeout: float = 10.0) -> dict[str, Any]:
        return wait_for(
            lambda: (s := self.link_state()).get("state") == state and s,
            timeout,
            f"link state {state!r} (now {self.link_state().get('state')!r})",
        )

    def status(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edgenode", "status", "--config", str(self.config_path), *extra],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def status_json(self) -> dict[str, Any]:
        result = self.status("--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def signal(self, signum: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(signum)
        return self.proc.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def background() -> Iterator[Background]:
    bg = Background()
    yield bg
    bg.close()


@pytest.fixture
def hub(background: Background) -> Iterator[FakeHub]:
    fake = FakeHub(background)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def proxy(background: Background, hub: FakeHub) -> Iterator[Proxy]:
    p = Proxy(background, hub.port)
    p.start()
    yield p
    p.stop()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    process = NodeProcess(tmp_path)
    yield process
    process.stop()
