"""Fixtures of the hub tests: a real ``edgehub serve`` subprocess on free loopback ports,
its admin token, and helpers to call the API and run ``edgectl``."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT = 15.0
HEARTBEAT = 0.2
"""Scaled-down heartbeat interval (deadline is 3 intervals)."""


@dataclass
class RunningHub:
    data: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    api: str = ""
    link: str = ""
    listen: str = "127.0.0.1:0"
    api_listen: str = "127.0.0.1:0"
    output: list[str] = field(default_factory=list)
    ssl_context: ssl.SSLContext | None = None

    @property
    def token_file(self) -> Path:
        return self.data / "admin.token"

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "edgehub.cli",
            "serve",
            "--data",
            str(self.data),
            "--listen",
            self.listen,
            "--api-listen",
            self.api_listen,
            "--heartbeat",
            str(HEARTBEAT),
            "--handshake-timeout",
            "2",
            *self.extra,
        ]
        with (self.data / "hub.log").open("a") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.proc.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        api = link = ""
        while not (api and link):
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if time.monotonic() > deadline or (not line and self.proc.poll() is not None):
                self.stop()
                raise AssertionError(f"hub did not start: {self.output}")
            self.output.append(line)
            if m := re.search(r"node links on (\S+)", line):
                link = m.group(1)
                self.listen = link.split("//")[1].split("/")[0]
            if m := re.search(r"operator API on (\S+)", line):
                api = m.group(1)
                self.api_listen = api.split("//")[1]
        self.api, self.link = api, link

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        return code

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        token: str | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.api + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token if token is None else token}")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl_context) as resp:
                text = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            text = exc.read()
            status = exc.code
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text.decode(errors="replace")

    def apply(self, text: str) -> tuple[int, Any]:
        return self.call("POST", "/v1/apply", raw=text.encode(), content_type="application/yaml")

    def node_add(self, name: str, labels: dict[str, str] | None = None) -> str:
        status, body = self.call("POST", f"/v1/nodes/{name}/token", {"labels": labels or {}})
        assert status == 201, body
        return str(body["token"])

    def ctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECTL_")}
        env["HOME"] = str(self.data)  # no operator config file leaks in
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "edgehub.edgectl",
                "--hub",
                self.api,
                "--token-file",
                str(self.token_file),
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=False,
        )


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[Any]:
    hubs: list[RunningHub] = []

    def make(*extra: str, name: str = "hub") -> RunningHub:
        data = tmp_path / name
        data.mkdir(exist_ok=True)
        hub = RunningHub(data, list(extra))
        hubs.append(hub)
        hub.start()
        return hub

    yield make
    for hub in hubs:
        hub.stop(signal.SIGKILL)


@pytest.fixture
def hub(hub_factory: Any) -> RunningHub:
    return hub_factory()  # type: ignore[no-any-return]
