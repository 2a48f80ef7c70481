"""MQTT 3.1.1 packets on a client's side of the wire, sans I/O: the specification.

The node's device layer is an MQTT client of its local broker, and most of the work of
a report on the wire is packets: reading the broker's PUBLISH, writing the PUBACK once
the report is committed, writing the replies and reading their PUBACKs. This module does
that per-message part, in whole batches, so the I/O glue (``edgenode.devices.mqtt``)
touches each chunk of bytes once:

- :class:`MqttDecoder` turns the bytes a broker sends into packets, whatever the chunks
  (a packet split across reads, many packets in one read).
- :func:`encode_publishes` and :func:`encode_acks` build the PUBLISH and PUBACK packets of
  a whole batch into one buffer (one ``write``).

The rarely sent packets (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT) are built by
the glue. The Rust extension implements exactly this module (``mqttcodec.rs``); both are
held equal by tests/differential/test_mqttcodec_differential.py.

What a broker may send is checked as MQTT 3.1.1 says (OASIS standard, section 2 and 3); a
packet a client must never receive, QoS 2 (the node subscribes at QoS 1 at most, and a
broker never sends more than the QoS granted) or a malformed packet raises
:class:`~edgenode.errors.MqttPacketError`, after which the decoder is unusable: the
specification's answer is to close the connection (the broker then delivers again what
was not acknowledged). A PUBLISH larger than the decoder's ``max_packet``
(its remaining length: topic, packet id and payload) is not buffered: its payload is
skipped as it streams in, and the message comes out in ``dropped`` as (topic, QoS,
packet id, payload size), so that it can be
acknowledged and counted instead of being delivered again forever.
"""

from __future__ import annotations

from typing import Final

from edgenode.errors import MqttPacketError

Message = tuple[str, bytes, int, int]
"""A received application message: (topic, payload, QoS, packet id); id 0 at QoS 0."""
Control = tuple[int, bytes]
"""A received control packet: (packet type, the packet after its fixed header)."""
Dropped = tuple[str, int, int, int]
"""A PUBLISH over ``max_packet``: (topic, QoS, packet id, payload size in bytes)."""
Decoded = tuple[list[Message], list[int], list[int], list[Control], list[Dropped]]
"""What one :meth:`MqttDecoder.feed` found, in order within each list: messages, the
indices in ``messages`` of those with the RETAIN flag, the packet ids of PUBACKs, the
other control packets (CONNACK, SUBACK, UNSUBACK, PINGRESP) and the dropped messages."""

CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
SUBACK: Final = 9
UNSUBACK: Final = 11
PINGRESP: Final = 13

MAX_REMAINING_LENGTH: Final = 268_435_455
"""The largest remaining length a 4-byte variable-length integer encodes."""
MAX_CONTROL_BYTES: Final = 65_536
"""The largest control packet accepted (a SUBACK of 65,534 filters is 65,536 bytes)."""
DEFAULT_MAX_PACKET: Final = 16 * 1024 * 1024
"""The default bound on a received PUBLISH's remaining length (``max_packet``): above
the largest report the node handles (``edgenode.devtwin.MAX_PAYLOAD_BYTES``, 4 MiB), so a
report up to 16 MiB still gets its "too large" reply."""
MAX_TOPIC_LENGTH: Final = 65_535

_PACKET_NAMES: Final = {
    0: "reserved type 0",
    1: "CONNECT",
    5: "PUBREC (QoS 2)",
    6: "PUBREL (QoS 2)",
    7: "PUBCOMP (QoS 2)",
    8: "SUBSCRIBE",
    10: "UNSUBSCRIBE",
    12: "PINGREQ",
    14: "DISCONNECT",
    15: "reserved type 15",
}
"""Packet types a broker must not send to this client, by name for the error."""
_CONTROL_SIZES: Final = {CONNACK: 2, PUBACK: 2, UNSUBACK: 2, PINGRESP: 0}
"""Control packets of one fixed remaining length."""
_SUBACK_CODES: Final = frozenset({0, 1, 2, 0x80})


