"""The device layer against a real Mosquitto: twins, delta, get, state, telemetry into the
outbox, bad input, broker and node restarts, and an ACL that confines each device."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from mqtt_broker import WAIT, Broker, device_client, free_port

from edgenode.devices import DeviceLayer, DeviceSpec, MqttSettings, RouteSpec
from edgenode.devices.bus import StoreCommit
from edgenode.errors import StoreError
from edgenode.service import OutRecord
from edgenode.store import Store

pytestmark = pytest.mark.timeout(60)


def run(scenario: Callable[[], Any]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=45))


def outbox(store: Store) -> list[dict[str, Any]]:
    """The outbox's records as the hub reads them: each body's fields with its kind."""
    records = [json.loads(payload) for _, _, payload in store.peek(1000)]
    return [{**record["body"], "kind": record["kind"]} for record in records]


async def eventually(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def node(
    store: Store,
    broker: Broker,
    devices: list[DeviceSpec],
    routes: list[RouteSpec] | None = None,
    **mqtt: Any,
) -> AsyncIterator[DeviceLayer]:
    settings = MqttSettings(
        port=mqtt.pop("port", broker.port),
        client_id=mqtt.pop("client_id", "edgenode-test"),
        backoff_base=0.05,
        backoff_cap=0.3,
        keepalive=5,
        **mqtt,
    )
    layer = DeviceLayer(store, settings, devices, routes or [])
    task = asyncio.get_running_loop().create_task(layer.run())
    try:
        async with asyncio.timeout(WAIT):
            await layer.connected.wait()
        yield layer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def broker_factory(tmp_path) -> Iterator[Any]:
    started: list[Broker] = []

    def make(users: dict[str, str] | None = None, acl: str = "", tls: bool = False) -> Broker:
        directory = tmp_path / f"broker{len(started)}"
        directory.mkdir()
        broker = Broker(directory, free_port(), users or {}, acl, free_port() if tls else None)
        started.append(broker)
        broker.start()
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


@pytest.fixture
def store(tmp_path):
    opened = Store(str(tmp_path / "node.db"))
    yield opened
    opened.close()


def test_a_device_updates_gets_and_sees_its_delta_retained_then_cleared(broker, store):
    async def scenario() -> None:
        async with (
            node(store, broker, [DeviceSpec("lamp", {"power": "on", "level": 3})]),
            device_client(broker.port, "lamp") as lamp,
        ):
            # Retained: the device gets the delta on subscribing, after the node sent it.
            assert await lamp.next_json("twin/delta") == {
                "version": 1,
                "delta": {"power": "on", "level": 3},
            }
            verdict, reply = await lamp.request(
                "twin/update", {"reported": {"power": "on"}, "clientToken": "c1"}
            )
            assert (verdict, reply["clientToken"], reply["version"]) == ("accepted", "c1", 1)
            assert await lamp.next_json("twin/delta") == {"version": 1, "delta": {"level": 3}}
            verdict, reply = await lamp.request(
                "twin/update",
                {"reported": {"level": 3}, "ack": {"version": 1, "status": "accepted"}},
            )
            assert (verdict, reply["version"]) == ("accepted", 2)
            assert await lamp.next("twin/delta") == b""  # cleared
            verdict, twin = await lamp.request("twin/get", {"clientToken": "g"})
            assert verdict == "accepted"
            assert twin["reported"] == {"power": "on", "level": 3}
            assert twin["delta"] == {}
            assert twin["version"] == {"desired": 1, "reported": 2}
            assert twin["ack"]["status"] == "accepted"
            assert twin["clientToken"] == "g"
            assert set(twin["metadata"]["reported"]) == {"power", "level"}
        # A late subscriber finds no retained delta any more.
        async with (
            node(store, broker, [DeviceSpec("lamp", {"power": "on", "level": 3})]),
            device_client(broker.port, "lamp") as late,
        ):
            _, twin = await late.request("twin/get", {})
            assert twin["version"]["reported"] == 2
            assert all(
                m.topic.value != f"{late.root}/twin/delta" or not m.payload for m in late.inbox
            )
        records = outbox(store)
        twins = [r for r in records if r["kind"] == "twin"]
        assert len(twins) == 1  # coalesced per device: only the newest waits
        assert twins[0]["reported"] == {"power": "on", "level": 3}
        assert twins[0]["ack"]["version"] == 1

    run(scenario)


def test_state_and_telemetry_go_into_the_outbox_in_route_priority(broker, store):
    routes = [
        RouteSpec("$edge/devices/+/telemetry/alarm", priority=0, ttl=600),
        RouteSpec("$edge/devices/+/telemetry/debug", enabled=False),
        RouteSpec("$edge/devices/+/telemetry/temp", to="topic:plant/temps"),
    ]

    async def scenario() -> None:
        async with (
            node(store, broker, [DeviceSpec("lamp")], routes),
            device_client(broker.port, "lamp") as lamp,
            device_client(broker.port, "watcher", subscribe="plant/#") as watcher,
        ):
            await lamp.publish("state", b"online")
            await lamp.publish("telemetry/temp", b"21.5")
            await lamp.publish("telemetry/debug", b"noise")
            await lamp.publish("telemetry/alarm", b'{"fire": true}')
            await lamp.publish("telemetry/bin", b"\x00\xff")
            async with asyncio.timeout(WAIT):
                while not watcher.inbox:
                    await asyncio.sleep(0.02)
            assert watcher.inbox[0].topic.value == "plant/temps"
            assert watcher.inbox[0].payload == b"21.5"
            await eventually(lambda: len(outbox(store)) == 4)
        records = outbox(store)  # priority order: alarm (0), state (3), then telemetry (5)
        assert [(r["kind"], r.get("topic", "").rsplit("/", 1)[-1]) for r in records] == [
            ("telemetry", "alarm"),
            ("device-state", ""),
            ("telemetry", "temp"),
            ("telemetry", "bin"),
        ]
        assert records[1]["state"] == "online"
        assert records[3]["encoding"] == "base64"

    run(scenario)


def test_bad_input_through_the_broker_is_rejected_and_every_device_stays_served(broker, store):
    big = {"reported": {"x": "y" * 70_000}, "clientToken": "big"}

    async def scenario() -> None:
        async with (
            node(store, broker, [DeviceSpec("lamp"), DeviceSpec("fan")]) as layer,
            device_client(broker.port, "lamp") as lamp,
            device_client(broker.port, "fan") as fan,
        ):
            await lamp.request("twin/update", {"reported": {"ok": 1}})
            cases: list[tuple[Any, int, str | None]] = [
                (b"not json", 400, None),
                (b"\xff\xfe", 400, None),
                (b"[1]", 400, None),
                ({"reported": "x", "clientToken": "t"}, 400, "t"),
                ({"desired": {"a": 1}, "clientToken": "d"}, 403, "d"),
                (big, 413, "big"),
                ({"reported": _deep(40), "clientToken": "deep"}, 413, "deep"),
                (
                    b'{"clientToken":"n","reported":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
                    400,
                    "n",
                ),
            ]
            for body, code, token in cases:
                await lamp.publish("twin/update", body)
                error = await lamp.next_json("twin/update/rejected")
                assert (error["code"], error.get("clientToken")) == (code, token), error
            # Unknown device, misspelt operation, no device id at all.
            async with device_client(broker.port, "ghost") as ghost:
                verdict, error = await ghost.request(
                    "twin/update", {"reported": {}, "clientToken": "g"}
                )
                assert (verdict, error["code"], error["clientToken"]) == ("rejected", 404, "g")
            await fan.publish("twin/updte", {"reported": {}})
            assert (await fan.next_json("rejected"))["code"] == 404
            await fan.publish("", b"{}", topic="$edge/devices//twin/update")
            await eventually(lambda: layer.stats().get("uncorrelatable") == 1)
            # Nothing accepted was lost; both devices are still served.
            _, twin = await lamp.request("twin/get", {})
            assert twin["reported"] == {"ok": 1}
            verdict, _ = await fan.request("twin/update", {"reported": {"speed": 2}})
            assert verdict == "accepted"
            assert layer.stats()["rejected"] >= len(cases) + 1

    run(scenario)


def _deep(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(levels - 1):
        doc = {"k": doc}
    return doc


def test_a_broker_restart_keeps_twin_state_and_the_node_subscribes_again(broker, store):
    async def scenario() -> None:
        async with node(store, broker, [DeviceSpec("lamp", {"power": "on"})]) as layer:
            async with device_client(broker.port, "lamp") as lamp:
                await lamp.request("twin/update", {"reported": {"level": 1}})
            # The broker keeps nothing (persistence false): retained delta, sessions gone.
            await asyncio.to_thread(broker.restart)
            await eventually(lambda: layer.stats()["connects"] == 2)
            await layer.connected.wait()
            async with device_client(broker.port, "lamp") as lamp:
                # The node published the retained delta again on reconnecting ...
                assert await lamp.next_json("twin/delta") == {
                    "version": 1,
                    "delta": {"power": "on"},
                }
                # ... subscribed again, and the twin came from the store.
                verdict, reply = await lamp.request("twin/update", {"reported": {"power": "on"}})
                assert (verdict, reply["version"]) == ("accepted", 2)
                assert await lamp.next("twin/delta") == b""
                _, twin = await lamp.request("twin/get", {})
                assert twin["reported"] == {"level": 1, "power": "on"}
            assert layer.stats()["disconnects"] >= 1

    run(scenario)


def test_messages_sent_while_the_node_restarts_are_queued_by_the_broker_and_kept(broker, tmp_path):
    path = str(tmp_path / "node.db")

    async def scenario() -> None:
        first = Store(path)
        async with node(first, broker, [DeviceSpec("lamp")]):
            pass  # the node's persistent session now exists on the broker
        first.close()
        async with device_client(broker.port, "lamp") as lamp:
            # The node is down: the broker queues these for its session.
            await lamp.publish("telemetry/temp", b"19")
            await lamp.publish("twin/update", {"reported": {"mode": "eco"}, "clientToken": "q"})
            second = Store(path)
            try:
                async with node(second, broker, [DeviceSpec("lamp")]):
                    reply = await lamp.next_json("twin/update/accepted")
                    assert reply["clientToken"] == "q"
                    await eventually(lambda: len(outbox(second)) == 2)
                kinds = sorted(r["kind"] for r in outbox(second))
                assert kinds == ["telemetry", "twin"]
            finally:
                second.close()

    run(scenario)


def test_with_an_acl_a_device_cannot_touch_another_devices_twin(broker_factory, store):
    acl = (
        "pattern readwrite $edge/devices/%u/#\n"
        "\n"
        "user node\n"
        "topic readwrite $edge/#\n"
        "topic readwrite #\n"
    )
    secure = broker_factory(users={"node": "node-pw", "lamp": "lamp-pw", "fan": "fan-pw"}, acl=acl)
    devices = [DeviceSpec("lamp"), DeviceSpec("fan", {"speed": 3})]

    async def scenario() -> None:
        async with (
            node(store, secure, devices, username="node", password="node-pw") as layer,
            device_client(
                secure.port, "lamp", username="lamp", password="lamp-pw", subscribe="$edge/#"
            ) as lamp,
        ):
            # Device lamp writes fan's twin and asks for fan's twin: the broker drops both.
            await lamp.publish(
                "", {"reported": {"speed": 99}}, topic="$edge/devices/fan/twin/update"
            )
            await lamp.publish("", b"", topic="$edge/devices/fan/twin/get")
            # A barrier: lamp's own request is answered after those were dropped.
            verdict, _ = await lamp.request("twin/update", {"reported": {"on": True}})
            assert verdict == "accepted"
            assert layer.service.twin("fan")["reported"] == {}
            assert layer.service.twin("fan")["version"]["reported"] == 0
            # It cannot read fan's topics either (fan's retained delta exists).
            assert [m.topic.value for m in lamp.inbox if "/fan/" in m.topic.value] == []
            async with device_client(secure.port, "fan", username="fan", password="fan-pw") as fan:
                assert (await fan.next_json("twin/delta"))["delta"] == {"speed": 3}
        assert "Denied PUBLISH from device-lamp" in secure.log(tail=None)

    run(scenario)


def test_the_node_keeps_reconnecting_until_the_broker_is_there(broker_factory, store):
    broker = broker_factory()
    broker.stop()

    async def scenario() -> None:
        settings = MqttSettings(
            port=broker.port, client_id="late-node", backoff_base=0.05, backoff_cap=0.2
        )
        layer = DeviceLayer(store, settings, [DeviceSpec("lamp")], [])
        task = asyncio.get_running_loop().create_task(layer.run())
        try:
            await eventually(lambda: layer.stats().get("disconnects", 0) >= 3)
            await asyncio.to_thread(broker.start)
            async with asyncio.timeout(WAIT):
                await layer.connected.wait()
            async with device_client(broker.port, "lamp") as lamp:
                verdict, _ = await lamp.request("twin/get", {})
                assert verdict == "accepted"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    run(scenario)


def test_desired_devices_and_routes_change_while_the_node_runs(broker, store):
    async def scenario() -> None:
        async with (
            node(store, broker, [DeviceSpec("lamp")]) as layer,
            device_client(broker.port, "lamp") as lamp,
            device_client(broker.port, "heater") as heater,
        ):
            layer.set_desired("lamp", {"power": "on"})  # from the hub
            assert await lamp.next_json("twin/delta") == {"version": 1, "delta": {"power": "on"}}
            layer.set_desired("lamp", {"level": 2}, merge=True)
            assert (await lamp.next_json("twin/delta"))["version"] == 2
            layer.set_devices([DeviceSpec("lamp"), DeviceSpec("heater", {"target": 20})])
            assert (await heater.next_json("twin/delta"))["delta"] == {"target": 20}
            layer.set_routes([RouteSpec("plant/+/alarm", priority=0)])
            await eventually(lambda: "plant/+/alarm" in layer.subscriptions())
            await heater.publish("", b"smoke", topic="plant/hall/alarm")
            await eventually(
                lambda: any(r.get("topic") == "plant/hall/alarm" for r in outbox(store))
            )
            layer.set_devices([DeviceSpec("heater")])
            assert await lamp.next("twin/delta") == b""  # lamp is no longer served
            verdict, error = await lamp.request("twin/get", {})
            assert (verdict, error["code"]) == ("rejected", 404)

    run(scenario)


def test_the_documented_mosquitto_pub_and_sub_commands_work(broker, store):
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*args, "-h", "127.0.0.1", "-p", str(broker.port)],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=True,
        )

    async def scenario() -> None:
        async with node(store, broker, [DeviceSpec("lamp", {"fan": {"speed": 3}})]):
            sub = subprocess.Popen(
                [
                    "mosquitto_sub",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(broker.port),
                    "-v",
                    "-C",
                    "3",
                    "-W",
                    "5",
                    "-t",
                    "$edge/devices/lamp/twin/update/accepted",
                    "-t",
                    "$edge/devices/lamp/twin/get/accepted",
                    "-t",
                    "$edge/devices/lamp/twin/delta",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                await asyncio.sleep(0.3)  # let mosquitto_sub subscribe
                await asyncio.to_thread(
                    cli,
                    "mosquitto_pub",
                    "-q",
                    "1",
                    "-t",
                    "$edge/devices/lamp/twin/update",
                    "-m",
                    '{"reported": {"power": "on", "fan": {"speed": 2}}, "clientToken": "r-1"}',
                )
                await asyncio.sleep(0.2)
                await asyncio.to_thread(
                    cli,
                    "mosquitto_pub",
                    "-q",
                    "1",
                    "-t",
                    "$edge/devices/lamp/twin/get",
                    "-m",
                    '{"clientToken": "g-1"}',
                )
                out, _ = await asyncio.to_thread(sub.communicate, timeout=WAIT)
            finally:
                if sub.poll() is None:
                    sub.kill()
                    sub.wait(timeout=5)
        lines = dict(line.split(" ", 1) for line in out.splitlines())
        assert json.loads(lines["$edge/devices/lamp/twin/delta"]) == {
            "version": 1,
            "delta": {"fan": {"speed": 3}},
        }
        assert json.loads(lines["$edge/devices/lamp/twin/update/accepted"])["clientToken"] == "r-1"
        twin = json.loads(lines["$edge/devices/lamp/twin/get/accepted"])
        assert (twin["clientToken"], twin["delta"]) == ("g-1", {"fan": {"speed": 3}})

    run(scenario)


def test_the_node_reaches_the_broker_over_tls_and_checks_its_certificate(broker_factory, store):
    secure = broker_factory(tls=True)
    assert secure.tls_port is not None

    async def scenario() -> None:
        async with (
            node(
                store,
                secure,
                [DeviceSpec("lamp")],
                port=secure.tls_port,
                tls=True,
                ca_file=str(secure.ca_file),
            ),
            device_client(secure.port, "lamp") as lamp,  # the device on the plain listener
        ):
            verdict, _ = await lamp.request("twin/update", {"reported": {"on": True}})
            assert verdict == "accepted"
        # Without the CA the node refuses the broker's certificate and keeps retrying.
        settings = MqttSettings(
            port=secure.tls_port, tls=True, client_id="no-ca", backoff_base=0.05, backoff_cap=0.1
        )
        layer = DeviceLayer(store, settings, [], [])
        task = asyncio.get_running_loop().create_task(layer.run())
        try:
            await eventually(lambda: layer.stats().get("disconnects", 0) >= 2)
            assert not layer.connected.is_set()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    run(scenario)


def test_the_device_benchmark_runs_end_to_end(tmp_path):
    output = tmp_path / "devices.json"
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run(
        [sys.executable, str(root / "bench" / "bench_devices.py"), "--devices", "2",
         "--reports", "10", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    measured = json.loads(output.read_text())
    assert measured["accepted"] == measured["reports"] == 20
    assert measured["outbox_appends"] == 20


def test_messages_whose_uplink_could_not_be_stored_are_delivered_again(broker, store):
    """A batch commit failing other than by the outbox's full policy (here the first two:
    an I/O error) leaves the batch unacknowledged; the node reconnects, the broker delivers
    it again, and the twin change and the telemetry end up stored exactly as sent. (A port
    that changes ``commit`` gets every batch through it: the core's batch call is tested
    against a real failure below.)"""
    failures = [StoreError("disk I/O error"), StoreError("disk I/O error")]

    class Flaky(StoreCommit):
        def commit(
            self, twins: Sequence[tuple[str, bytes]], records: Sequence[OutRecord]
        ) -> list[int | None]:
            if failures:
                raise failures.pop()
            return super().commit(twins, records)

    async def scenario() -> None:
        settings = MqttSettings(
            port=broker.port, client_id="edgenode-test", backoff_base=0.05, backoff_cap=0.3
        )
        layer = DeviceLayer(store, settings, [DeviceSpec("lamp")], [], Flaky(store))
        task = asyncio.get_running_loop().create_task(layer.run())
        try:
            async with device_client(broker.port, "lamp") as lamp:
                await eventually(layer.connected.is_set)
                await lamp.publish("twin/update", {"reported": {"mode": "eco"}, "clientToken": "u"})
                await lamp.publish("telemetry/temp", b"19")
                reply = await lamp.next_json("twin/update/accepted")
                assert (reply["clientToken"], reply["version"]) == ("u", 1)
                await eventually(lambda: len(outbox(store)) == 2)
                assert layer.stats()["commit_failures"] == 2
                assert layer.stats()["connects"] == 3
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        records = sorted(outbox(store), key=lambda r: r["kind"])
        assert [r["kind"] for r in records] == ["telemetry", "twin"]
        assert records[0]["payload"] == "19"
        assert (records[1]["reported"], records[1]["version"]) == ({"mode": "eco"}, 1)
        stored = json.loads(store.get_twin("lamp") or b"{}")
        assert (stored["reported"], stored["version"]["reported"]) == ({"mode": "eco"}, 1)

    run(scenario)


def test_records_the_full_outbox_refuses_are_counted_while_the_rest_of_the_batch_lands(
    broker, tmp_path
):
    """Group commit keeps the per-record quota policy: a telemetry record larger than the
    outbox quota is dropped and counted, the report and the small telemetry of the same
    device are stored, and nothing is redelivered (no commit failure, one connect)."""
    store = Store(str(tmp_path / "small.db"), outbox_max_bytes=1000)

    async def scenario() -> None:
        async with (
            node(store, broker, [DeviceSpec("lamp")]) as layer,
            device_client(broker.port, "lamp") as lamp,
        ):
            await lamp.publish("telemetry/big", b"x" * 2000)
            await lamp.publish("telemetry/temp", b"19")
            verdict, reply = await lamp.request("twin/update", {"reported": {"on": True}})
            assert (verdict, reply["version"]) == ("accepted", 1)
            await eventually(lambda: layer.stats().get("uplink_rejected", 0) == 1)
            await eventually(lambda: len(outbox(store)) == 2)
            stats = layer.stats()
            assert (stats["connects"], stats.get("commit_failures", 0)) == (1, 0)

    try:
        run(scenario)
        assert sorted(record["kind"] for record in outbox(store)) == ["telemetry", "twin"]
        assert store.outbox_stats()["rejected"] == 1
        assert json.loads(store.get_twin("lamp") or b"{}")["reported"] == {"on": True}
    finally:
        store.close()


def test_a_batch_the_core_could_not_commit_is_delivered_again(broker, tmp_path):
    """The core's batch call (the hot path) meeting a real failure: another process
    holds the database's write lock past the busy timeout, so the batch's commit fails
    (StoreError "database is locked"). Nothing is acknowledged; the broker delivers the
    report again, the retry gets the lock once it is released, and the report is applied
    once, from the stored twin.
    (Another process: POSIX locks do not separate connections of one process that use
    two copies of SQLite, the extension's and Python's.)"""
    path = tmp_path / "locked.db"
    store = Store(str(path))
    blocker = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(path), str(LOCK_SECONDS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert blocker.stdin is not None
    assert blocker.stdout is not None

    async def scenario() -> None:
        async with (
            node(store, broker, [DeviceSpec("lamp")]) as layer,
            device_client(broker.port, "lamp") as lamp,
        ):
            blocker.stdin.write("lock\n")
            blocker.stdin.flush()
            assert blocker.stdout.readline().strip() == "locked"
            await lamp.publish("twin/update", {"reported": {"mode": "eco"}, "clientToken": "u"})
            await eventually(lambda: layer.stats().get("commit_failures", 0) == 1, 15)
            reply = await lamp.next_json("twin/update/accepted")
            assert (reply["clientToken"], reply["version"]) == ("u", 1)
            await eventually(lambda: len(outbox(store)) == 1)
            stats = layer.stats()
            assert stats["batch_fast"] >= 1  # the core handled it, not the port
            assert (stats["connects"], stats["uplink_errors"]) == (2, 1)

    try:
        run(scenario)
        records = outbox(store)
        assert [(r["kind"], r["reported"], r["version"]) for r in records] == [
            ("twin", {"mode": "eco"}, 1)
        ]
        stored = json.loads(store.get_twin("lamp") or b"{}")
        assert (stored["reported"], stored["version"]["reported"]) == ({"mode": "eco"}, 1)
    finally:
        blocker.kill()
        blocker.wait(timeout=10)
        store.close()


LOCK_SECONDS = 6.5
"""How long the lock holder keeps the write lock: longer than the store's busy timeout
(5 s, so the first commit fails), shorter than twice it (so the retry, waiting for the
lock, succeeds): exactly one failure however fast the node reconnects."""
LOCK_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
sys.stdin.readline()
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
"""


@pytest.mark.parametrize("window", [0.0, 0.5])
def test_a_commit_window_gathers_messages_into_one_commit(broker, store, window):
    """[store] commit_window: five telemetry messages 20 ms apart share one commit (one
    batch) when the window outlasts them; without a window each is committed as it comes.
    (The device's own PUBACK comes from the broker: the window delays only the node's.)"""
    spacing, count = 0.02, 5

    async def scenario() -> None:
        async with (
            node(store, broker, [DeviceSpec("lamp")], commit_window=window) as layer,
            device_client(broker.port, "lamp") as lamp,
        ):
            before = layer.counters["batches"]

            async def publish(n: int) -> None:
                await asyncio.sleep(n * spacing)
                await lamp.publish("telemetry/n", str(n).encode())

            await asyncio.gather(*(publish(n) for n in range(count)))
            await eventually(lambda: len(outbox(store)) == count)
            batches = layer.counters["batches"] - before
            if window:
                assert batches == 1, batches
            else:
                assert batches > 1, batches
        assert sorted(int(r["payload"]) for r in outbox(store)) == list(range(count))

    run(scenario)
