"""Node links against a real ``edgehub serve``: targeting, resume, acks, uplink dedupe,
authentication, admission control, readiness, hostile clients and restarts. The node side
is ``SimNode``: the real NodeProtocol over a real websockets client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from typing import Any

import cbor2
from edgehub.simnode import SimNode
from websockets.asyncio.client import connect

from edgenode.protocol import (
    ChangesReceived,
    SnapshotReceived,
    UplinkRecord,
    encode_frame,
)
from edgenode.protocol.frames import HelloFrame

WAIT = 5.0

DEVICE = """
apiVersion: edgenode.io/v1
kind: Device
metadata: {{name: {name}}}
spec: {{node: {node}, desired: {{power: "on"}}}}
"""
CONFIG = """
apiVersion: edgenode.io/v1
kind: Config
metadata: {{name: {name}}}
spec: {{data: {{k: "{value}"}}, nodeSelector: "{selector}"}}
"""
NODE = """
apiVersion: edgenode.io/v1
kind: Node
metadata: {{name: {name}, labels: {labels}}}
"""


async def start(node: SimNode) -> asyncio.Task[Any]:
    node.welcomed.clear()  # set by a previous connection
    task = asyncio.create_task(node.run_once())
    async with asyncio.timeout(WAIT):
        await node.welcomed.wait()
    return task


async def stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def sync_once(hub: Any, token: str, name: str, revision: int) -> SimNode:
    """Connect a simulated node, wait until it has ``revision``, disconnect."""

    async def scenario() -> SimNode:
        node = SimNode(hub.link, token, name)
        task = await start(node)
        await node.wait_until(lambda: node.revision == revision)
        await stop(task)
        return node

    return asyncio.run(scenario())


def keys(node: SimNode) -> set[str]:
    return set(node.desired)


def wait_for(predicate: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_each_node_receives_exactly_the_resources_that_target_it(hub):
    token_a = hub.node_add("a", {"env": "prod"})
    token_b = hub.node_add("b", {"env": "dev"})
    status, _ = hub.apply(
        DEVICE.format(name="da", node="a")
        + "---"
        + DEVICE.format(name="db", node="b")
        + "---"
        + CONFIG.format(name="prod", value="1", selector="env=prod")
    )
    assert status == 200

    async def scenario() -> None:
        a, b = SimNode(hub.link, token_a, "a"), SimNode(hub.link, token_b, "b")
        tasks = [await start(a), await start(b)]
        await a.wait_until(lambda: len(a.desired) == 3)
        await b.wait_until(lambda: len(b.desired) == 2)
        assert keys(a) == {"Node/default/a", "Device/default/da", "Config/default/prod"}
        assert keys(b) == {"Node/default/b", "Device/default/db"}
        # A live change for everyone, then a deletion.
        hub.apply(CONFIG.format(name="all", value="x", selector=""))
        await a.wait_until(lambda: "Config/default/all" in a.desired)
        await b.wait_until(lambda: "Config/default/all" in b.desired)
        hub.call("DELETE", "/v1/devices/da")
        await a.wait_until(lambda: "Device/default/da" not in a.desired)
        await b.wait_until(lambda: b.revision == a.revision)
        assert keys(b) == {"Node/default/b", "Device/default/db", "Config/default/all"}
        for task in tasks:
            await stop(task)

    asyncio.run(scenario())


def test_a_label_change_delivers_what_starts_and_stops_matching(hub):
    token = hub.node_add("a", {"env": "prod"})
    hub.apply(CONFIG.format(name="p", value="1", selector="env=prod"))
    hub.apply(CONFIG.format(name="d", value="1", selector="env=dev"))

    async def scenario() -> None:
        a = SimNode(hub.link, token, "a")
        task = await start(a)
        await a.wait_until(lambda: "Config/default/p" in a.desired)
        assert "Config/default/d" not in a.desired
        hub.apply(NODE.format(name="a", labels="{env: dev}"))
        await a.wait_until(lambda: "Config/default/d" in a.desired)
        assert "Config/default/p" not in a.desired
        assert a.desired["Node/default/a"][1]["metadata"]["labels"] == {"env": "dev"}
        # A selector change of the Config itself is a plain tombstone.
        hub.apply(CONFIG.format(name="d", value="1", selector="env=none"))
        await a.wait_until(lambda: "Config/default/d" not in a.desired)
        await stop(task)

    asyncio.run(scenario())


def test_a_node_resumes_from_its_revision_and_gets_only_later_changes(hub):
    token = hub.node_add("a")
    hub.apply(CONFIG.format(name="c1", value="1", selector=""))

    async def scenario() -> None:
        a = SimNode(hub.link, token, "a")
        task = await start(a)
        await a.wait_until(lambda: len(a.desired) == 2)
        await stop(task)
        resumed_from = a.revision
        hub.apply(CONFIG.format(name="c2", value="2", selector=""))
        hub.call("DELETE", "/v1/configs/c1")
        a.events.clear()
        task = await start(a)
        await a.wait_until(lambda: "Config/default/c2" in a.desired)
        first = next(e for e in a.events if isinstance(e, ChangesReceived | SnapshotReceived))
        assert isinstance(first, ChangesReceived)
        assert [c.key for c in first.changes] == ["Config/default/c2", "Config/default/c1"]
        assert all(c.revision > resumed_from for c in first.changes)
        assert keys(a) == {"Node/default/a", "Config/default/c2"}
        await stop(task)

    asyncio.run(scenario())


def test_a_node_behind_the_compacted_log_gets_a_snapshot(hub_factory):
    hub = hub_factory("--log-keep", "1", "--housekeeping", "0.1")
    token = hub.node_add("a")

    async def scenario() -> None:
        a = SimNode(hub.link, token, "a")
        task = await start(a)
        await a.wait_until(lambda: a.revision == 1)
        await stop(task)
        for i in range(4):
            hub.apply(CONFIG.format(name=f"c{i}", value=i, selector=""))
        hub.call("DELETE", "/v1/configs/c0")
        await asyncio.sleep(0.5)  # housekeeping compacts the log to the last revision
        a.events.clear()
        task = await start(a)
        await a.wait_until(lambda: len(a.desired) == 4)
        first = next(e for e in a.events if isinstance(e, ChangesReceived | SnapshotReceived))
        assert isinstance(first, SnapshotReceived)
        assert keys(a) == {"Node/default/a"} | {f"Config/default/c{i}" for i in (1, 2, 3)}
        await stop(task)

    asyncio.run(scenario())


def test_the_acked_revision_is_recorded_per_node_and_survives_a_restart(hub):
    token_a = hub.node_add("a")
    hub.node_add("b")
    hub.apply(CONFIG.format(name="c", value="1", selector=""))
    sync_once(hub, token_a, "a", 3)
    wait_for(lambda: hub.call("GET", "/v1/nodes/a")[1]["status"]["revision"] == 3)
    assert hub.call("GET", "/v1/nodes/b")[1]["status"]["revision"] == 0
    time.sleep(0.6)  # acks are persisted in batches
    hub.stop()
    hub.start()
    assert hub.call("GET", "/v1/nodes/a")[1]["status"]["revision"] == 3


def test_a_node_whose_store_restarted_numbering_is_not_dropped_as_duplicates(hub):
    """A restored backup or a new node.db numbers its outbox from a lower sequence again:
    the hello's next sequence tells the hub to forget what it saw at and above it."""
    token = hub.node_add("a")
    hub.apply(DEVICE.format(name="d", node="a"))

    def telemetry(seq: int, value: str) -> UplinkRecord:
        body = {"kind": "telemetry", "device": "d", "data": {"v": value}}
        return UplinkRecord(seq, 1, json.dumps(body).encode())

    async def scenario() -> None:
        a = SimNode(hub.link, token, "a", next_seq=1)
        task = await start(a)
        await a.send_uplink([telemetry(1, "old-1"), telemetry(2, "old-2"), telemetry(3, "old-3")])
        await a.wait_until(lambda: a.acked_uplink >= {1, 2, 3})
        await stop(task)
        a.next_seq, a.acked_uplink = 4, set()  # the same store, a lost ack: a resend
        task = await start(a)
        await a.send_uplink([telemetry(3, "old-3")])
        await a.wait_until(lambda: 3 in a.acked_uplink)
        await stop(task)
        # The node's store was restored from a backup taken when next_seq was 2.
        a.next_seq, a.acked_uplink = 2, set()
        task = await start(a)
        await a.send_uplink([telemetry(2, "new-2"), telemetry(3, "new-3")])
        await a.wait_until(lambda: a.acked_uplink >= {2, 3})
        await stop(task)

    asyncio.run(scenario())
    _, body = hub.call("GET", "/v1/devices/d/telemetry")
    values = [item["record"]["data"]["v"] for item in body["items"]]
    assert values == ["old-1", "old-2", "old-3", "new-2", "new-3"]