class MqttDecoder:
    """Bytes from a broker in, packets out; see the module docstring."""

    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        if type(max_packet) is not int or not 0 <= max_packet <= MAX_REMAINING_LENGTH:
            raise ValueError(f"max_packet must be an int in [0, {MAX_REMAINING_LENGTH}]")
        self._max_packet = max_packet
        self._buffer = bytearray()
        self._skip = 0
        self._failed: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a packet not yet complete (at most about ``max_packet``)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> Decoded:
        """Decode what ``data`` completes; keep the rest for the next call.

        MqttPacketError on a packet the broker must not send; the decoder is then failed
        and every later call raises the same error (packets decoded before the bad one
        in the same call are lost with it: the connection must be closed).
        """
        if type(data) is not bytes:
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        if self._failed is not None:
            raise MqttPacketError(self._failed)
        decoded: Decoded = ([], [], [], [], [])
        try:
            self._feed(data, decoded)
        except MqttPacketError as exc:
            self._failed = str(exc)
            self._buffer.clear()
            raise
        return decoded

    def _feed(self, data: bytes, decoded: Decoded) -> None:
        view = memoryview(data)
        if self._skip:
            skipped = min(self._skip, len(view))
            self._skip -= skipped
            view = view[skipped:]
        if not view:
            return
        buffer = self._buffer
        if buffer:
            buffer += view
            source: bytes | bytearray = buffer
        else:
            source = data if len(view) == len(data) else bytes(view)
        end = len(source)
        at = 0
        while at < end:
            header = _fixed_header(source, at, end)
            if header is None:
                break
            first, length, body = header
            kind = first >> 4
            if kind == PUBLISH and length > self._max_packet:
                taken = self._dropped_publish(source, first, length, body, end, decoded)
                if taken is None:
                    break
                at = taken
                if at > end:  # the payload goes on past these bytes: skip it as it comes
                    self._skip = at - end
                    at = end
                continue
            if kind != PUBLISH:
                _check_control(first, length)
            if body + length > end:
                break
            if kind == PUBLISH:
                _publish(source, first, body, body + length, decoded)
            elif kind == PUBACK:
                decoded[2].append((source[body] << 8) | source[body + 1])
            else:
                _control(kind, bytes(source[body : body + length]), decoded)
            at = body + length
        if source is buffer:
            del buffer[:at]
        elif at < end:
            buffer += source[at:end]

    def _dropped_publish(
        self,
        source: bytes | bytearray,
        first: int,
        length: int,
        body: int,
        end: int,
        decoded: Decoded,
    ) -> int | None:
        """A PUBLISH over max_packet: its topic and packet id once they are here (None:
        not yet); the offset just past the packet (which may lie past ``end``)."""
        qos = _publish_qos(first)
        if length < 2:  # not waited for: the bytes after the packet are not its topic length
            raise MqttPacketError("PUBLISH: no topic length")
        if body + 2 > end:
            return None
        topic_length = (source[body] << 8) | source[body + 1]
        head = 2 + topic_length + (2 if qos else 0)
        if head > length:
            raise MqttPacketError("PUBLISH: the topic is longer than the packet")
        if body + head > end:
            return None
        topic = _topic(source, body + 2, body + 2 + topic_length)
        packet_id = _packet_id(source, body + 2 + topic_length) if qos else 0
        decoded[4].append((topic, qos, packet_id, length - head))
        return body + length


def encode_publishes(publishes: list[tuple[str, bytes, bool, int, int]]) -> bytes:
    """The PUBLISH packets of (topic, payload, retain, QoS 0 or 1, packet id), in order,
    in one buffer. The packet id is written at QoS 1 (1-65535) and ignored at QoS 0.
    TypeError for a wrong shape or type, ValueError for a topic that is empty, too long
    or holds a wildcard or U+0000, a QoS other than 0 or 1, a packet id out of range or a
    packet over MQTT's size limit."""
    if type(publishes) is not list:
        raise TypeError("publishes must be a list of (topic, payload, retain, qos, packet id)")
    out = bytearray()
    for publish in publishes:
        if (
            type(publish) is not tuple
            or len(publish) != 5
            or type(publish[0]) is not str
            or type(publish[1]) is not bytes
            or type(publish[2]) is not bool
            or type(publish[3]) is not int
            or type(publish[4]) is not int
        ):
            raise TypeError(
                "a publish must be a (topic: str, payload: bytes, retain: bool, qos: int, "
                f"packet id: int) tuple, not {publish!r:.80}"
            )
        topic, payload, retain, qos, packet_id = publish
        name = _topic_bytes(topic)
        if qos not in (0, 1):
            raise ValueError(f"PUBLISH QoS must be 0 or 1, not {qos}")
        if qos and not 1 <= packet_id <= 0xFFFF:
            raise ValueError(f"a packet id must be in [1, 65535], not {packet_id}")
        length = 2 + len(name) + (2 if qos else 0) + len(payload)
        if length > MAX_REMAINING_LENGTH:
            raise ValueError(f"a PUBLISH of {length} bytes is over MQTT's limit")
        out.append(0x30 | (qos << 1) | (1 if retain else 0))
        _put_length(out, length)
        out += len(name).to_bytes(2, "big")
        out += name
        if qos:
            out += packet_id.to_bytes(2, "big")
        out += payload
    return bytes(out)


