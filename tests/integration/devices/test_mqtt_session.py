"""The node's own MQTT 3.1.1 client (edgenode.devices.mqtt) on real sockets: against a
real Mosquitto (round trips, acknowledgements after the fact with a persistent session,
refusals, ACLs, oversized messages, flow control), through a userspace TCP proxy that can
freeze the link (keep-alive), and against a hostile broker (a small asyncio server that
sends crafted bytes), alone and under the DeviceLayer."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mqtt_broker import WAIT, Broker, free_port
from test_device_bus import node

sys.path.insert(0, str(Path(__file__).parents[1]))  # the node tests' fault proxy
from node.fakehub import Background, Proxy

from edgenode.devices import DeviceLayer, DeviceSpec, MqttSettings
from edgenode.devices import mqtt as mqtt_module
from edgenode.devices.mqtt import (
    Message,
    MqttError,
    MqttOptions,
    MqttRefused,
    MqttSession,
)
from edgenode.store import Store

pytestmark = pytest.mark.timeout(30)

READ_SIZE = 256 * 1024
"""The most bytes asyncio's socket transport reads at once (one data_received call)."""


def run(scenario: Callable[[], Awaitable[Any]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=20))


def options(port: int, client_id: str, **extra: Any) -> MqttOptions:
    extra.setdefault("clean_session", True)
    return MqttOptions("127.0.0.1", port, client_id, **extra)


