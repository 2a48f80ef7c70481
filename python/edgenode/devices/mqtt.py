"""The device layer's MQTT 3.1.1 client: thin asyncio glue on the core's packet codec.

Why not a general client: the device layer reads every device message and writes a
PUBACK and usually a reply for each. With aiomqtt on paho-mqtt that packet handling was
~80 % of the node's CPU per report (bench/README.md, "Where the drain's time goes"): a
Python object, a callback and often a ``send`` per packet. Here each chunk of bytes the
socket delivers is decoded in ONE core call (:class:`edgenode.mqttcodec.MqttDecoder`),
the messages wait in a queue as the ``(topic, payload, QoS, packet id)`` tuples the batch
call takes, and a batch's PUBACKs and replies are each built in one call and written in
one ``write``.

What it does, and no more (the node's own needs):

- CONNECT with a client id, ``clean_session``, keep-alive, username and password, over
  TCP or TLS; CONNACK's refusal is an :class:`MqttRefused` that names it.
- SUBSCRIBE and UNSUBSCRIBE, waiting for their acknowledgements.
- PUBLISH at QoS 0 and 1; :meth:`MqttSession.publish` waits for the PUBACKs of a whole
  chunk at once.
- Receive at QoS 0 and 1 (the node subscribes at QoS 1 at most, so QoS 2 never comes);
  the caller acknowledges with :meth:`MqttSession.ack` when it is ready (after its
  commit), in any grouping.
- Keep-alive: a PINGREQ when nothing was sent for ``keepalive`` seconds; no answer within
  OPERATION_TIMEOUT closes the session (a dead broker or network is noticed).

Bounds: at most MAX_QUEUED messages wait to be taken while the session waits for nothing
from the broker (above it the socket is not read until the caller catches up: the broker
then holds the rest, as it does for a slow client). While the session waits for the
broker's answer to its own packets (CONNACK, SUBACK, PUBACK, PINGRESP) it must read on to
find that answer, and the answer can be behind a whole backlog: Mosquitto sends a
persistent session's queued messages as fast as the node acknowledges the first ones
(measured with Mosquitto 2.0.11: 20 unacknowledged after the connect, then a backlog of
280 at once as soon as those were acknowledged: it stops holding its
``max_inflight_messages`` window), so a backlog streams in while the node waits for the
PUBACKs of its replies. The queue then grows past MAX_QUEUED, up to MAX_QUEUED_HARD
messages or MAX_QUEUED_BYTES_HARD bytes of packets — the most the shipped broker
settings let Mosquitto queue for the node (``deploy/mosquitto/edgenode.conf``: 100,000
messages, 64 MiB), so that backlog fits, mostly. Past either bound the session goes on
reading for its answer but keeps no more messages: it leaves them, unacknowledged, to
the broker (counted in ``left_to_broker``). What it kept is taken and acknowledged as
usual; once the queue is empty, :meth:`MqttSession.wait_message` ends the session (with
a DISCONNECT, once the broker has read the acknowledgements) and the broker sends the
rest again to the next session. Each session thus gets through a bound's worth of any
backlog: ending the session at the bound instead would lose the answer
and the acknowledgements of the batch that waited for it, and a backlog over the bound
would come back whole after every reconnect. The decoder holds at most one packet of up
to ``max_packet`` bytes (a larger PUBLISH is skipped as it streams in, acknowledged and
counted as dropped); writes wait while the transport's buffer is over its high-water
mark. Every failure of the connection ends the session with :class:`MqttError`;
reconnecting is the caller's job (a new session: the broker's persistent session
redelivers what was not acknowledged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from edgenode.errors import MqttPacketError
from edgenode.mqttcodec import DEFAULT_MAX_PACKET, MqttDecoder, encode_acks, encode_publishes

log = logging.getLogger("edgenode.devices.mqtt")

Message = tuple[str, bytes, int, int]
"""A received message: (topic, payload, QoS, packet id), the batch call's input."""

OPERATION_TIMEOUT: Final = 10.0
"""Seconds for a connect, subscribe, publish or ping before the session counts as dead."""
MAX_QUEUED: Final = 10_000
"""Received messages waiting to be taken before the socket stops being read."""
RESUME_QUEUED: Final = MAX_QUEUED // 2
"""Queued messages below which reading resumes."""
MAX_QUEUED_HARD: Final = 100_000
"""Queued messages past which the session keeps no more (the broker sent them while the
node waited for an answer and could not stop reading): the rest is left to the broker
for the next session. The shipped broker's queue (measured: a node at 35 MB grew to
62 MB with the queue at this bound, small twin reports)."""
MAX_QUEUED_BYTES_HARD: Final = 64 * 1024 * 1024
"""Bytes of queued packets past which the session keeps no more messages: the shipped
broker's queue."""

