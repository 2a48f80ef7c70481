"""Run a real ``edgehub serve`` as a subprocess on free loopback ports and talk to it: the
one launcher shared by the hub's tests (``tests/hub/conftest.py``, the integration tests)
and the fleet benchmark (``bench/bench_hub.py``).

It lives in the package, next to ``simnode``, because both test code and the benchmark
need it and neither should import the other. Nothing in the hub itself uses it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import resource
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT = 15.0
"""Seconds for the hub to print where it listens."""
STOP_TIMEOUT = 10.0
"""Seconds between SIGTERM and SIGKILL."""
API_TIMEOUT = 10.0
"""Seconds for one operator API call."""


def raise_fd_limit() -> None:
    """Soft limit of open files up to the hard limit (thousands of node links)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class HubProcess:
    """One ``edgehub serve`` in ``data``; ``start()`` waits until both listeners are up.

    ``extra`` are further ``serve`` options. Ports are picked by the kernel on the first
    start and kept for restarts (nodes reconnect to the same URL).
    """

    data: Path
    extra: list[str] = field(default_factory=list)
    heartbeat: float = 15.0
    handshake_timeout: float = 10.0
    start_timeout: float = START_TIMEOUT
    stop_timeout: float = STOP_TIMEOUT
    api_timeout: float = API_TIMEOUT
    many_files: bool = False
    """Raise the hub's open-file limit to the hard limit (for fleet benchmarks)."""
    proc: subprocess.Popen[str] | None = None
    api: str = ""
    link: str = ""
    listen: str = "127.0.0.1:0"
    api_listen: str = "127.0.0.1:0"
    output: list[str] = field(default_factory=list)
    ssl_context: ssl.SSLContext | None = None
    log_file: Path | None = None
    """Where the hub's stderr goes; default ``data/hub.log`` (then ``data`` must exist)."""

    @property
    def token_file(self) -> Path:
        return self.data / "admin.token"

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the hub is not running"
        return self.proc.pid

    def command(self) -> list[str]:
        return [
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
            str(self.heartbeat),
            "--handshake-timeout",
            str(self.handshake_timeout),
            *self.extra,
        ]

    def start(self) -> None:
        with (self.log_file or self.data / "hub.log").open("a") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                preexec_fn=raise_fd_limit if self.many_files else None,
            )
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.proc.stdout
        assert stdout is not None

        def pump() -> None:  # keeps reading so the hub never blocks on a full pipe
            for line in stdout:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
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
        """Signal the hub and wait (SIGKILL after ``stop_timeout``); its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(self.stop_timeout)
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
        """One operator API call: (HTTP status, JSON body or text)."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.api + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token if token is None else token}")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(
                req, timeout=self.api_timeout, context=self.ssl_context
            ) as resp:
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
        """Register a node; its join token."""
        status, body = self.call("POST", f"/v1/nodes/{name}/token", {"labels": labels or {}})
        assert status == 201, body
        return str(body["token"])

    def ctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``edgectl`` against this hub (no operator config file leaks in)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECTL_")}
        env["HOME"] = str(self.data)
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