def test_node_status_written_in_batches_is_flushed_when_the_hub_stops(hub):
    sync_once(hub, hub.node_add("a"), "a", 1)
    hub.stop()  # at once: no batch period has to pass for the status to be on disk
    hub.start()
    status = hub.call("GET", "/v1/nodes/a")[1]["status"]
    assert status["version"] == "simnode 1"
    assert status["lastSeen"] is not None
    assert status["state"] == "NotReady"


def test_uplink_is_persisted_deduplicated_by_sequence_then_acked(hub):
    token = hub.node_add("a")
    hub.apply(DEVICE.format(name="d", node="a"))

    def telemetry(seq: int) -> UplinkRecord:
        body = {"kind": "telemetry", "device": "d", "data": {"t": seq}}
        return UplinkRecord(seq, 1, json.dumps(body).encode())

    twin = cbor2.dumps({"kind": "twin", "device": "d", "reported": {"power": "on"}, "version": 4})
    state = cbor2.dumps({"kind": "device-state", "device": "d", "state": "online"})
    # The node daemon's envelope: compact JSON with the fields in "body".
    status = json.dumps(
        {
            "v": 1,
            "kind": "status",
            "node": "a",
            "ts": 1.5,
            "body": {"arch": "aarch64", "version": "edgenode 0.1", "outbox": {"messages": 7}},
        }
    ).encode()

    async def scenario() -> None:
        a = SimNode(hub.link, token, "a")
        task = await start(a)
        await a.send_uplink([telemetry(1), telemetry(2), UplinkRecord(3, 5, twin)])
        await a.wait_until(lambda: a.acked_uplink >= {1, 2, 3})
        await stop(task)
        task = await start(a)  # a resend after a lost ack: same sequences again
        await a.send_uplink([telemetry(2), telemetry(3), UplinkRecord(4, 5, state)])
        await a.send_uplink([UplinkRecord(5, 9, status)])
        await a.wait_until(lambda: a.acked_uplink >= {4, 5})
        await stop(task)

    asyncio.run(scenario())
    _, body = hub.call("GET", "/v1/devices/d/telemetry")
    assert [item["record"]["data"]["t"] for item in body["items"]] == [1, 2]
    _, device = hub.call("GET", "/v1/devices/d")
    assert device["status"]["reported"] == {"power": "on"}
    assert device["status"]["delta"] == {}
    assert device["status"]["versions"]["reported"] == 4
    assert device["status"]["state"] == "online"
    _, node = hub.call("GET", "/v1/nodes/a")
    assert node["status"]["arch"] == "aarch64"
    assert node["status"]["outbox"] == {"messages": 7}
    assert node["status"]["metrics"]["arch"] == "aarch64"
    _, metrics = hub.call("GET", "/metrics")
    assert 'edgehub_uplink_records_total{result="duplicate"} 2.0' in metrics