async def eventually(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def receive(
    session: MqttSession, count: int, timeout: float = WAIT
) -> tuple[list[Message], list[int]]:
    """Exactly ``count`` messages (waiting for them), with the indices of retained ones."""
    messages: list[Message] = []
    retained: list[int] = []
    async with asyncio.timeout(timeout):
        while len(messages) < count:
            await session.wait_message()
            batch = session.take(count - len(messages))
            retained += [len(messages) + index for index in batch.retained]
            messages += batch.messages
    return messages, retained


async def receive_until(
    session: MqttSession, last_topic: str, timeout: float = WAIT
) -> list[Message]:
    """Every message up to and including the first on ``last_topic`` (a marker)."""
    messages: list[Message] = []
    async with asyncio.timeout(timeout):
        while not messages or messages[-1][0] != last_topic:
            await session.wait_message()
            messages += session.take(1).messages
    return messages


def acks(messages: list[Message]) -> list[tuple[int, int]]:
    return [(packet_id, qos) for _, _, qos, packet_id in messages if qos]


async def barrier(session: MqttSession) -> None:
    """The broker has handled everything the session sent before (it answers in order)."""
    assert await session.subscribe([("barrier/none", 0)]) == [0]


@pytest.fixture
def broker_factory(tmp_path) -> Iterator[Callable[..., Broker]]:
    started: list[Broker] = []

    def make(
        users: dict[str, str] | None = None, acl: str = "", extra: list[str] | None = None
    ) -> Broker:
        directory = tmp_path / f"broker{len(started)}"
        directory.mkdir()
        broker = Broker(directory, free_port(), users or {}, acl, extra=extra or [])
        started.append(broker)
        broker.start()
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


# ------------------------------------------------------------- network helpers ----


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One MQTT packet: (first byte, body)."""
    first = (await reader.readexactly(1))[0]
    length = shift = 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, await reader.readexactly(length)


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class HostileBroker:
    """A broken or hostile broker: every connection is answered by ``script``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.port = 0
        self.connections = 0
        self.connects: list[bytes] = []
        """The body of every CONNECT read with :meth:`expect_connect`."""
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def expect_connect(self, reader: asyncio.StreamReader) -> None:
        first, body = await read_packet(reader)
        assert first == 0x10, f"not a CONNECT: {first:#x}"
        self.connects.append(body)

    async def __aenter__(self) -> HostileBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await self.script(reader, writer)
            await reader.read()  # hold the connection until the client ends it
        writer.transport.abort()


CONNACK_OK = b"\x20\x02\x00\x00"
PUBLISH_QOS_3 = b"\x36\x05\x00\x01a\x00\x01"
FIVE_BYTE_LENGTH = b"\x30\xff\xff\xff\xff\x01"


# ------------------------------------------------------------ a real Mosquitto ----


def test_subscribe_publish_round_trip_in_order_with_retained_flags(broker):
    async def scenario() -> None:
        async with (
            await MqttSession.connect(options(broker.port, "publisher")) as publisher,
        ):
            assert publisher.session_present is False
            # Retained before anyone subscribes: they come with the flag on subscribing.
            await publisher.publish(
                [
                    ("t/ret/1", b"first", True, 1),
                    ("t/ret/2", b"second", True, 0),
                    ("t/ret/3", b"third", True, 1),
                ]
            )
            async with await MqttSession.connect(options(broker.port, "reader")) as reader:
                assert await reader.subscribe([("t/#", 1), ("low/#", 0)]) == [1, 0]
                # Taken one at a time: the retained marks follow the split of a chunk.
                got: list[Message] = []
                for _ in range(3):
                    messages, retained = await receive(reader, 1)
                    assert retained == [0]
                    got += messages
                assert sorted((t, p, q) for t, p, q, _ in got) == [
                    ("t/ret/1", b"first", 1),
                    ("t/ret/2", b"second", 0),
                    ("t/ret/3", b"third", 1),
                ]
                assert all(pid > 0 for _, _, qos, pid in got if qos == 1)
                reader.ack(acks(got))

                # Live messages, QoS 0 and 1, one retained: in order, none marked retained
                # (MQTT 3.1.1: a message matching an established subscription is sent with
                # RETAIN 0, however it was published).
                await publisher.publish(
                    [
                        ("t/a", b"0", False, 0),
                        ("t/b", b"1", False, 1),
                        ("t/c", b"2", True, 1),
                        ("low/d", b"3", False, 1),  # granted QoS 0: delivered at QoS 0
                        ("elsewhere", b"x", False, 1),  # matches no filter
                    ]
                )
                await reader.publish([("t/self", b"4", False, 1)])  # to itself
                messages, retained = await receive(reader, 5)
                assert [(t, p, q) for t, p, q, _ in messages] == [
                    ("t/a", b"0", 0),
                    ("t/b", b"1", 1),
                    ("t/c", b"2", 1),
                    ("low/d", b"3", 0),
                    ("t/self", b"4", 1),
                ]
                assert retained == []
                ids = [pid for _, _, qos, pid in messages if qos == 1]
                assert all(1 <= pid <= 0xFFFF for pid in ids)
                assert len(set(ids)) == 3
                assert [pid for _, _, qos, pid in messages if qos == 0] == [0, 0]
                reader.ack(acks(messages))
                await barrier(reader)
                assert reader.queued() == 0
                assert reader.take(10).messages == []

            # A new subscriber gets the retained ones (t/c now too), flagged.
            async with await MqttSession.connect(options(broker.port, "late")) as late:
                await late.subscribe([("t/c", 1)])
                messages, retained = await receive(late, 1)
                assert [(t, p) for t, p, _, _ in messages] == [("t/c", b"2")]
                assert retained == [0]

    run(scenario)


def test_unacknowledged_messages_come_again_after_a_reconnect_and_acked_ones_do_not(broker):
    async def scenario() -> None:
        persistent = options(broker.port, "persistent-node", clean_session=False)
        async with await MqttSession.connect(options(broker.port, "pub")) as publisher:
            first = await MqttSession.connect(persistent)
            assert first.session_present is False
            assert await first.subscribe([("p/#", 1)]) == [1]
            await publisher.publish([(f"p/{n}", b"%d" % n, False, 1) for n in range(4)])
            messages, _ = await receive(first, 4)
            assert [t for t, _, _, _ in messages] == ["p/0", "p/1", "p/2", "p/3"]
            first.ack(acks([messages[0], messages[2]]))  # p/1 and p/3 are not acknowledged
            await barrier(first)  # the broker has the PUBACKs
            first.abort()
            with pytest.raises(MqttError, match="aborted"):
                await first.wait_message()

            second = await MqttSession.connect(persistent)
            assert second.session_present is True
            await publisher.publish([("p/end", b"", False, 1)])
            again = await receive_until(second, "p/end")
            assert [(t, p) for t, p, _, _ in again] == [
                ("p/1", b"1"),
                ("p/3", b"3"),
                ("p/end", b""),
            ]
            second.ack(acks(again))
            await barrier(second)
            await second.close()

            third = await MqttSession.connect(persistent)
            assert third.session_present is True
            await publisher.publish([("p/end2", b"", False, 1)])
            assert [t for t, _, _, _ in await receive_until(third, "p/end2")] == ["p/end2"]
            await third.close()

    run(scenario)


def test_acknowledgements_written_just_before_close_reach_the_broker(broker_factory):
    """Closing with messages still unread makes the kernel send a reset, and Mosquitto
    then dropped the connection without reading the PUBACKs written just before (every
    time, measured): after a graceful stop the node got its last batch again. close()
    waits for the broker to have read them (a barrier), so only the unacknowledged
    messages come again."""
    broker = broker_factory(extra=["max_inflight_messages 0"])  # unread data piles up
    persistent = options(broker.port, "closing", clean_session=False)

    async def scenario() -> None:
        async with await MqttSession.connect(options(broker.port, "pub")) as publisher:
            session = await MqttSession.connect(persistent)
            await session.subscribe([("c/#", 1)])
            for round_ in range(3):
                await publisher.publish(
                    [("c/x", b"%d-%04d" % (round_, n), False, 1) for n in range(2000)]
                )
                await session.wait_message()
                taken = session.take(50).messages
                session.ack(acks(taken))
                await session.close()  # the rest of the 2,000 is unread
                session = await MqttSession.connect(persistent)
                rest: list[Message] = []
                while len(rest) < 2000 - len(taken):
                    async with asyncio.timeout(WAIT):
                        await session.wait_message()
                    batch = session.take(2000).messages
                    session.ack(acks(batch))
                    rest += batch
                payloads = [p for _, p, _, _ in taken + rest]
                assert payloads == [b"%d-%04d" % (round_, n) for n in range(2000)]
            await barrier(session)
            assert session.queued() == 0
            await session.close()

    run(scenario)


def test_a_refused_connect_names_the_reason_and_the_right_password_connects(broker_factory):
    secure = broker_factory(users={"node": "node-pw"}, acl="user node\ntopic readwrite #\n")

    async def scenario() -> None:
        with pytest.raises(MqttRefused) as refused:
            await MqttSession.connect(options(secure.port, "n1", username="node", password="wrong"))
        assert refused.value.code in (4, 5)
        assert str(refused.value).endswith(
            {4: "bad user name or password", 5: "not authorized"}[refused.value.code]
        )
        with pytest.raises(MqttRefused) as anonymous:
            await MqttSession.connect(options(secure.port, "n2"))
        assert anonymous.value.code in (4, 5)

        async with await MqttSession.connect(
            options(secure.port, "n3", username="node", password="node-pw")
        ) as session:
            assert await session.subscribe([("a/#", 1)]) == [1]
            await session.publish([("a/b", b"hi", False, 1)])
            messages, _ = await receive(session, 1)
            assert messages[0][:2] == ("a/b", b"hi")

        # Nothing listening: a quick MqttError, not a refusal.
        started = time.monotonic()
        with pytest.raises(MqttError, match="cannot connect") as error:
            await MqttSession.connect(options(free_port(), "n4"))
        assert not isinstance(error.value, MqttRefused)
        assert time.monotonic() - started < 2

    run(scenario)


def test_a_subscription_the_acl_denies_is_granted_but_delivers_nothing(broker_factory):
    acl = "user node\ntopic readwrite open/#\n\nuser writer\ntopic readwrite #\n"
    secure = broker_factory(users={"node": "node-pw", "writer": "writer-pw"}, acl=acl)

    async def scenario() -> None:
        async with (
            await MqttSession.connect(
                options(secure.port, "acl-node", username="node", password="node-pw")
            ) as session,
            await MqttSession.connect(
                options(secure.port, "acl-writer", username="writer", password="writer-pw")
            ) as writer,
        ):
            # Mosquitto 2.0.11 with an acl_file does NOT refuse the SUBSCRIBE (no 0x80 in
            # the SUBACK for MQTT 3.1.1): it grants it and checks read access per message,
            # silently filtering what the ACL denies. The node's "subscriptions_refused"
            # counter therefore stays 0 with this broker; what the ACL hides never arrives.
            codes = await session.subscribe([("open/#", 1), ("secret/#", 1), ("open/x", 0)])
            assert codes == [1, 1, 0]
            await writer.publish([("secret/z", b"no", False, 1), ("open/y", b"ok", False, 1)])
            await writer.publish([("secret/z", b"no", False, 1), ("open/end", b"", False, 1)])
            got = await receive_until(session, "open/end")
            assert [t for t, _, _, _ in got] == ["open/y", "open/end"]
        # The broker had them (the writer may write there) and sent them on to no one.
        log = secure.log(tail=None)
        assert "Received PUBLISH from acl-writer (d0, q1, r0, m1, 'secret/z'" in log
        assert "Sending PUBLISH to acl-node (d0, q1, r0, m1, 'open/y'" in log
        assert "'secret/z'" not in "".join(
            line for line in log.splitlines() if "Sending PUBLISH to acl-node" in line
        )

    run(scenario)


def test_an_oversized_message_is_dropped_acknowledged_and_not_redelivered(broker):
    async def scenario() -> None:
        small = options(broker.port, "small-reader", clean_session=False, max_packet=1024)
        async with await MqttSession.connect(options(broker.port, "pub")) as publisher:
            session = await MqttSession.connect(small)
            assert await session.subscribe([("big/#", 1)]) == [1]
            await publisher.publish(
                [("big/1", b"x" * 100_000, False, 1), ("big/2", b"small", False, 1)]
            )
            messages, _ = await receive(session, 1)
            assert [(t, p) for t, p, _, _ in messages] == [("big/2", b"small")]
            assert session.dropped == 1
            session.ack(acks(messages))
            await barrier(session)
            assert session.queued() == 0
            session.abort()

            again = await MqttSession.connect(small)
            assert again.session_present is True
            await publisher.publish([("big/end", b"", False, 1)])
            assert [t for t, _, _, _ in await receive_until(again, "big/end")] == ["big/end"]
            assert again.dropped == 0
            await again.close()

    run(scenario)


@pytest.mark.parametrize("bound", ["messages", "bytes"])
def test_flow_control_stops_reading_at_max_queued_and_loses_nothing(broker, monkeypatch, bound):
    """Reading stops at MAX_QUEUED messages, or at MAX_QUEUED_BYTES_HARD bytes (large
    messages): with no answer awaited that only pauses the socket, nothing is left."""
    count, size = 2000, 1000  # 2 MB: far more than one socket read
    if bound == "messages":
        monkeypatch.setattr(mqtt_module, "MAX_QUEUED", 50)
        monkeypatch.setattr(mqtt_module, "RESUME_QUEUED", 25)
    else:
        monkeypatch.setattr(mqtt_module, "MAX_QUEUED_BYTES_HARD", 50 * (size + 10))

    async def scenario() -> None:
        async with (
            await MqttSession.connect(options(broker.port, "pub")) as publisher,
            await MqttSession.connect(options(broker.port, "slow")) as slow,
        ):
            await slow.subscribe([("f/#", 0)])
            for first in range(0, count, 250):
                await publisher.publish(
                    [
                        ("f/x", b"%06d" % n + b"." * (size - 6), False, 0)
                        for n in range(first, first + 250)
                    ]
                )
            await publisher.publish([("f/end", b"", False, 1)])  # the broker has them all
            await eventually(lambda: slow.queued() >= 50)
            # Give the broker time to push whatever the socket takes: the session reads
            # no more than one chunk past MAX_QUEUED.
            await asyncio.sleep(0.5)
            bound = 50 + READ_SIZE // size + 1
            assert slow.queued() <= bound
            assert slow.queued() < count

            got: list[Message] = []
            async with asyncio.timeout(10):
                while len(got) < count + 1:
                    await slow.wait_message()
                    got += slow.take(100).messages
                    assert slow.queued() <= bound
            assert [p[:6] for _, p, _, _ in got[:count]] == [b"%06d" % n for n in range(count)]
            assert got[-1][0] == "f/end"
            assert slow.left_to_broker == 0

    run(scenario)


@pytest.mark.parametrize("bound", ["messages", "bytes"])
def test_past_the_hard_bound_the_rest_is_left_to_the_broker_for_the_next_session(
    broker_factory, monkeypatch, bound
):
    """A real case of the hard bounds: the queue is full (reading paused) and the caller
    subscribes. The SUBACK is behind the backlog, so the session must read on; past
    MAX_QUEUED_HARD messages, or MAX_QUEUED_BYTES_HARD bytes (100 of these 1 KB
    messages), it keeps no more but still finds its answer. What it kept is an unbroken
    prefix, taken and acknowledged as usual; then the session ends, and the next one (a
    persistent session) gets exactly the rest, in order: nothing lost, nothing twice.
    The broker sends without an in-flight window, as Mosquitto 2.0.11 does after a
    reconnect (docs/device-api.md, "Delivery")."""
    broker = broker_factory(extra=["max_inflight_messages 0"])
    monkeypatch.setattr(mqtt_module, "MAX_QUEUED", 50)
    monkeypatch.setattr(mqtt_module, "RESUME_QUEUED", 25)
    if bound == "messages":
        monkeypatch.setattr(mqtt_module, "MAX_QUEUED_HARD", 100)
    else:
        monkeypatch.setattr(mqtt_module, "MAX_QUEUED_BYTES_HARD", 100 * 1_010)
    total = 2000
    slow_options = options(broker.port, "slow", clean_session=False)

    async def scenario() -> None:
        async with await MqttSession.connect(options(broker.port, "pub")) as publisher:
            async with await MqttSession.connect(slow_options) as slow:
                await slow.subscribe([("h/#", 1)])
                for first in range(0, total, 250):
                    await publisher.publish(
                        [
                            ("h/x", b"%06d" % n + b"." * 994, False, 1)
                            for n in range(first, first + 250)
                        ]
                    )
                await eventually(lambda: slow.queued() >= 50)
                assert await slow.subscribe([("other", 0)]) == [0]  # found behind the backlog
                assert slow.left_to_broker > 0
                kept = slow.queued()
                # The byte count includes a read's trailing partial packet: a few messages less.
                assert kept >= (100 if bound == "messages" else 90)
                assert kept + slow.left_to_broker <= total
                batch = slow.take(kept)
                assert [p[:6] for _, p, _, _ in batch.messages] == [
                    b"%06d" % n for n in range(kept)
                ]
                slow.ack(acks(batch.messages))
                with pytest.raises(MqttError, match="left to the broker: a new session gets them"):
                    await slow.wait_message()
            # The next session: the rest, from where the first one stopped keeping.
            async with await MqttSession.connect(slow_options) as again:
                assert again.session_present
                rest: list[bytes] = []
                while len(rest) < total - kept:
                    async with asyncio.timeout(WAIT):
                        await again.wait_message()
                    taken = again.take(1000).messages
                    rest += [p[:6] for _, p, _, _ in taken]
                    again.ack(acks(taken))
                assert rest == [b"%06d" % n for n in range(kept, total)]
                await barrier(again)
                assert again.queued() == 0

    run(scenario)


def test_a_backlog_over_the_hard_bound_goes_through_the_device_layer(broker, tmp_path, monkeypatch):
    """The device layer waits for the PUBACKs of a batch's replies before it acknowledges
    the batch, and Mosquitto streams the whole backlog meanwhile. Once that backlog was
    larger than the hard bound, ending the session there lost the batch's acknowledgements
    and the next session got the same backlog: the node reconnected without end. Now each
    session takes a bound's worth, and every report is applied (bounds scaled down)."""
    monkeypatch.setattr(mqtt_module, "MAX_QUEUED", 50)
    monkeypatch.setattr(mqtt_module, "RESUME_QUEUED", 25)
    monkeypatch.setattr(mqtt_module, "MAX_QUEUED_HARD", 1000)
    devices = [f"d{n}" for n in range(10)]
    reports = 4000

    async def scenario() -> None:
        specs = [DeviceSpec(name) for name in devices]
        store = Store(str(tmp_path / "node.db"))
        try:
            async with node(store, broker, specs):
                pass  # its persistent session subscribed: the broker queues for it from now
            async with await MqttSession.connect(options(broker.port, "devices")) as publisher:
                for start in range(0, reports, 250):
                    await publisher.publish(
                        [
                            (
                                f"$edge/devices/{devices[n % 10]}/twin/update",
                                b'{"reported": {"n": %d}}' % n,
                                False,
                                1,
                            )
                            for n in range(start, start + 250)
                        ]
                    )
            async with node(store, broker, specs) as layer:
                last = {name: reports - 10 + index for index, name in enumerate(devices)}
                await eventually(
                    lambda: all(
                        layer.service.twin(name)["reported"] == {"n": n} for name, n in last.items()
                    ),
                    timeout=15,
                )
                stats = layer.stats()
                assert stats["left_to_broker"] > 0, stats
                # Each session keeps a bound's worth (1,000) before it leaves any: a few
                # sessions, not hundreds (one more if what came after the last reports,
                # e.g. the node's own retained deltas, was left too).
                assert stats["connects"] <= 2 + reports // 1000, stats
                await eventually(layer.connected.is_set)  # and serves on
        finally:
            store.close()

    run(scenario)


# --------------------------------------------------------- a frozen network link ----


@pytest.fixture
def link(broker: Broker) -> Iterator[Proxy]:
    """The tests' fault proxy (node/fakehub.py) in front of the broker, on its own loop;
    ``blackhole()`` keeps both connections open and forwards nothing."""
    background = Background()
    proxy = Proxy(background, broker.port)
    proxy.start()
    yield proxy
    proxy.stop()
    background.close()


def test_keepalive_notices_a_frozen_link_within_seconds(link):
    async def scenario() -> None:
        session = await MqttSession.connect(options(link.port, "kept", keepalive=1))
        connected = link.forwarded  # CONNECT and CONNACK
        waiter = asyncio.ensure_future(session.wait_message())
        # Pings are answered through the proxy while it forwards (PINGREQ + PINGRESP).
        await eventually(lambda: link.forwarded >= connected + 4, timeout=4)
        assert not waiter.done()
        link.blackhole()
        started = time.monotonic()
        with pytest.raises(MqttError, match="no PINGRESP"):
            await asyncio.wait_for(waiter, timeout=6)
        assert time.monotonic() - started < 4  # ping after <= 1 s idle, then 1 s wait
        with pytest.raises(MqttError):
            await session.publish([("x", b"", False, 1)])
        await session.close()

    run(scenario)


def test_a_publish_unanswered_in_time_ends_the_session(link, monkeypatch):
    monkeypatch.setattr(mqtt_module, "OPERATION_TIMEOUT", 0.5)

    async def scenario() -> None:
        session = await MqttSession.connect(options(link.port, "frozen-pub", keepalive=60))
        await session.publish([("x", b"1", False, 1)])  # answered while forwarding
        link.blackhole()
        with pytest.raises(MqttError, match="no PUBACK"):
            await session.publish([("x", b"2", False, 1)])
        with pytest.raises(MqttError, match="no PUBACK"):
            await session.subscribe([("y", 1)])  # the session's first error, at once
        # The session counts as dead: a waiter learns it now, not at the next ping.
        with pytest.raises(MqttError):
            await asyncio.wait_for(session.wait_message(), timeout=2)
        session.abort()

    run(scenario)


# ------------------------------------------------------------- a hostile broker ----


@pytest.mark.parametrize(
    ("malformed", "reason"),
    [(PUBLISH_QOS_3, "PUBLISH with QoS 3"), (FIVE_BYTE_LENGTH, "longer than 4 bytes")],
    ids=["publish-qos-3", "five-byte-length"],
)
def test_a_malformed_packet_after_connack_ends_the_session(malformed, reason):
    async def scenario() -> None:
        puback = asyncio.get_running_loop().create_future()
        closed = asyncio.Event()

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await hostile.expect_connect(reader)
            # A good message first (QoS 1, packet id 7), the bad packet after its PUBACK.
            writer.write(CONNACK_OK + b"\x32\x09\x00\x03a/b\x00\x07ok")
            puback.set_result(await read_packet(reader))
            writer.write(malformed)
            with contextlib.suppress(ConnectionError):
                await reader.read()  # the client drops the connection
            closed.set()

        async with HostileBroker(script) as hostile:
            session = await MqttSession.connect(options(hostile.port, "victim", keepalive=60))
            messages, _ = await receive(session, 1)
            assert messages == [("a/b", b"ok", 1, 7)]
            session.ack(acks(messages))
            assert await asyncio.wait_for(puback, WAIT) == (0x40, b"\x00\x07")
            with pytest.raises(MqttError, match=f"protocol error.*{reason}"):
                await asyncio.wait_for(session.wait_message(), WAIT)
            await asyncio.wait_for(closed.wait(), WAIT)  # and the connection is closed
            with pytest.raises(MqttError, match="protocol error"):
                await session.publish([("x", b"", False, 0)])
            await session.close()

    run(scenario)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "protocol error"),
        (b"\x20\x03\x00\x00\x00", "protocol error"),  # CONNACK of the wrong length
        (b"\x20\x02\x00", "lost"),  # half a CONNACK, then the connection closes
        (b"", "lost"),  # closed at once
    ],
    ids=["http", "long-connack", "half-connack", "closed"],
)
def test_no_proper_connack_fails_the_connect(answer, message):
    async def scenario() -> None:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await hostile.expect_connect(reader)
            writer.write(answer)
            await writer.drain()
            writer.close()  # the bytes first, then the end of the connection

        async with HostileBroker(script) as hostile:
            started = time.monotonic()
            with pytest.raises(MqttError, match=message) as error:
                await MqttSession.connect(options(hostile.port, "victim"))
            assert not isinstance(error.value, MqttRefused)
            assert time.monotonic() - started < 2
            assert len(hostile.connects) == 1

    run(scenario)


