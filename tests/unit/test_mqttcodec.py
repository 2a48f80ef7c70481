"""The MQTT 3.1.1 client-side codec on both backends (the ``core`` fixture): known answers
from the specification's packet layouts, any chunking of a stream, the ``max_packet``
drop path, every malformed or forbidden packet, and the encoders."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from edgenode.errors import MqttPacketError

MAX_REMAINING_LENGTH = 268_435_455


def decode(core: ModuleType, data: bytes, max_packet: int | None = None) -> tuple[Any, ...]:
    decoder = core.MqttDecoder() if max_packet is None else core.MqttDecoder(max_packet)
    result = decoder.feed(data)
    assert decoder.buffered == 0
    return result


def feed_all(decoder: Any, chunks: list[bytes]) -> tuple[list[Any], ...]:
    """The results of feeding ``chunks`` in order, merged as one feed would give them."""
    merged: tuple[list[Any], ...] = ([], [], [], [], [])
    for chunk in chunks:
        messages, retained, acks, controls, dropped = decoder.feed(chunk)
        merged[1].extend(len(merged[0]) + index for index in retained)
        merged[0].extend(messages)
        merged[2].extend(acks)
        merged[3].extend(controls)
        merged[4].extend(dropped)
    return merged


# -------------------------------------------------------------- known answers ----

KNOWN = [
    # PUBLISH QoS 0: type 3, flags 0; topic "a/b"; no packet id; payload "hello".
    (b"\x30\x0a\x00\x03a/bhello", ([("a/b", b"hello", 0, 0)], [], [], [], [])),
    # QoS 0 with RETAIN.
    (b"\x31\x0a\x00\x03a/bhello", ([("a/b", b"hello", 0, 0)], [0], [], [], [])),
    # QoS 1: packet id 10 after the topic.
    (b"\x32\x0c\x00\x03a/b\x00\x0ahello", ([("a/b", b"hello", 1, 10)], [], [], [], [])),
    # QoS 1, RETAIN and DUP, packet id 65535, empty payload.
    (b"\x3b\x07\x00\x03a/b\xff\xff", ([("a/b", b"", 1, 65535)], [0], [], [], [])),
    # QoS 1 with DUP only; a two-byte UTF-8 character in the topic.
    (b"\x3a\x07\x00\x02\xc3\xa9\x01\x00x", ([("\u00e9", b"x", 1, 256)], [], [], [], [])),
    # PUBACK of packet id 0x1234.
    (b"\x40\x02\x12\x34", ([], [], [0x1234], [], [])),
    # CONNACK: session present, return code 0; a refusal (5) is the glue's business.
    (b"\x20\x02\x01\x00", ([], [], [], [(2, b"\x01\x00")], [])),
    (b"\x20\x02\x00\x05", ([], [], [], [(2, b"\x00\x05")], [])),
    # SUBACK of packet id 1: granted 0, 1, 2 and failure 0x80.
    (b"\x90\x06\x00\x01\x00\x01\x02\x80", ([], [], [], [(9, b"\x00\x01\x00\x01\x02\x80")], [])),
    # UNSUBACK of packet id 7, PINGRESP.
    (b"\xb0\x02\x00\x07", ([], [], [], [(11, b"\x00\x07")], [])),
    (b"\xd0\x00", ([], [], [], [(13, b"")], [])),
]


@pytest.mark.parametrize(("data", "expected"), KNOWN)
def test_known_packets_decode_as_the_specification_lays_them_out(core, data, expected):
    assert decode(core, data) == expected


def test_results_are_lists_of_tuples_of_exact_types(core):
    messages, retained, acks, controls, dropped = decode(
        core, b"\x33\x07\x00\x01a\x00\x02hi\x40\x02\x00\x03\xd0\x00"
    )
    assert [type(x) for x in (messages, retained, acks, controls, dropped)] == [list] * 5
    ((topic, payload, qos, packet_id),) = messages
    assert (type(topic), type(payload), type(qos), type(packet_id)) == (str, bytes, int, int)
    assert type(controls[0]) is tuple
    assert (retained, acks) == ([0], [3])


def test_many_packets_in_one_feed_keep_their_order_and_retained_indices(core):
    data = (
        b"\x30\x04\x00\x01a1"
        + b"\x40\x02\x00\x01"
        + b"\x31\x04\x00\x01b2"
        + b"\xd0\x00"
        + b"\x30\x04\x00\x01a3"
        + b"\x33\x05\x00\x01c\x00\x09"
    )
    assert decode(core, data) == (
        [("a", b"1", 0, 0), ("b", b"2", 0, 0), ("a", b"3", 0, 0), ("c", b"", 1, 9)],
        [1, 3],
        [1],
        [(13, b"")],
        [],
    )


@pytest.mark.parametrize(
    ("length", "encoded"),
    [
        (3, b"\x03"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
    ],
)
def test_multi_byte_remaining_lengths(core, length, encoded):
    payload = (bytes(range(251)) * (length // 251 + 1))[: length - 3]
    packet = b"\x30" + encoded + b"\x00\x01t" + payload
    assert decode(core, packet) == ([("t", payload, 0, 0)], [], [], [], [])
    assert core.encode_publishes([("t", payload, False, 0, 0)]) == packet


def test_the_largest_remaining_length_is_read_from_four_bytes(core):
    decoder = core.MqttDecoder(1000)
    assert decoder.feed(b"\x32\xff\xff\xff\x7f\x00\x01t\x00\x05") == (
        [],
        [],
        [],
        [],
        [("t", 1, 5, MAX_REMAINING_LENGTH - 5)],
    )
    assert decoder.buffered == 0


# ------------------------------------------------------------------- chunking ----

STREAM = (
    b"\x20\x02\x00\x00"
    + b"\x90\x03\x00\x01\x01"
    + b"\x32\x0c\x00\x03a/b\x00\x0ahello"
    + b"\x40\x02\x00\x0a"
    + b"\x31\x83\x01\x00\x03big"
    + bytes(range(126))
    + b"\xd0\x00"
    + b"\x3b\x07\x00\x03a/b\xff\xff"
    + b"\xb0\x02\x00\x07"
    + b"\x30\x05\x00\x01xyz"
)


def test_every_split_of_a_stream_gives_the_result_of_one_feed(core):
    whole = feed_all(core.MqttDecoder(), [STREAM])
    assert len(whole[0]) == 4
    assert whole[1] == [1, 2]
    for cut in range(len(STREAM) + 1):
        decoder = core.MqttDecoder()
        assert feed_all(decoder, [STREAM[:cut], STREAM[cut:]]) == whole, cut
        assert decoder.buffered == 0


def test_a_stream_fed_byte_by_byte_gives_the_result_of_one_feed(core):
    decoder = core.MqttDecoder()
    chunks = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert feed_all(decoder, chunks) == feed_all(core.MqttDecoder(), [STREAM])
    assert decoder.buffered == 0


def test_a_partial_packet_is_buffered_until_it_completes(core):
    decoder = core.MqttDecoder()
    assert decoder.feed(b"\x40\x02\x00\x01\x30") == ([], [], [1], [], [])
    assert decoder.buffered == 1
    assert decoder.feed(b"\x05\x00\x01a") == ([], [], [], [], [])
    assert decoder.buffered == 5
    assert decoder.feed(b"") == ([], [], [], [], [])
    assert decoder.feed(b"bc\xd0") == ([("a", b"bc", 0, 0)], [], [], [], [])
    assert decoder.buffered == 1
    assert decoder.feed(b"\x00") == ([], [], [], [(13, b"")], [])
    assert decoder.buffered == 0


# ---------------------------------------------------------------- max_packet ----


def big_publish(topic: bytes, size: int, qos: int = 1, packet_id: int = 42) -> bytes:
    head = len(topic).to_bytes(2, "big") + topic + (packet_id.to_bytes(2, "big") if qos else b"")
    length = len(head) + size
    encoded = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded.append(byte | 0x80 if length else byte)
        if not length:
            break
    payload = (bytes(range(251)) * (size // 251 + 1))[:size]
    return bytes([0x30 | qos << 1]) + bytes(encoded) + head + payload


def test_an_oversized_publish_is_skipped_across_many_feeds(core):
    decoder = core.MqttDecoder(100)
    stream = big_publish(b"dev/big", 50_000) + b"\x30\x05\x00\x01sok" + b"\x40\x02\x00\x02"
    results = []
    for at in range(0, len(stream), 64):
        results.append(decoder.feed(stream[at : at + 64]))
        assert decoder.buffered < 64
    merged = ([], [], [], [], [])
    for result in results:
        for index in range(5):
            merged[index].extend(result[index])
    assert merged == ([("s", b"ok", 0, 0)], [], [2], [], [("dev/big", 1, 42, 50_000)])
    # Reported once, as soon as its topic and packet id are here.
    assert results[0][4] == [("dev/big", 1, 42, 50_000)]


def test_a_dropped_publish_waits_for_its_topic_and_packet_id(core):
    decoder = core.MqttDecoder(10)
    packet = big_publish(b"a/b", 20)  # 0x32 0x1b 0x00 0x03 a / b 0x00 0x2a payload
    for split in range(1, 9):
        assert decoder.feed(packet[split - 1 : split])[4] == []
    assert decoder.feed(packet[8:]) == ([], [], [], [], [("a/b", 1, 42, 20)])
    assert decoder.buffered == 0
    assert decoder.feed(b"\xd0\x00") == ([], [], [], [(13, b"")], [])


def test_max_packet_bounds_the_remaining_length_and_qos_0_drops_have_id_0(core):
    packet = big_publish(b"t", 5, qos=0)  # remaining length 8
    assert decode(core, packet, 8)[0] == [("t", bytes(range(5)), 0, 0)]
    assert decode(core, packet, 7) == ([], [], [], [], [("t", 0, 0, 5)])
    retained = b"\x31" + packet[1:]
    assert decode(core, retained, 7) == ([], [], [], [], [("t", 0, 0, 5)])


def test_the_default_max_packet_is_16_mib(core):
    assert core.DEFAULT_MAX_PACKET == 16 * 1024 * 1024
    decoder = core.MqttDecoder()
    header = big_publish(b"t", 16 * 1024 * 1024 - 4)[:16]
    assert decoder.feed(header) == ([], [], [], [], [("t", 1, 42, 16 * 1024 * 1024 - 4)])
    assert decoder.buffered == 0
    at_the_limit = core.MqttDecoder()
    assert at_the_limit.feed(big_publish(b"t", 16 * 1024 * 1024 - 5)[:16]) == ([], [], [], [], [])
    assert at_the_limit.buffered == 16


@pytest.mark.parametrize("value", [-1, MAX_REMAINING_LENGTH + 1, 2**70, True, 1.0, None, "5"])
def test_max_packet_must_be_an_int_in_range(core, value):
    with pytest.raises(ValueError, match=r"max_packet must be an int in \[0, 268435455\]"):
        core.MqttDecoder(value)
    assert core.MqttDecoder(max_packet=MAX_REMAINING_LENGTH).buffered == 0
    assert core.MqttDecoder(0).buffered == 0


@pytest.mark.parametrize("data", [bytearray(b"\xd0\x00"), memoryview(b"\xd0\x00"), "x", None, 1])
def test_feed_takes_bytes_only(core, data):
    with pytest.raises(TypeError, match=f"data must be bytes, not {type(data).__name__}"):
        core.MqttDecoder().feed(data)


# ---------------------------------------------------------- malformed input ----

MALFORMED = [
    # Packet types a broker must not send to a client.
    (b"\x00\x00", "a broker must not send reserved type 0"),
    (b"\x10\x00", "a broker must not send CONNECT"),
    (b"\x50\x02\x00\x01", r"a broker must not send PUBREC \(QoS 2\)"),
    (b"\x62\x02\x00\x01", r"a broker must not send PUBREL \(QoS 2\)"),
    (b"\x70\x02\x00\x01", r"a broker must not send PUBCOMP \(QoS 2\)"),
    (b"\x82\x06\x00\x01\x00\x01a\x00", "a broker must not send SUBSCRIBE"),
    (b"\xa2\x05\x00\x01\x00\x01a", "a broker must not send UNSUBSCRIBE"),
    (b"\xc0\x00", "a broker must not send PINGREQ"),
    (b"\xe0\x00", "a broker must not send DISCONNECT"),
    (b"\xf0\x00", "a broker must not send reserved type 15"),
    # PUBLISH flags.
    (b"\x36\x05\x00\x01a\x00\x01", "PUBLISH with QoS 3"),
    (b"\x34\x05\x00\x01a\x00\x01", r"PUBLISH with QoS 2 \(the node subscribes at QoS 1 at most\)"),
    (b"\x38\x04\x00\x01ax", "PUBLISH with DUP set at QoS 0"),
    # A fifth remaining-length byte: raised from the fourth one.
    (b"\x30\xff\xff\xff\xff\x01", "a remaining length longer than 4 bytes"),
    (b"\xd0\x80\x80\x80\x80", "a remaining length longer than 4 bytes"),
    # PUBLISH bodies.
    (b"\x30\x00", "PUBLISH: no topic length"),
    (b"\x30\x01\x00", "PUBLISH: no topic length"),
    (b"\x30\x02\x00\x00", "PUBLISH: an empty topic"),
    (b"\x32\x04\x00\x00\x00\x01", "PUBLISH: an empty topic"),
    (b"\x30\x03\x00\x01\xff", "PUBLISH: the topic is not valid UTF-8"),
    (b"\x30\x04\x00\x02\xc0\xaf", "PUBLISH: the topic is not valid UTF-8"),  # overlong '/'
    (b"\x30\x05\x00\x03\xed\xa0\x80", "PUBLISH: the topic is not valid UTF-8"),  # surrogate
    (b"\x30\x05\x00\x03a/+", r"PUBLISH: the topic holds a wildcard or U\+0000"),
    (b"\x30\x05\x00\x03a/#", r"PUBLISH: the topic holds a wildcard or U\+0000"),
    (b"\x30\x05\x00\x03a\x00b", r"PUBLISH: the topic holds a wildcard or U\+0000"),
    (b"\x32\x05\x00\x01a\x00\x00", "PUBLISH: packet id 0 at QoS 1"),
    (b"\x30\x03\x00\x05a", "PUBLISH: the topic is longer than the packet"),
    (b"\x32\x04\x00\x01ax", "PUBLISH: the topic is longer than the packet"),  # no packet id
    # Control packets of the wrong size.
    (b"\x20\x03\x00\x00\x00", r"packet type 2 of 3 bytes \(must be 2\)"),
    (b"\x40\x01\x00", r"packet type 4 of 1 bytes \(must be 2\)"),
    (b"\x40\x00", r"packet type 4 of 0 bytes \(must be 2\)"),
    (b"\xb0\x03\x00\x01\x00", r"packet type 11 of 3 bytes \(must be 2\)"),
    (b"\xd0\x01\x00", r"packet type 13 of 1 bytes \(must be 0\)"),
    (b"\x90\x02\x00\x01", "SUBACK of 2 bytes"),
    # Control packets with flags set.
    (b"\x21\x02\x00\x00", "packet type 2 with flags 0x1"),
    (b"\x42\x02\x00\x01", "packet type 4 with flags 0x2"),
    (b"\x98\x03\x00\x01\x00", "packet type 9 with flags 0x8"),
    (b"\xb4\x02\x00\x01", "packet type 11 with flags 0x4"),
    (b"\xdf\x00", "packet type 13 with flags 0xf"),
    # Bodies of control packets.
    (b"\x90\x03\x00\x01\x03", "SUBACK: a return code other than 0, 1, 2 or 0x80"),
    (b"\x90\x04\x00\x01\x00\x81", "SUBACK: a return code other than 0, 1, 2 or 0x80"),
    (b"\x90\x03\x00\x01\xff", "SUBACK: a return code other than 0, 1, 2 or 0x80"),
    (b"\x20\x02\x02\x00", "CONNACK: reserved flags set"),
    (b"\x20\x02\x80\x00", "CONNACK: reserved flags set"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_a_malformed_packet_raises_and_fails_the_decoder(core, data, message):
    decoder = core.MqttDecoder()
    with pytest.raises(MqttPacketError, match=f"^{message}$"):
        decoder.feed(b"\x40\x02\x00\x01" + data)  # the PUBACK before it is lost with it
    assert decoder.buffered == 0
    for later in (b"\xd0\x00", b"", data):
        with pytest.raises(MqttPacketError, match=f"^{message}$"):
            decoder.feed(later)
    with pytest.raises(TypeError):
        decoder.feed(bytearray())


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_a_malformed_packet_raises_whatever_the_chunks(core, data, message):
    decoder = core.MqttDecoder()
    with pytest.raises(MqttPacketError, match=f"^{message}$"):  # noqa: PT012
        for index in range(len(data)):
            decoder.feed(data[index : index + 1])


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"\x90\x81\x80\x04", "SUBACK of 65537 bytes"),
        (b"\x90\xff\xff\xff\x7f", "SUBACK of 268435455 bytes"),
        (b"\xd0\xc8\x01", r"packet type 13 of 200 bytes \(must be 0\)"),
        (b"\x40\xff\xff\x7f", r"packet type 4 of 2097151 bytes \(must be 2\)"),
        (b"\x20\x80\x01", r"packet type 2 of 128 bytes \(must be 2\)"),
    ],
)
def test_an_oversized_control_packet_is_rejected_from_its_header_alone(core, header, message):
    with pytest.raises(MqttPacketError, match=f"^{message}$"):
        core.MqttDecoder().feed(header)


def test_the_largest_suback_is_accepted(core):
    body = b"\x00\x01" + b"\x01" * 65_534
    assert decode(core, b"\x90\x80\x80\x04" + body)[3] == [(9, body)]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x36\xff\x01", "PUBLISH with QoS 3"),
        (b"\x34\xff\x01", r"PUBLISH with QoS 2 \(the node subscribes at QoS 1 at most\)"),
        (b"\x38\xff\x01", "PUBLISH with DUP set at QoS 0"),
        (b"\x30\x01", "PUBLISH: no topic length"),
        (b"\x32\xff\x01\x01\x00", "PUBLISH: the topic is longer than the packet"),
        (b"\x30\xff\x01\x00\x01+", r"PUBLISH: the topic holds a wildcard or U\+0000"),
        (b"\x30\xff\x01\x00\x00", "PUBLISH: an empty topic"),
        (b"\x32\xff\x01\x00\x01a\x00\x00", "PUBLISH: packet id 0 at QoS 1"),
    ],
)
def test_an_oversized_publish_is_checked_before_it_is_skipped(core, data, message):
    with pytest.raises(MqttPacketError, match=f"^{message}$"):
        core.MqttDecoder(0).feed(data)


# ------------------------------------------------------------------- encoders ----


def test_encode_publishes_known_answers(core):
    assert core.encode_publishes([]) == b""
    assert core.encode_publishes(
        [
            ("a/b", b"hello", False, 0, 0),
            ("a/b", b"hello", True, 1, 10),
            ("\u00e9", b"", False, 0, 99_999),  # the packet id is ignored at QoS 0
            ("x", b"y", True, 0, -1),
        ]
    ) == (
        b"\x30\x0a\x00\x03a/bhello"
        + b"\x33\x0c\x00\x03a/b\x00\x0ahello"
        + b"\x30\x04\x00\x02\xc3\xa9"
        + b"\x31\x04\x00\x01xy"
    )


def test_encode_acks_known_answers(core):
    assert core.encode_acks([]) == b""
    assert core.encode_acks([(1, 1), (0, 0), (2**80, 0), (65_535, 1), (0x1234, 1)]) == (
        b"\x40\x02\x00\x01\x40\x02\xff\xff\x40\x02\x12\x34"
    )


class Str(str):
    __slots__ = ()


class Tuple(tuple):
    __slots__ = ()


@pytest.mark.parametrize(
    "publishes",
    [
        ("t", b"", False, 0, 0),
        (("t", b"", False, 0, 0),),
        {"t": b""},
        None,
        [["t", b"", False, 0, 0]],
        [Tuple(("t", b"", False, 0, 0))],
        [("t", b"", False, 0)],
        [("t", b"", False, 0, 0, 0)],
        [(b"t", b"", False, 0, 0)],
        [(Str("t"), b"", False, 0, 0)],
        [("t", bytearray(), False, 0, 0)],
        [("t", "x", False, 0, 0)],
        [("t", b"", 0, 0, 0)],
        [("t", b"", None, 0, 0)],
        [("t", b"", False, True, 0)],
        [("t", b"", False, 1.0, 1)],
        [("t", b"", False, 1, False)],
        [("t", b"", False, 1, None)],
        [("t", b"", False, 0, 0), 5],
    ],
)
def test_encode_publishes_rejects_wrong_types(core, publishes):
    with pytest.raises(TypeError, match=r"list of|must be a"):
        core.encode_publishes(publishes)


@pytest.mark.parametrize(
    ("publish", "message"),
    [
        (("", b"", False, 0, 0), "a topic must be 1 to 65535 bytes, not 0"),
        (("a" * 65_536, b"", False, 0, 0), "a topic must be 1 to 65535 bytes, not 65536"),
        (("\u00e9" * 32_768, b"", False, 0, 0), "a topic must be 1 to 65535 bytes, not 65536"),
        (("a\ud800", b"", False, 0, 0), r"a topic must be valid UTF-8 \(no lone surrogates\)"),
        (("a/+", b"", False, 0, 0), "must not hold '\\+', '#' or U\\+0000: 'a/\\+'"),
        (("#", b"", False, 0, 0), "must not hold"),
        (("a\x00", b"", False, 0, 0), "must not hold"),
        (("t", b"", False, 2, 1), "PUBLISH QoS must be 0 or 1, not 2"),
        (("t", b"", False, -1, 1), "PUBLISH QoS must be 0 or 1, not -1"),
        (("t", b"", False, 2**64, 1), f"PUBLISH QoS must be 0 or 1, not {2**64}"),
        (("t", b"", False, 1, 0), r"a packet id must be in \[1, 65535\], not 0"),
        (("t", b"", False, 1, 65_536), r"a packet id must be in \[1, 65535\], not 65536"),
        (("t", b"", False, 1, -(2**70)), rf"a packet id must be in \[1, 65535\], not {-(2**70)}"),
    ],
)
def test_encode_publishes_rejects_bad_values(core, publish, message):
    with pytest.raises(ValueError, match=message):
        core.encode_publishes([("ok", b"", False, 0, 0), publish])


def test_the_wildcard_message_shows_80_characters_of_the_topic(core):
    with pytest.raises(ValueError, match="must not hold") as raised:
        core.encode_publishes([("#" * 200, b"", False, 0, 0)])
    assert str(raised.value).endswith(": '" + "#" * 79)


def test_the_first_bad_publish_in_order_raises(core):
    with pytest.raises(TypeError):
        core.encode_publishes(
            [("t", b"", False, 0, 0), ("t", b"", 1, 0, 0), ("", b"", False, 0, 0)]
        )
    with pytest.raises(ValueError, match="not 0"):
        core.encode_publishes([("", b"", False, 0, 0), ("t", b"", 1, 0, 0)])


@pytest.mark.parametrize(
    "acks",
    [
        (1, 1),
        ((1, 1),),
        None,
        [[1, 1]],
        [Tuple((1, 1))],
        [(1,)],
        [(1, 1, 1)],
        [(True, 1)],
        [(1, True)],
        [(1.0, 1)],
        [(1, None)],
        [(1, 1), "x"],
    ],
)
def test_encode_acks_rejects_wrong_types(core, acks):
    with pytest.raises(TypeError, match=r"acks must be a list|an ack must be a"):
        core.encode_acks(acks)


@pytest.mark.parametrize(
    ("ack", "message"),
    [
        ((1, 2), "only QoS 1 messages are acknowledged, not QoS 2"),
        ((1, -1), "only QoS 1 messages are acknowledged, not QoS -1"),
        ((1, 2**65), f"only QoS 1 messages are acknowledged, not QoS {2**65}"),
        ((0, 1), r"a packet id must be in \[1, 65535\], not 0"),
        ((65_536, 1), r"a packet id must be in \[1, 65535\], not 65536"),
        ((2**63, 1), rf"a packet id must be in \[1, 65535\], not {2**63}"),
    ],
)
def test_encode_acks_rejects_bad_values(core, ack, message):
    with pytest.raises(ValueError, match=message):
        core.encode_acks([(1, 1), ack])


def test_encoded_publishes_and_acks_decode_back(core):
    publishes = [
        ("dev/1/telemetry", b'{"t": 21.5}', False, 1, 1),
        ("dev/\u00e9/state", bytes(range(256)) * 70, True, 0, 0),
        ("$aws/things/x/shadow/update", b"", True, 1, 65_535),
        ("/", b"x", False, 0, 0),
    ]
    acks = [(1, 1), (7, 0), (65_535, 1)]
    data = core.encode_publishes(publishes) + core.encode_acks(acks)
    assert type(data) is bytes
    messages, retained, decoded_acks, controls, dropped = decode(core, data)
    assert messages == [(topic, payload, qos, pid) for topic, payload, _, qos, pid in publishes]
    assert retained == [1, 2]
    assert decoded_acks == [1, 65_535]
    assert (controls, dropped) == ([], [])


def test_both_backends_encode_identically(pure, rust):
    publishes = [("a/b", b"\x00" * 300, True, 1, 5), ("c", b"", False, 0, 0)]
    assert pure.encode_publishes(publishes) == rust.encode_publishes(publishes)
    assert pure.encode_acks([(5, 1), (6, 0)]) == rust.encode_acks([(5, 1), (6, 0)])