def test_a_newer_twin_record_replaces_reported_and_an_older_one_is_ignored(hub):
    token = hub.node_add("a")
    hub.apply(DEVICE.format(name="d", node="a"))

    def twin(seq: int, version: int, reported: dict[str, object]) -> UplinkRecord:
        body = {"device": "d", "reported": reported, "version": version, "ack": None}
        envelope = {"v": 1, "kind": "twin", "node": "a", "ts": 1.0, "body": body}
        return UplinkRecord(seq, 3, json.dumps(envelope).encode())

    async def scenario() -> None:
        a = SimNode(hub.link, token, "a")
        task = await start(a)
        await a.send_uplink([twin(1, 1, {"power": "on", "fan": 2})])
        # Version 2: the device deleted "fan" (the node sends the full document).
        await a.send_uplink([twin(2, 2, {"power": "on"})])
        # An older record arriving late (another priority) must not bring "fan" back.
        await a.send_uplink([twin(3, 1, {"power": "off", "fan": 2})])
        await a.wait_until(lambda: a.acked_uplink >= {1, 2, 3})
        await stop(task)

    asyncio.run(scenario())
    _, device = hub.call("GET", "/v1/devices/d")
    assert device["status"]["reported"] == {"power": "on"}
    assert device["status"]["versions"]["reported"] == 2


def test_missing_wrong_and_revoked_tokens_are_refused_in_the_handshake(hub):
    token = hub.node_add("a")

    async def scenario() -> None:
        for bad, status, reason in [
            ("", 401, "missing bearer token"),
            ("ent_not-a-token", 401, "unknown token"),
        ]:
            result = await SimNode(hub.link, bad, "a").run_once()
            assert result.http_status == status
            assert reason in result.http_body
        a = SimNode(hub.link, token, "a")
        task = asyncio.create_task(a.run_once())
        async with asyncio.timeout(WAIT):
            await a.welcomed.wait()
        hub.call("POST", "/v1/nodes/a/revoke", {})
        result = await asyncio.wait_for(task, WAIT)
        assert result.close_code == 4003
        again = await SimNode(hub.link, token, "a").run_once()
        assert again.http_status == 403
        assert "revoked" in again.http_body

    asyncio.run(scenario())
    _, metrics = hub.call("GET", "/metrics")
    assert 'edgehub_rejected_connections_total{reason="revoked"} 1.0' in metrics