def encode_acks(acks: list[tuple[int, int]]) -> bytes:
    """The PUBACK packets of (packet id, QoS) in order, in one buffer: the ``acks`` of a
    batch call. QoS 0 entries need no packet and are skipped; QoS 2 is a ValueError (the
    node never receives it), as is a packet id out of [1, 65535]."""
    if type(acks) is not list:
        raise TypeError("acks must be a list of (packet id, qos)")
    out = bytearray()
    for ack in acks:
        if (
            type(ack) is not tuple
            or len(ack) != 2
            or type(ack[0]) is not int
            or type(ack[1]) is not int
        ):
            raise TypeError(f"an ack must be a (packet id: int, qos: int) tuple, not {ack!r:.80}")
        packet_id, qos = ack
        if qos == 0:
            continue
        if qos != 1:
            raise ValueError(f"only QoS 1 messages are acknowledged, not QoS {qos}")
        if not 1 <= packet_id <= 0xFFFF:
            raise ValueError(f"a packet id must be in [1, 65535], not {packet_id}")
        out += b"\x40\x02"
        out += packet_id.to_bytes(2, "big")
    return bytes(out)


# ----------------------------------------------------------------------------- helpers


def _fixed_header(source: bytes | bytearray, at: int, end: int) -> tuple[int, int, int] | None:
    """(first byte, remaining length, offset of the body), None if not all here yet."""
    if at + 2 > end:
        return None
    first = source[at]
    length = 0
    shift = 0
    index = at + 1
    while True:
        if index >= end:
            return None
        byte = source[index]
        length |= (byte & 0x7F) << shift
        index += 1
        if not byte & 0x80:
            return first, length, index
        shift += 7
        if shift == 28:
            raise MqttPacketError("a remaining length longer than 4 bytes")


def _publish_qos(first: int) -> int:
    qos = (first >> 1) & 3
    if qos == 3:
        raise MqttPacketError("PUBLISH with QoS 3")
    if qos == 2:
        raise MqttPacketError("PUBLISH with QoS 2 (the node subscribes at QoS 1 at most)")
    if qos == 0 and first & 0x08:
        raise MqttPacketError("PUBLISH with DUP set at QoS 0")
    return qos


def _publish(source: bytes | bytearray, first: int, body: int, end: int, decoded: Decoded) -> None:
    qos = _publish_qos(first)
    if body + 2 > end:
        raise MqttPacketError("PUBLISH: no topic length")
    topic_end = body + 2 + ((source[body] << 8) | source[body + 1])
    payload_at = topic_end + (2 if qos else 0)
    if payload_at > end:
        raise MqttPacketError("PUBLISH: the topic is longer than the packet")
    topic = _topic(source, body + 2, topic_end)
    packet_id = _packet_id(source, topic_end) if qos else 0
    messages = decoded[0]
    if first & 0x01:
        decoded[1].append(len(messages))
    messages.append((topic, bytes(source[payload_at:end]), qos, packet_id))


def _topic(source: bytes | bytearray, start: int, end: int) -> str:
    if start == end:
        raise MqttPacketError("PUBLISH: an empty topic")
    try:
        topic = source[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise MqttPacketError("PUBLISH: the topic is not valid UTF-8") from None
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise MqttPacketError("PUBLISH: the topic holds a wildcard or U+0000")
    return topic


def _packet_id(source: bytes | bytearray, at: int) -> int:
    packet_id = (source[at] << 8) | source[at + 1]
    if packet_id == 0:
        raise MqttPacketError("PUBLISH: packet id 0 at QoS 1")
    return packet_id


def _check_control(first: int, length: int) -> None:
    """A control packet's type, flags and size, before its body is waited for."""
    kind = first >> 4
    name = _PACKET_NAMES.get(kind)
    if name is not None:
        raise MqttPacketError(f"a broker must not send {name}")
    if first & 0x0F:
        raise MqttPacketError(f"packet type {kind} with flags {first & 0x0F:#x}")
    size = _CONTROL_SIZES.get(kind)
    if size is not None and length != size:
        raise MqttPacketError(f"packet type {kind} of {length} bytes (must be {size})")
    if kind == SUBACK and not 3 <= length <= MAX_CONTROL_BYTES:
        raise MqttPacketError(f"SUBACK of {length} bytes")


def _control(kind: int, body: bytes, decoded: Decoded) -> None:
    if kind == CONNACK and body[0] & 0xFE:
        raise MqttPacketError("CONNACK: reserved flags set")
    if kind == SUBACK and any(code not in _SUBACK_CODES for code in body[2:]):
        raise MqttPacketError("SUBACK: a return code other than 0, 1, 2 or 0x80")
    decoded[3].append((kind, body))


def _topic_bytes(topic: str) -> bytes:
    try:
        name = topic.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a topic must be valid UTF-8 (no lone surrogates)") from None
    if not name or len(name) > MAX_TOPIC_LENGTH:
        raise ValueError(f"a topic must be 1 to {MAX_TOPIC_LENGTH} bytes, not {len(name)}")
    if b"+" in name or b"#" in name or b"\x00" in name:
        raise ValueError(f"a topic to publish must not hold '+', '#' or U+0000: {topic!r:.80}")
    return name


def _put_length(out: bytearray, length: int) -> None:
    while True:
        byte = length & 0x7F
        length >>= 7
        out.append(byte | 0x80 if length else byte)
        if not length:
            return