BARRIER_FILTER: Final = "$edge/node/no-such-subscription"
"""Unsubscribed from to know the broker has read everything sent before (its answer
comes after it did)."""
CLOSE_BARRIER_TIMEOUT: Final = 1.0
"""Seconds a close waits for that answer (a dead broker must not hold a shutdown)."""

_CONNACK, _SUBACK, _UNSUBACK, _PINGRESP = 2, 9, 11, 13
_PINGREQ: Final = b"\xc0\x00"
_DISCONNECT: Final = b"\xe0\x00"
_REFUSALS: Final = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class MqttError(Exception):
    """The MQTT session failed (connection lost or refused, timeout, protocol error)."""


class MqttRefused(MqttError):
    """The broker refused the CONNECT; ``code`` is CONNACK's return code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"the broker refused the connection: {_REFUSALS.get(code, code)}")
        self.code = code


@dataclass(frozen=True)
class MqttOptions:
    """How to connect (the node's ``[mqtt]`` settings, as the session needs them)."""

    host: str
    port: int
    client_id: str
    keepalive: int = 30
    clean_session: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: ssl.SSLContext | None = None
    max_packet: int = DEFAULT_MAX_PACKET


@dataclass
class Batch:
    """Messages taken from the queue: ``retained`` holds the indices of those that came
    with the RETAIN flag (a retained message the broker sends on subscribing)."""

    messages: list[Message]
    retained: list[int]


class _AckGroup:
    """The PUBACKs a publish call waits for, counted down."""

    __slots__ = ("done", "waiting")

    def __init__(self, waiting: int, done: asyncio.Future[None]) -> None:
        self.waiting = waiting
        self.done = done


class MqttSession(asyncio.Protocol):
    """One connection to the broker; make it with :meth:`connect`, end it with
    :meth:`close` (or ``async with``)."""

    def __init__(self, options: MqttOptions) -> None:
        self.options = options
        self.session_present = False
        self.dropped = 0
        """PUBLISHes over ``max_packet`` skipped (acknowledged and logged here)."""
        self.left_to_broker = 0
        """PUBLISHes read past the queue's hard bounds and not kept: unacknowledged, the
        broker sends them again to the next session."""
        self._full = False
        """The queue reached a hard bound: every later message is left to the broker."""
        self._loop = asyncio.get_running_loop()
        self._decoder = MqttDecoder(options.max_packet)
        self._transport: asyncio.Transport | None = None
        self._error: MqttError | None = None
        self._closed = self._loop.create_future()
        self._connack: asyncio.Future[bytes] = self._loop.create_future()
        self._queue: deque[tuple[list[Message], list[int], int]] = deque()
        """Chunks of received messages: (messages, indices of retained ones, the bytes of
        the packets they were decoded from)."""
        self._queued = 0
        self._queued_bytes = 0
        self._arrived = asyncio.Event()
        self._reading = True
        self._waiting: dict[int, _AckGroup] = {}
        self._requests: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 0
        self._pong: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._last_sent = self._loop.time()
        self._keepalive: asyncio.Task[None] | None = None

    # -------------------------------------------------------------- lifecycle ----

    @classmethod
    async def connect(cls, options: MqttOptions) -> MqttSession:
        """Open the connection, send CONNECT and wait for CONNACK (MqttRefused if it
        refuses; MqttError on any other failure, OPERATION_TIMEOUT in all)."""
        loop = asyncio.get_running_loop()
        session = cls(options)
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT):
                await loop.create_connection(
                    lambda: session,
                    options.host,
                    options.port,
                    ssl=options.tls,
                    server_hostname=options.host if options.tls else None,
                )
                session._write(_connect_packet(options))
                ack = await session._connack
        except TimeoutError:
            session.abort()
            raise MqttError(f"no CONNACK from {options.host}:{options.port} in time") from None
        except OSError as exc:
            session.abort()
            raise MqttError(f"cannot connect to {options.host}:{options.port}: {exc}") from exc
        except BaseException:
            session.abort()
            raise
        if ack[1] != 0:
            session.abort()
            raise MqttRefused(ack[1])
        session.session_present = bool(ack[0] & 1)
        if options.keepalive > 0:  # 0: keep-alive off, as MQTT defines it
            session._keepalive = loop.create_task(session._keep_alive())
        return session

    async def __aenter__(self) -> MqttSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Make sure the broker has what was written (its answer to a barrier, within
        CLOSE_BARRIER_TIMEOUT), send DISCONNECT (the broker then drops no will and keeps
        the session) and close; anything still waiting fails with MqttError."""
        await self._barrier(CLOSE_BARRIER_TIMEOUT)
        self._disconnect(MqttError("the session was closed"))
        transport = self._transport
        if self._keepalive is not None:
            self._keepalive.cancel()
        if transport is not None:
            # Let the transport flush and close (bounded: a dead peer must not hold us).
            await asyncio.wait([self._closed], timeout=1.0)

    def abort(self) -> None:
        """Drop the connection at once (no DISCONNECT)."""
        if self._transport is not None:
            self._transport.abort()
        self._fail(MqttError("the session was aborted"))
        if self._keepalive is not None:
            self._keepalive.cancel()

    # ----------------------------------------------------------- operations ----

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int]:
        """Subscribe and wait for SUBACK; its return codes (0x80: refused), in order."""
        packet_id = self._request_id()
        body = bytearray(packet_id.to_bytes(2, "big"))
        for name, qos in filters:
            encoded = name.encode("utf-8")
            body += len(encoded).to_bytes(2, "big") + encoded + bytes((qos,))
        ack = await self._request(0x82, packet_id, bytes(body))
        return list(ack[2:])

    async def unsubscribe(self, filters: Sequence[str]) -> None:
        """Unsubscribe and wait for UNSUBACK."""
        packet_id = self._request_id()
        body = bytearray(packet_id.to_bytes(2, "big"))
        for name in filters:
            encoded = name.encode("utf-8")
            body += len(encoded).to_bytes(2, "big") + encoded
        await self._request(0xA2, packet_id, bytes(body))

    async def publish(self, publishes: Sequence[tuple[str, bytes, bool, int]]) -> None:
        """Publish (topic, payload, retain, QoS 0 or 1) in order, in one write, and wait
        for the broker's PUBACKs of all of them (MqttError after OPERATION_TIMEOUT). At
        most 65,535 messages in flight: the caller sends chunks."""
        self._check()
        packets: list[tuple[str, bytes, bool, int, int]] = []
        group = _AckGroup(0, self._loop.create_future())
        waiting = self._waiting
        try:
            for topic, payload, retain, qos in publishes:
                packet_id = 0
                if qos:
                    packet_id = self._free_id()
                    waiting[packet_id] = group
                    group.waiting += 1
                packets.append((topic, payload, retain, qos, packet_id))
            await self._send(encode_publishes(packets))
            if group.waiting:
                async with asyncio.timeout(OPERATION_TIMEOUT):
                    await group.done
        except TimeoutError:
            raise self._dead("no PUBACK from the broker in time") from None
        finally:
            for packet in packets:
                if packet[3] and waiting.get(packet[4]) is group:
                    del waiting[packet[4]]

    def ack(self, acks: list[tuple[int, int]]) -> None:
        """Acknowledge received messages: (packet id, QoS) pairs (QoS 0 ones need
        nothing), in one write. Does not wait."""
        self._check()
        data = encode_acks(acks)
        if data:
            self._write(data)

    def queued(self) -> int:
        """Messages received and not taken yet."""
        return self._queued

    async def wait_message(self) -> None:
        """Wait until at least one message is queued (MqttError if the session ended
        first; messages queued before the end are still taken). Once the queue is empty
        after messages were left to the broker, end the session: only a new one gets
        them again."""
        while not self._queued:
            self._check()
            if self._full:
                if self.left_to_broker:
                    raise await self._end_for_the_rest()
                self._full = False  # none came after the bound: go on as before
                self._read_on()
            self._arrived.clear()
            await self._arrived.wait()  # set by data_received, and by _fail

    def take(self, most: int) -> Batch:
        """Up to ``most`` queued messages, oldest first (an empty batch if none)."""
        messages: list[Message] = []
        retained: list[int] = []
        queue = self._queue
        while queue and len(messages) < most:
            chunk, marks, size = queue[0]
            room = most - len(messages)
            offset = len(messages)
            if len(chunk) <= room:
                queue.popleft()
                if not messages:
                    messages = chunk
                else:
                    messages.extend(chunk)
                retained.extend(offset + index for index in marks)
                self._queued_bytes -= size
            else:
                messages.extend(chunk[:room])
                retained.extend(offset + index for index in marks if index < room)
                taken = size * room // len(chunk)  # the chunk's bytes, shared out evenly
                rest = [index - room for index in marks if index >= room]
                queue[0] = (chunk[room:], rest, size - taken)
                self._queued_bytes -= taken
        self._queued -= len(messages)
        if self._queued <= RESUME_QUEUED:
            self._read_on()
        return Batch(messages, retained)

    # ------------------------------------------------------------- protocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            messages, retained, acks, controls, dropped = self._decoder.feed(data)
        except MqttPacketError as exc:
            log.error("the MQTT broker sent a malformed packet: %s", exc)
            self._fail(MqttError(f"protocol error: {exc}"))
            if self._transport is not None:
                self._transport.abort()
            return
        if messages:
            if self._full:
                self.left_to_broker += len(messages)
            else:
                self._queue.append((messages, retained, len(data)))
                self._queued += len(messages)
                self._queued_bytes += len(data)
                self._arrived.set()
                if self._over_hard_bound() and self._awaiting_answer():
                    self._keep_no_more()
        for packet_id in acks:
            group = self._waiting.pop(packet_id, None)
            if group is not None:
                group.waiting -= 1
                if group.waiting == 0 and not group.done.done():
                    group.done.set_result(None)
        for kind, body in controls:
            self._control(kind, body)
        if self._queued >= MAX_QUEUED or self._full or self._over_hard_bound():
            self._throttle()
        if dropped:
            self.dropped += len(dropped)
            for topic, _, _, size in dropped:
                log.warning(
                    "a message of %d bytes on %r is over the %d-byte limit: dropped",
                    size,
                    topic,
                    self.options.max_packet,
                )
            # Acknowledged here: the node cannot take them, and unacknowledged they would
            # come back after every reconnect.
            data = encode_acks([(packet_id, qos) for _, qos, packet_id, _ in dropped])
            if data and self._error is None:
                self._write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self._fail(MqttError(f"the connection to the broker was lost{reason}"))
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _throttle(self) -> None:
        """Stop reading while the queue is full, unless an answer is awaited."""
        if self._reading and not self._awaiting_answer() and self._transport is not None:
            self._reading = False
            self._transport.pause_reading()

    def _over_hard_bound(self) -> bool:
        return self._queued >= MAX_QUEUED_HARD or self._queued_bytes >= MAX_QUEUED_BYTES_HARD

    def _keep_no_more(self) -> None:
        """The queue reached a hard bound while an answer was awaited: from the next
        message on, leave them all to the broker (the queue stays an unbroken prefix of
        what it sent, so acknowledging it keeps MQTT's order)."""
        self._full = True
        log.warning(
            "%d MQTT messages (%d bytes) queued while waiting for the broker's answer: "
            "the rest of its backlog is left to it for the next session",
            self._queued,
            self._queued_bytes,
        )

    async def _end_for_the_rest(self) -> MqttError:
        """End the session once what it kept was taken, and its acknowledgements are
        with the broker."""
        await self._barrier(OPERATION_TIMEOUT)
        self._disconnect(
            MqttError(
                f"{self.left_to_broker} messages over the queue's bound ({MAX_QUEUED_HARD} "
                f"messages or {MAX_QUEUED_BYTES_HARD} bytes) left to the broker: a new "
                "session gets them"
            )
        )
        assert self._error is not None
        return self._error

    async def _barrier(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until the broker has read everything written so
        far: the acknowledgements. Written is not enough before a close: closing a socket
        with unread data (messages still coming) sends a reset, and Mosquitto then drops
        the connection without reading what it had not read yet (measured: the PUBACKs
        written just before were lost every time, so the broker sent those messages
        again). The broker handles a connection's packets in order, so once it answered
        an UNSUBSCRIBE sent after them (of a filter nobody subscribed: MQTT requires the
        answer anyway), it has them all. A failed or late answer changes nothing: the
        session is ending anyway."""
        if self._error is not None:
            return
        with contextlib.suppress(MqttError, TimeoutError):
            async with asyncio.timeout(timeout):
                await self.unsubscribe([BARRIER_FILTER])

    def _disconnect(self, error: MqttError) -> None:
        """DISCONNECT and close (the transport writes what it holds first), then fail
        whatever waits with ``error``."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(_DISCONNECT)
            transport.close()
        self._fail(error)

    def _awaiting_answer(self) -> bool:
        pong = self._pong
        return bool(
            self._waiting
            or self._requests
            or not self._connack.done()
            or (pong is not None and not pong.done())
        )

    def _read_on(self) -> None:
        """Resume reading (an answer is awaited, or the queue has room again and no
        message is being left to the broker)."""
        if self._full and not self._awaiting_answer():
            return
        if not self._reading and self._transport is not None and self._error is None:
            self._reading = True
            self._transport.resume_reading()

    def _control(self, kind: int, body: bytes) -> None:
        if kind == _CONNACK:
            if not self._connack.done():
                self._connack.set_result(body)
            return
        if kind == _PINGRESP:
            if self._pong is not None and not self._pong.done():
                self._pong.set_result(None)
            return
        # SUBACK, UNSUBACK: the packet id leads the body.
        request = self._requests.pop((body[0] << 8) | body[1], None)
        if request is not None and not request.done():
            request.set_result(body)

    # -------------------------------------------------------------- helpers ----

    def _fail(self, error: MqttError) -> None:
        """End the session: every waiter gets the session's first error."""
        if self._error is None:
            self._error = error
        error = self._error
        futures = [self._connack, self._pong, *self._requests.values()]
        futures += [group.done for group in self._waiting.values()]
        for future in futures:
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: no warning if nobody waits on it
        self._requests.clear()
        self._waiting.clear()
        self._arrived.set()
        self._writable.set()
        if self._transport is None and not self._closed.done():
            self._closed.set_result(None)  # never connected: no connection_lost to come

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _dead(self, reason: str) -> MqttError:
        """A broker that did not answer in time: end the session (whatever else waits
        learns it too) and return the error to raise."""
        self._fail(MqttError(reason))
        if self._transport is not None:
            self._transport.abort()
        assert self._error is not None
        return self._error

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise self._error or MqttError("not connected")
        transport.write(data)
        self._last_sent = self._loop.time()
        if self._awaiting_answer():
            self._read_on()

    async def _send(self, data: bytes) -> None:
        """Write, then wait while the transport's buffer is full (bounded memory)."""
        self._write(data)
        if not self._writable.is_set():
            async with asyncio.timeout(OPERATION_TIMEOUT):
                await self._writable.wait()
            self._check()

    async def _request(self, first: int, packet_id: int, body: bytes) -> bytes:
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._requests[packet_id] = future
        try:
            await self._send(_packet(first, body))
            async with asyncio.timeout(OPERATION_TIMEOUT):
                return await future
        except TimeoutError:
            raise self._dead("no answer from the broker in time") from None
        finally:
            if self._requests.get(packet_id) is future:
                del self._requests[packet_id]

    def _request_id(self) -> int:
        self._check()
        return self._free_id()

    def _free_id(self) -> int:
        """The next packet id no packet in flight uses (1-65535, cycling)."""
        for _ in range(0x10000):
            self._next_id = self._next_id % 0xFFFF + 1
            if self._next_id not in self._waiting and self._next_id not in self._requests:
                return self._next_id
        raise MqttError("65,535 packets are already waiting for the broker")

    async def _keep_alive(self) -> None:
        """PINGREQ when nothing was sent for ``keepalive`` seconds; no PINGRESP within
        OPERATION_TIMEOUT ends the session."""
        interval = float(self.options.keepalive)
        try:
            while self._error is None:
                idle = self._loop.time() - self._last_sent
                if idle < interval:
                    await asyncio.sleep(interval - idle)
                    continue
                self._pong = self._loop.create_future()
                self._write(_PINGREQ)
                try:
                    async with asyncio.timeout(min(OPERATION_TIMEOUT, interval)):
                        await self._pong
                except TimeoutError:
                    log.warning("no PINGRESP from the MQTT broker: the connection is dead")
                    self._dead("no PINGRESP from the broker in time")
                    return
        except MqttError:
            return


def _connect_packet(options: MqttOptions) -> bytes:
    flags = 0x02 if options.clean_session else 0
    payload = _string(options.client_id)
    if options.username is not None:
        flags |= 0x80
        payload += _string(options.username)
        if options.password is not None:
            flags |= 0x40
            payload += _string(options.password)
    header = _string("MQTT") + bytes((4, flags)) + options.keepalive.to_bytes(2, "big")
    return _packet(0x10, header + payload)


def _string(text: str) -> bytes:
    encoded = text.encode("utf-8")
    if len(encoded) > 0xFFFF:
        raise ValueError("an MQTT string is at most 65,535 bytes")
    return len(encoded).to_bytes(2, "big") + encoded


def _packet(first: int, body: bytes) -> bytes:
    length = len(body)
    header = bytearray((first,))
    while True:
        byte = length & 0x7F
        length >>= 7
        header.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(header) + body
