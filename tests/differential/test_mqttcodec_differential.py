"""The Rust MQTT codec and the pure twin agree exactly.

Hypothesis builds streams of every packet the decoder accepts (PUBLISH at QoS 0 and 1
with and without RETAIN and DUP, some over ``max_packet``; PUBACK, CONNACK, SUBACK,
UNSUBACK, PINGRESP), now and then a malformed packet or a few garbage bytes, cuts them at
random chunk boundaries and feeds both backends the same chunks: every call must give
equal results (or the same exception class and message), with equal ``buffered``. The
encoders get generated batches, valid and invalid, and must agree the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from itertools import pairwise
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from conftest import native_core
from edgenode import _pure


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """The result of ``call``, or its exception's class and message, comparably."""
    try:
        return ("ok", call())
    except Exception as error:
        return (type(error).__name__, str(error))


def remaining_length(length: int) -> bytes:
    encoded = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(encoded)


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + remaining_length(len(body)) + body


TOPICS = st.lists(
    st.sampled_from(["a", "b", "/", "$", "\u00e9", "dev", "\U0001f600"]), min_size=1, max_size=6
).map("".join)
PACKET_IDS = st.integers(min_value=1, max_value=0xFFFF)


@st.composite
def publishes(draw: st.DrawFn) -> bytes:
    topic = draw(TOPICS).encode()
    qos = draw(st.sampled_from([0, 1]))
    flags = qos << 1 | draw(st.sampled_from([0, 1]))  # RETAIN
    if qos and draw(st.booleans()):
        flags |= 0x08  # DUP
    head = len(topic).to_bytes(2, "big") + topic
    if qos:
        head += draw(PACKET_IDS).to_bytes(2, "big")
    size = draw(st.integers(min_value=0, max_value=20) | st.sampled_from([100, 300, 1000]))
    return packet(0x30 | flags, head + bytes([size % 256]) * size)


CONTROLS = st.one_of(
    PACKET_IDS.map(lambda pid: packet(0x40, pid.to_bytes(2, "big"))),
    st.tuples(st.sampled_from([0, 1]), st.integers(0, 255)).map(lambda c: packet(0x20, bytes(c))),
    st.tuples(PACKET_IDS, st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=5)).map(
        lambda s: packet(0x90, s[0].to_bytes(2, "big") + bytes(s[1]))
    ),
    PACKET_IDS.map(lambda pid: packet(0xB0, pid.to_bytes(2, "big"))),
    st.just(b"\xd0\x00"),
)

# A malformed or forbidden packet, or bytes that are no packet at all.
BAD = st.one_of(
    st.binary(min_size=1, max_size=6),
    st.sampled_from(
        [
            b"\x10\x00",
            b"\xe0\x00",
            b"\x62\x02\x00\x01",
            b"\x34\x05\x00\x01a\x00\x01",
            b"\x38\x04\x00\x01ax",
            b"\x30\xff\xff\xff\xff\x01",
            b"\x30\x03\x00\x01\xff",
            b"\x30\x05\x00\x03a/+",
            b"\x32\x05\x00\x01a\x00\x00",
            b"\x30\x03\x00\x05a",
            b"\x30\x01\x00",
            b"\x40\x03\x00\x00\x00",
            b"\xd1\x00",
            b"\x90\x03\x00\x01\x03",
            b"\x20\x02\x02\x00",
            b"\x90\x81\x80\x04",
            b"\x32\x03\x00\x05a",  # over a small max_packet: dropped, but its topic is too long
        ]
    ),
)

PACKETS = st.integers(min_value=0, max_value=24).flatmap(
    lambda n: BAD if n == 0 else (publishes() if n % 2 else CONTROLS)
)
MAX_PACKETS = st.sampled_from([_pure.DEFAULT_MAX_PACKET, 0, 1, 2, 8, 30, 120, 400])


def feed_both(chunks: list[bytes], max_packet: int) -> list[tuple[str, Any]]:
    """Feed both backends ``chunks``; assert they agree on every call; the outcomes."""
    rust = native_core()
    python_decoder = _pure.MqttDecoder(max_packet)
    rust_decoder = rust.MqttDecoder(max_packet)
    outcomes = []
    for chunk in chunks:
        expected = outcome(partial(python_decoder.feed, chunk))
        assert outcome(partial(rust_decoder.feed, chunk)) == expected, chunk
        assert python_decoder.buffered == rust_decoder.buffered
        outcomes.append(expected)
    return outcomes


