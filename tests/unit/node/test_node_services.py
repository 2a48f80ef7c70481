"""Node services on their host, the daemon: each service gets its kinds' desired state
from the store before anything runs, then only the changes of its kinds; a failing service
is restarted; every write goes through the one commit port; and the device layer does
not depend on the daemon (importing it loads neither the daemon nor websockets)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgenode.config import parse_config
from edgenode.node.daemon import Daemon
from edgenode.service import DesiredRow, NodeHost, OutRecord, RetainedMessages
from edgenode.store import Store


def body(kind: str, name: str) -> bytes:
    doc = {"apiVersion": "edgenode.io/v1", "kind": kind, "metadata": {"name": name}, "spec": {}}
    return json.dumps(doc).encode()


class Recorder:
    """A service that records what the host tells it, and fails its first run."""

    name = "recorder"

    def __init__(self, kinds: set[str]) -> None:
        self.kinds = frozenset(kinds)
        self.calls: list[tuple[list[str], bool]] = []
        self.runs = 0
        self.seqs: list[int | None] = []

    async def run(self, host: NodeHost) -> None:
        self.runs += 1
        if self.runs == 1:
            raise RuntimeError("first run fails")
        self.seqs = host.commit([], [OutRecord("telemetry", b'{"ok":true}', 5)])
        await asyncio.Event().wait()

    def on_desired(self, host: NodeHost, rows: Sequence[DesiredRow], snapshot: bool) -> None:
        self.calls.append(([key for key, _, _ in rows], snapshot))


def test_services_get_their_kinds_first_then_their_changes_and_are_restarted(tmp_path: Path):
    config = parse_config(
        {"node": {"name": "n1", "data_dir": str(tmp_path)}, "metrics": {"listen": ""}},
        str(tmp_path / "n.toml"),
        {},
    )
    store = Store(str(config.db_path))
    store.apply_changes(
        [
            ("Config/default/a", 1, body("Config", "a")),
            ("Device/default/d", 2, body("Device", "d")),
        ],
        2,
    )
    store.close()
    configs, devices = Recorder({"Config"}), Recorder({"Device", "Route"})
    daemon = Daemon(config, [configs, devices])

    async def scenario() -> None:
        task = asyncio.create_task(daemon.run())
        for _ in range(300):
            if configs.runs >= 2 and devices.runs >= 2 and configs.seqs and devices.seqs:
                break
            await asyncio.sleep(0.01)
        # A desired change as the cloud link reports it after persisting.
        daemon._desired_changed([("Route/default/r", 3, body("Route", "r"))], False)
        daemon.request_stop()
        assert await task == 0

    asyncio.run(scenario())
    assert configs.calls == [(["Config/default/a"], True)]
    assert devices.calls == [(["Device/default/d"], True), (["Route/default/r"], False)]
    assert (configs.runs, devices.runs) == (2, 2)  # the first runs failed: restarted
    reopened = Store(str(config.db_path))
    try:
        assert all(configs.seqs + devices.seqs)
        records = [json.loads(payload) for _, _, payload in reopened.peek(10)]
        telemetry = [r for r in records if r["kind"] == "telemetry"]
        assert [(r["node"], r["body"]) for r in telemetry] == [("n1", {"ok": True})] * 2
    finally:
        reopened.close()


def test_retained_messages_remember_clears_and_tell_listeners_only_of_changes():
    retained = RetainedMessages()
    heard: list[tuple[str, bytes]] = []
    retained.listen(lambda topic, payload: heard.append((topic, payload)))
    retained.put("$edge/config/a", b"1")
    retained.put("$edge/config/a", b"1")
    retained.clear("$edge/config/a")
    retained.clear("$edge/config/never")
    assert heard == [("$edge/config/a", b"1"), ("$edge/config/a", b"")]
    assert retained.items() == [("$edge/config/a", b"")]
    assert retained.owns("$edge/config/a")
    assert not retained.owns("$edge/config/never")


def test_importing_the_device_layer_loads_neither_the_daemon_nor_websockets_nor_paho():
    # The device layer speaks MQTT through its own client (edgenode.devices.mqtt): the
    # node no longer loads aiomqtt and paho-mqtt (only the simulated devices use them).
    script = (
        "import sys, edgenode.devices, edgenode.devices.service, edgenode.devices.bus\n"
        "print(sorted(m for m in sys.modules if m == 'edgenode.node.daemon'"
        " or m.split('.')[0] in ('websockets', 'aiomqtt', 'paho')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_daemon_is_a_node_host(tmp_path: Path):
    config = parse_config(
        {"node": {"name": "n1", "data_dir": str(tmp_path)}}, str(tmp_path / "n.toml"), {}
    )
    host: NodeHost = Daemon(config)  # checked by mypy as well
    assert isinstance(host.retained, RetainedMessages)
    assert host.config is config
    unused: Any = host
    del unused