def test_a_broker_that_never_answers_connect_times_out(monkeypatch):
    monkeypatch.setattr(mqtt_module, "OPERATION_TIMEOUT", 0.5)

    async def scenario() -> None:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await hostile.expect_connect(reader)  # and silence

        async with HostileBroker(script) as hostile:
            started = time.monotonic()
            with pytest.raises(MqttError, match="no CONNACK"):
                await MqttSession.connect(options(hostile.port, "victim"))
            elapsed = time.monotonic() - started
            assert 0.4 < elapsed < 3
            # The CONNECT the client sent: protocol MQTT 4, clean session, keep-alive 30.
            assert hostile.connects[0][:10] == b"\x00\x04MQTT\x04\x02\x00\x1e"

    run(scenario)


@pytest.mark.parametrize("code", [5, 0x42])
def test_a_connack_refusal_is_mqtt_refused_with_its_code(code):
    async def scenario() -> None:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await hostile.expect_connect(reader)
            writer.write(bytes((0x20, 2, 0, code)))

        async with HostileBroker(script) as hostile:
            with pytest.raises(MqttRefused) as refused:
                await MqttSession.connect(options(hostile.port, "victim"))
            assert refused.value.code == code
            assert ("not authorized" if code == 5 else str(code)) in str(refused.value)

    run(scenario)


