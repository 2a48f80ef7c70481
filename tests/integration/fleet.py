"""Shared helpers of the integration tests that run the real programs together:
:class:`Fleet` starts them in tmp_path and stops every one (SIGTERM, then SIGKILL) when
the test ends — ``edgehub serve`` (``hub.conftest.RunningHub``), Mosquitto
(``integration.devices.mqtt_broker.Broker``), ``edgenode run``
(``node.conftest.NodeProcess``) and simulated devices (:class:`Simulator`,
``python -m edgenode.devices.simulate``) — plus bounded waits and a node's local state
(``edgenode status --json``, its outbox read-only).

(A context manager rather than fixtures in a ``tests/integration/conftest.py``: a second
rootless ``conftest`` module would shadow ``tests/conftest.py`` for ``from conftest
import native_core``.)
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from node.conftest import NodeProcess, terminate

from hub.conftest import RunningHub
from integration.devices.mqtt_broker import Broker, free_port

POLL = 0.1
STEP_TIMEOUT = 20.0
"""Default bound of a single wait; a failure names what did not happen."""


async def eventually(condition: Callable[[], Any], what: str, timeout: float = STEP_TIMEOUT) -> Any:
    """Poll ``condition`` (run in a thread: it may start processes) until truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = await asyncio.to_thread(condition)
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(POLL)


def read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def outbox_records(node: NodeProcess) -> list[dict[str, Any]]:
    """Every record waiting in the node's outbox, in sending order (read-only)."""
    db = read_only(node.data_dir / "node.db")
    try:
        rows = db.execute("SELECT payload FROM outbox ORDER BY priority, seq").fetchall()
    finally:
        db.close()
    return [json.loads(payload) for (payload,) in rows]


def node_status(node: NodeProcess) -> dict[str, Any]:
    """``edgenode status --json`` ({} while it cannot be read)."""
    result = node.status("--json")
    return json.loads(result.stdout) if result.stdout else {}


def serving(node: NodeProcess, devices: list[str], *, linked: bool = False) -> bool:
    """The node's device layer serves exactly ``devices`` (and it is linked to the hub)."""
    now = node_status(node)
    layer = now.get("device_layer") or {}
    return bool(
        layer.get("devices") == devices
        and layer.get("broker_connected")
        and (not linked or now.get("hub", {}).get("state") == "connected")
    )


class Simulator:
    """One simulated device process (``python -m edgenode.devices.simulate``)."""

    def __init__(self, directory: Path, kind: str, device: str, port: int, *extra: str) -> None:
        self.device = device
        self.state_file = directory / f"{device}.json"
        self.log_path = directory / f"{device}.log"
        self.argv = [
            sys.executable, "-m", "edgenode.devices.simulate", kind, "--device", device,
            "--broker", f"127.0.0.1:{port}", "--state-file", str(self.state_file), *extra,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)

    def state(self) -> dict[str, Any]:
        try:
            value = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        return None if self.proc is None else terminate(self.proc)


class Fleet:
    """``with Fleet(tmp_path) as fleet:`` — every process started through it is stopped
    at the end, the devices first, then the nodes, the hub, the brokers."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.hubs: list[RunningHub] = []
        self.brokers: list[Broker] = []
        self.nodes: list[NodeProcess] = []
        self.simulators: list[Simulator] = []

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for simulator in self.simulators:
            simulator.stop()
        for node in self.nodes:
            node.stop()
        for hub in self.hubs:
            hub.stop()
        for broker in self.brokers:
            broker.stop()

    def hub(self) -> RunningHub:
        """``edgehub serve`` on free ports, data in tmp_path/hub, heartbeat 0.2 s."""
        data = self.tmp_path / "hub"
        data.mkdir()
        hub = RunningHub(data)
        self.hubs.append(hub)
        hub.start()
        return hub

    def broker(self, name: str, cls: type[Broker] = Broker) -> Broker:
        """A started Mosquitto in tmp_path/broker-<name> on a free port."""
        directory = self.tmp_path / f"broker-{name}"
        directory.mkdir()
        broker = cls(directory, free_port())
        self.brokers.append(broker)
        broker.start()
        return broker

    def node(self, name: str) -> NodeProcess:
        """An ``edgenode run`` in tmp_path/<name>, to configure and start."""
        directory = self.tmp_path / name
        directory.mkdir()
        node = NodeProcess(directory, name)
        self.nodes.append(node)
        return node

    def simulator(self, kind: str, device: str, port: int, *extra: str) -> Simulator:
        """A started simulated device (its log and state file in tmp_path/devices)."""
        directory = self.tmp_path / "devices"
        directory.mkdir(exist_ok=True)
        simulator = Simulator(directory, kind, device, port, *extra)
        self.simulators.append(simulator)
        simulator.start()
        return simulator