def test_node_a_can_neither_read_nor_change_node_bs_resources(hub):
    token_a = hub.node_add("a")
    hub.node_add("b")
    hub.apply(DEVICE.format(name="db", node="b"))

    async def scenario() -> None:
        impostor = SimNode(hub.link, token_a, "b")  # A's token, B's name
        result = await impostor.run_once()
        assert result.close_code == 4003
        assert impostor.desired == {}
        a = SimNode(hub.link, token_a, "a")
        task = await start(a)
        await a.wait_until(lambda: a.revision == 3)
        assert "Device/default/db" not in a.desired
        forged = {"kind": "twin", "device": "db", "reported": {"power": "hacked"}}
        await a.send_uplink([UplinkRecord(1, 5, cbor2.dumps(forged))])
        await a.wait_until(lambda: 1 in a.acked_uplink)
        await stop(task)

    asyncio.run(scenario())
    _, device = hub.call("GET", "/v1/devices/db")
    assert device["status"]["reported"] == {}
    _, metrics = hub.call("GET", "/metrics")
    assert 'edgehub_uplink_records_total{result="rejected"} 1.0' in metrics


def test_over_the_handshake_cap_nodes_are_told_to_retry_after_a_jittered_delay(hub_factory):
    hub = hub_factory("--max-handshakes", "0", "--retry-after", "0.5")
    token = hub.node_add("a")

    async def scenario() -> list[float]:
        delays = []
        for _ in range(4):
            result = await SimNode(hub.link, token, "a").run_once()
            assert result.close_code == 1013
            assert result.retry_after is not None
            delays.append(result.retry_after)
        return delays

    delays = asyncio.run(scenario())
    assert all(d >= 0.5 for d in delays)  # never sooner than the base delay
    assert delays[0] <= 1.0  # nobody waiting yet: base plus up to 100 % jitter
    assert len(set(delays)) > 1  # jitter
    _, metrics = hub.call("GET", "/metrics")
    assert 'edgehub_rejected_connections_total{reason="retry-after"} 4.0' in metrics


def test_a_node_is_ready_while_heard_and_not_ready_after_the_deadline(hub):
    token = hub.node_add("a")
    assert hub.call("GET", "/v1/nodes/a")[1]["status"]["state"] == "NotReady"

    async def scenario() -> None:
        # A raw client: says hello, then goes silent (no pings) without closing.
        async with connect(
            hub.link, additional_headers={"Authorization": f"Bearer {token}"}, ping_interval=None
        ) as ws:
            await ws.send(encode_frame(HelloFrame(1, "a", "raw", 0, 1 << 20)))
            await ws.recv()
            _, node = await asyncio.to_thread(hub.call, "GET", "/v1/nodes/a")
            assert node["status"]["state"] == "Ready"
            assert node["status"]["lastSeen"] is not None
            await asyncio.sleep(1.2)  # deadline: 3 x 0.2 s heartbeat
            _, node = await asyncio.to_thread(hub.call, "GET", "/v1/nodes/a")
            assert node["status"]["state"] == "NotReady"
            assert node["status"]["lastSeen"] is not None

    asyncio.run(scenario())


def test_garbage_frames_close_only_that_link_and_are_counted(hub):
    token_a = hub.node_add("a")
    token_b = hub.node_add("b")

    async def scenario() -> None:
        b = SimNode(hub.link, token_b, "b")
        task = await start(b)
        async with connect(
            hub.link, additional_headers={"Authorization": f"Bearer {token_a}"}, ping_interval=None
        ) as ws:
            await ws.send(encode_frame(HelloFrame(1, "a", "raw", 0, 1 << 20)))
            await ws.recv()
            await ws.send(b"\xff\x00garbage")
            with contextlib.suppress(Exception):
                while True:
                    await asyncio.wait_for(ws.recv(), WAIT)
            assert ws.close_code == 1002
        async with connect(
            hub.link, additional_headers={"Authorization": f"Bearer {token_a}"}, ping_interval=None
        ) as ws:
            await ws.send("text is not the protocol")
            with contextlib.suppress(Exception):
                while True:
                    await asyncio.wait_for(ws.recv(), WAIT)
            assert ws.close_code in (1002, 1003)
        hub.apply(CONFIG.format(name="after", value="1", selector=""))
        await b.wait_until(lambda: "Config/default/after" in b.desired)
        await stop(task)

    asyncio.run(scenario())
    _, metrics = hub.call("GET", "/metrics")
    assert "edgehub_protocol_violations_total 2.0" in metrics