def merged(outcomes: list[tuple[str, Any]]) -> tuple[list[Any], ...]:
    result: tuple[list[Any], ...] = ([], [], [], [], [])
    for _, (messages, retained, acks, controls, dropped) in outcomes:
        result[1].extend(len(result[0]) + index for index in retained)
        result[0].extend(messages)
        result[2].extend(acks)
        result[3].extend(controls)
        result[4].extend(dropped)
    return result


@given(
    packets=st.lists(PACKETS, max_size=16),
    max_packet=MAX_PACKETS,
    data=st.data(),
)
def test_both_backends_decode_any_chunking_of_a_stream_identically(
    packets: list[bytes], max_packet: int, data: st.DataObject
) -> None:
    stream = b"".join(packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[start:end] for start, end in pairwise(bounds)]
    outcomes = feed_both(chunks, max_packet)
    whole = feed_both([stream], max_packet)
    if whole[0][0] == "ok":
        # No error: the chunks give what one feed gives.
        assert all(kind == "ok" for kind, _ in outcomes)
        assert merged(outcomes) == merged(whole)
    else:
        # The error surfaces on some chunk, and every later one repeats it.
        failed = [index for index, (kind, _) in enumerate(outcomes) if kind != "ok"]
        assert failed
        assert failed == list(range(failed[0], len(outcomes)))
        assert {outcomes[index] for index in failed} == {whole[0]}


@given(
    stream=st.binary(max_size=200),
    max_packet=MAX_PACKETS,
    data=st.data(),
)
def test_both_backends_agree_on_arbitrary_bytes(
    stream: bytes, max_packet: int, data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    bounds = [0, *cuts, len(stream)]
    feed_both([stream[start:end] for start, end in pairwise(bounds)], max_packet)


@given(
    value=st.integers(min_value=-2, max_value=2**40)
    | st.sampled_from([True, None, 1.5, "1", 268_435_456])
)
def test_both_backends_check_max_packet_identically(value: Any) -> None:
    rust = native_core()
    expected = outcome(lambda: _pure.MqttDecoder(value).buffered)
    assert outcome(lambda: rust.MqttDecoder(value).buffered) == expected


# ------------------------------------------------------------------ encoders ----

ENCODE_TOPICS = st.text(
    alphabet=st.sampled_from(["a", "/", "+", "#", "\x00", "\u00e9", "\ud800", "$"]), max_size=6
) | st.sampled_from(["a" * 65_535, "a" * 65_536, "#" * 100])
INTS = st.integers(min_value=-2, max_value=70_000) | st.sampled_from([2**63, -(2**64), 2**100])
WRONG = st.sampled_from([None, 1.0, True, b"t", "t", [1], ()])


def field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.integers(0, 15).flatmap(lambda n: WRONG if n == 0 else valid)


PUBLISH_ITEMS = st.one_of(
    st.tuples(
        field(ENCODE_TOPICS),
        field(st.binary(max_size=20)),
        field(st.booleans()),
        field(st.sampled_from([0, 1]) | INTS),
        field(PACKET_IDS | INTS),
    ),
    st.integers(0, 30).flatmap(
        lambda n: (
            st.sampled_from([["t", b"", False, 0, 0], ("t", b"", False, 0), 5])
            if n == 0
            else st.tuples(TOPICS, st.binary(max_size=20), st.booleans(), st.just(1), PACKET_IDS)
        )
    ),
)
ACK_ITEMS = st.one_of(
    st.tuples(field(PACKET_IDS | INTS), field(st.sampled_from([0, 1]) | INTS)),
    st.tuples(PACKET_IDS, st.sampled_from([0, 1])),
    st.sampled_from([[1, 1], (1,), (1, 1, 1), None]),
)


@given(publishes=st.lists(PUBLISH_ITEMS, max_size=6) | WRONG)
def test_both_backends_encode_publishes_identically(publishes: Any) -> None:
    rust = native_core()
    expected = outcome(lambda: _pure.encode_publishes(publishes))
    assert outcome(lambda: rust.encode_publishes(publishes)) == expected
    if expected[0] == "ok":  # and what is encoded decodes back
        messages = _pure.MqttDecoder().feed(expected[1])[0]
        assert messages == [(t, p, q, i if q else 0) for t, p, _, q, i in publishes]


@given(acks=st.lists(ACK_ITEMS, max_size=8) | WRONG)
def test_both_backends_encode_acks_identically(acks: Any) -> None:
    rust = native_core()
    expected = outcome(lambda: _pure.encode_acks(acks))
    assert outcome(lambda: rust.encode_acks(acks)) == expected
