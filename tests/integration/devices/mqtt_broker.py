"""Helpers of the device-layer integration tests: a real Mosquitto process (free port,
generated config, optional password file and ACL) and device clients built on aiomqtt
(paho-mqtt underneath), the way a device would talk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SHIPPED_SETTINGS = Path(__file__).resolve().parents[3] / "deploy" / "mosquitto" / "edgenode.conf"
"""The broker settings the node needs, as users install them (docs/device-api.md)."""
START_TIMEOUT = 5.0
WAIT = 5.0
"""Seconds any single wait for an MQTT message may take before the test fails."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Broker:
    """One mosquitto process; ``restart()`` reuses the port and the config."""

    directory: Path
    port: int
    users: dict[str, str] = field(default_factory=dict)
    acl: str = ""
    tls_port: int | None = None
    """A second listener with TLS (certificate for 127.0.0.1 in ``directory``)."""
    extra: list[str] = field(default_factory=list)
    """More lines for mosquitto.conf, after the shipped settings (so they override them,
    e.g. ``max_queued_messages 10``)."""
    shipped: bool = True
    """Include deploy/mosquitto/edgenode.conf, as a user's broker would."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> Path:
        return self.directory / "cert.pem"

    def make_certificate(self) -> None:
        """A self-signed certificate for 127.0.0.1 (its own CA)."""
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", str(self.directory / "key.pem"), "-out", str(self.ca_file),
                "-days", "1", "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )  # fmt: skip

    def write_config(self) -> Path:
        lines = [f"listener {self.port} 127.0.0.1", "user root", "persistence false"]
        if self.tls_port is not None:
            if not self.ca_file.exists():
                self.make_certificate()
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"certfile {self.ca_file}",
                f"keyfile {self.directory / 'key.pem'}",
            ]
        if self.users:
            passwords = self.directory / "passwords"
            passwords.touch()
            for user, password in self.users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(passwords), user, password],
                    check=True,
                    capture_output=True,
                    timeout=10,
                )
            acl = self.directory / "acl"
            acl.write_text(self.acl)
            lines += ["allow_anonymous false", f"password_file {passwords}", f"acl_file {acl}"]
            lines += ["log_type all"]  # ACL denials are logged at debug level
        else:
            lines.append("allow_anonymous true")
        if self.shipped:
            lines += SHIPPED_SETTINGS.read_text().splitlines()
        lines += self.extra
        config = self.directory / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self) -> None:
        config = self.write_config()
        log = (self.directory / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self, tail: int | None = 2000) -> str:
        """The broker's log (its last ``tail`` characters; None: all of it)."""
        path = self.directory / "mosquitto.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text if tail is None else text[-tail:]


class Device:
    """A device's MQTT client: everything published under its own topics is collected."""

    def __init__(self, client: aiomqtt.Client, name: str) -> None:
        self.client = client
        self.name = name
        self.root = f"$edge/devices/{name}"
        self.inbox: list[aiomqtt.Message] = []
        self._arrived = asyncio.Event()

    async def collect(self) -> None:
        async for message in self.client.messages:
            self.inbox.append(message)
            self._arrived.set()

    async def publish(self, suffix: str, payload: Any, *, topic: str | None = None) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload).encode()
        await self.client.publish(topic or f"{self.root}/{suffix}", payload, qos=1)

    async def next(self, suffix: str, timeout: float = WAIT, *, device: str | None = None) -> bytes:
        """The payload of the first unread message on ``{root}/{suffix}``."""
        wanted = f"$edge/devices/{device or self.name}/{suffix}"
        async with asyncio.timeout(timeout):
            while True:
                for index, message in enumerate(self.inbox):
                    if message.topic.value == wanted:
                        del self.inbox[index]
                        assert isinstance(message.payload, bytes)
                        return message.payload
                self._arrived.clear()
                await self._arrived.wait()

    async def next_json(self, suffix: str, timeout: float = WAIT) -> Any:
        return json.loads(await self.next(suffix, timeout))

    async def request(self, op: str, body: dict[str, Any]) -> tuple[str, Any]:
        """Publish ``body`` on ``op`` and wait for its accepted or rejected reply."""
        await self.publish(op, body)
        async with asyncio.timeout(WAIT):
            while True:
                for index, message in enumerate(self.inbox):
                    topic = message.topic.value
                    if topic in (f"{self.root}/{op}/accepted", f"{self.root}/{op}/rejected"):
                        del self.inbox[index]
                        assert isinstance(message.payload, bytes)
                        return topic.rsplit("/", 1)[1], json.loads(message.payload)
                self._arrived.clear()
                await self._arrived.wait()


@contextlib.asynccontextmanager
async def device_client(
    port: int,
    name: str,
    *,
    username: str | None = None,
    password: str | None = None,
    subscribe: str | None = None,
) -> AsyncIterator[Device]:
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=f"device-{name}-{time.monotonic_ns()}",
        username=username,
        password=password,
        timeout=WAIT,
    ) as client:
        device = Device(client, name)
        await client.subscribe(subscribe or f"$edge/devices/{name}/#", qos=1)
        task = asyncio.get_running_loop().create_task(device.collect())
        try:
            yield device
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