def test_a_slow_loris_handshake_is_cut_off_without_affecting_other_nodes(hub):
    token = hub.node_add("a")
    host, port = hub.listen.rsplit(":", 1)
    loris = socket.create_connection((host, int(port)))
    loris.sendall(b"GET /v1/connect HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()

    async def scenario() -> None:
        a = SimNode(hub.link, token, "a")
        task = await start(a)
        await a.wait_until(lambda: a.revision == 1)
        await stop(task)

    asyncio.run(scenario())
    loris.settimeout(10)
    try:
        while loris.recv(1024):
            pass
    except ConnectionResetError:
        pass
    assert time.monotonic() - started < 6  # handshake timeout is 2 s
    loris.close()


def test_after_a_hub_restart_nodes_reconnect_and_resume(hub):
    token = hub.node_add("a")
    hub.apply(CONFIG.format(name="c1", value="1", selector=""))

    async def scenario() -> None:
        a = SimNode(hub.link, token, "a")
        task = await start(a)
        await a.wait_until(lambda: len(a.desired) == 2)
        await asyncio.to_thread(hub.stop)
        result = await asyncio.wait_for(task, WAIT)
        assert result.close_code in (1001, 1006, None)
        await asyncio.to_thread(hub.start)
        hub.apply(CONFIG.format(name="c2", value="2", selector=""))
        a.events.clear()
        task = await start(a)
        await a.wait_until(lambda: "Config/default/c2" in a.desired)
        first = next(e for e in a.events if isinstance(e, ChangesReceived | SnapshotReceived))
        assert isinstance(first, ChangesReceived)
        assert [c.key for c in first.changes] == ["Config/default/c2"]
        await stop(task)

    asyncio.run(scenario())
    wait_for(lambda: hub.call("GET", "/v1/nodes/a")[1]["status"]["state"] == "NotReady")


def metric(hub, name: str) -> float:
    _, metrics = hub.call("GET", "/metrics", token="")
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_a_stolen_token_cannot_push_a_live_node_off_its_link(hub_factory):
    # A heartbeat of 5 s: the real node is heard from often enough to count as live.
    hub = hub_factory("--heartbeat", "5")
    token = hub.node_add("a")

    async def scenario() -> None:
        real = SimNode(hub.link, token, "a")
        task = await start(real)
        await real.wait_until(lambda: real.revision == 1)
        for _ in range(5):  # the thief reconnects in a loop
            thief = SimNode(hub.link, token, "a")
            result = await asyncio.wait_for(thief.run_once(), WAIT)
            assert result.retry_after is not None, result
            assert result.close_code == 1013
            assert not task.done()  # the real node was never replaced
        hub.apply(CONFIG.format(name="later", value="1", selector=""))
        await real.wait_until(lambda: "Config/default/later" in real.desired)
        await stop(task)

    asyncio.run(scenario())
    assert metric(hub, 'edgehub_link_takeovers_total{result="refused"}') == 5
    assert metric(hub, 'edgehub_link_takeovers_total{result="replaced"}') == 0
    log = (hub.data / "hub.log").read_text()
    refusals = [line for line in log.splitlines() if "refused a connection from 127.0.0.1:" in line]
    assert refusals, log
    assert "its link from 127.0.0.1:" in refusals[0]
    assert "edgectl node revoke a" in refusals[0]


def test_a_dead_link_is_taken_over_by_the_node_reconnecting(hub_factory):
    hub = hub_factory("--heartbeat", "5")
    token = hub.node_add("a")

    async def scenario() -> None:
        # The old link: hello sent, then the peer vanishes without closing (reads nothing,
        # answers no ping), as when a node's network changes under it.
        ghost = SimNode(hub.link, token, "a")
        ghost_task = await start(ghost)
        assert ghost.ws is not None
        ghost.ws.transport.pause_reading()
        started = time.monotonic()
        node = SimNode(hub.link, token, "a")
        task = await start(node)  # welcomed: the old link did not answer the ping
        assert time.monotonic() - started < WAIT
        await node.wait_until(lambda: node.revision == 1)
        await stop(task)
        ghost.ws.transport.abort()
        await stop(ghost_task)

    asyncio.run(scenario())
    assert metric(hub, 'edgehub_link_takeovers_total{result="replaced"}') == 1
    log = (hub.data / "hub.log").read_text()
    assert "did not answer a ping" in log
    assert "replaces its link from 127.0.0.1:" in log