def test_the_session_present_flag_of_connack_is_read():
    async def scenario() -> None:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await hostile.expect_connect(reader)
            writer.write(b"\x20\x02\x01\x00")

        async with HostileBroker(script) as hostile:
            session = await MqttSession.connect(options(hostile.port, "victim"))
            assert session.session_present is True
            await session.close()

    run(scenario)


def test_the_device_layer_keeps_reconnecting_to_a_hostile_broker(tmp_path):
    async def scenario() -> None:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await hostile.expect_connect(reader)
            writer.write(CONNACK_OK)
            await read_packet(reader)  # the layer subscribes; the answer is garbage
            writer.write(PUBLISH_QOS_3)

        store = Store(str(tmp_path / "node.db"))
        try:
            async with HostileBroker(script) as hostile:
                settings = MqttSettings(
                    port=hostile.port,
                    client_id="hostile-node",
                    backoff_base=0.05,
                    backoff_cap=0.1,
                    keepalive=5,
                )
                layer = DeviceLayer(store, settings, [], [])
                task = asyncio.get_running_loop().create_task(layer.run())
                await eventually(lambda: layer.stats().get("disconnects", 0) >= 3)
                stats = layer.stats()
                assert stats["connects"] >= 3  # each CONNACK was taken, each session failed
                assert hostile.connections >= 3
                assert not layer.connected.is_set()
                assert layer.subscriptions() == frozenset()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                assert task.cancelled()
        finally:
            store.close()

    run(scenario)


def test_keepalive_zero_turns_pings_off(broker):
    """MQTT's keep-alive 0 means no pings: the session must not count itself dead."""

    async def scenario() -> None:
        session = await MqttSession.connect(options(broker.port, "no-pings", keepalive=0))
        await session.subscribe([("k/0", 1)])
        await asyncio.sleep(0.3)
        await session.publish([("k/0", b"alive", False, 1)])
        messages, _ = await receive(session, 1)
        assert messages[0][:2] == ("k/0", b"alive")
        await session.close()

    run(scenario)
