"""Frame codec: exact bytes, round trips, and strict, bounded decoding of hostile input."""

from __future__ import annotations

import cbor2
import pytest

from edgenode.errors import ProtocolError
from edgenode.protocol import ErrorCode
from edgenode.protocol.constants import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_ACK_RANGES_PER_FRAME,
    MAX_BODY_DEPTH,
    MAX_CBOR_DEPTH,
    MAX_KEY_LENGTH,
    MAX_REVISION,
)
from edgenode.protocol.frames import (
    AckFrame,
    ChangeErrorFrame,
    ChangesFrame,
    ChunkFrame,
    Delete,
    ErrorFrame,
    Frame,
    HelloFrame,
    PingFrame,
    Resource,
    RetryAfterFrame,
    SnapshotBeginFrame,
    SnapshotEndFrame,
    SnapshotItemsFrame,
    UplinkAckFrame,
    UplinkFrame,
    UplinkRecord,
    Upsert,
    WelcomeFrame,
    assemble_list_frame,
    cbor_head,
    check_cbor_structure,
    decode_frame,
    decoded_map_pairs,
    encode_frame,
    error_code,
)

LIMIT = DEFAULT_MAX_FRAME_SIZE

EVERY_FRAME: list[Frame] = [
    HelloFrame(1, "ship-7", "edgenode 0.1", 42, 4096),
    WelcomeFrame(1, 100, 15000, 45000, 1048576, 1000, 8388608),
    ErrorFrame(6, "protocol version 9 is not supported"),
    RetryAfterFrame(30000, "overloaded"),
    ChangesFrame(
        9,
        (
            Upsert("Config/default/a", 5, {"spec": {"x": [1, 2.5, None, True, "s"]}}),
            Upsert("Config/default/b", 6, b"\x00\xff"),
            Delete("Config/default/c", 7),
        ),
    ),
    ChangesFrame(12, ()),
    ChunkFrame("Config/default/big", 8, True, 10, 4, b"abcdef"),
    ChunkFrame("Config/default/raw", 8, False, 3, 0, b"abc"),
    SnapshotBeginFrame(50, 2),
    SnapshotItemsFrame((Resource("a", 1, {}), Resource("b", 50, b""))),
    SnapshotEndFrame(),
    AckFrame(MAX_REVISION),
    ChangeErrorFrame("Device/x", 7, 2, "unknown kind Widget"),
    UplinkFrame((UplinkRecord(1, 0, b"t"), UplinkRecord(2**40, 9, b""))),
    UplinkAckFrame(((1, 3), (5, 5), (7, 2**62))),
    PingFrame(),
    HelloFrame(1, "ship-7", "edgenode 0.1", 42, 4096, next_seq=1001),  # optional ns
]


@pytest.mark.parametrize("frame", EVERY_FRAME, ids=lambda f: type(f).__name__)
def test_every_frame_survives_an_encode_decode_round_trip(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame), LIMIT) == frame


@pytest.mark.parametrize("frame", EVERY_FRAME, ids=lambda f: type(f).__name__)
def test_every_frame_is_a_cbor_map_whose_type_field_comes_first(frame: Frame) -> None:
    obj = cbor2.loads(encode_frame(frame))
    assert next(iter(obj)) == "t"


def test_a_ping_is_five_exact_bytes() -> None:
    assert encode_frame(PingFrame()) == bytes.fromhex("a1 6174 6170")
    assert decode_frame(bytes.fromhex("a16174 6170"), LIMIT) == PingFrame()


def test_an_ack_encodes_to_known_bytes() -> None:
    assert encode_frame(AckFrame(5)) == bytes.fromhex("a2 6174 6161 6172 05")
    assert encode_frame(AckFrame(1000)) == bytes.fromhex("a2 6174 6161 6172 1903e8")


def test_a_hello_encodes_to_known_bytes() -> None:
    expected = bytes.fromhex("a6 6174 6168 6176 01 616e 626e31 627377 60 6172 00 626d66 191000")
    assert encode_frame(HelloFrame(1, "n1", "", 0, 4096)) == expected
    assert decode_frame(expected, LIMIT) == HelloFrame(1, "n1", "", 0, 4096)


def test_a_delete_batch_encodes_to_known_bytes() -> None:
    expected = bytes.fromhex("a3 6174 6163 6172 07 626368 81 a3 616f 6164 616b 6161 6172 07")
    frame = ChangesFrame(7, (Delete("a", 7),))
    assert encode_frame(frame) == expected
    assert decode_frame(expected, LIMIT) == frame


def test_an_uplink_ack_encodes_ranges_as_pairs() -> None:
    expected = bytes.fromhex("a2 6174 627561 6161 81 82 01 03")
    assert encode_frame(UplinkAckFrame(((1, 3),))) == expected


def test_assembled_list_frames_equal_what_cbor2_encodes() -> None:
    items = [cbor2.dumps({"s": i, "p": 1, "x": b"y" * i}) for i in range(30)]
    assembled = assemble_list_frame({"t": "u"}, "rs", items)
    expected = cbor2.dumps({"t": "u", "rs": [{"s": i, "p": 1, "x": b"y" * i} for i in range(30)]})
    assert assembled == expected


@pytest.mark.parametrize("length", [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32])
def test_cbor_heads_match_cbor2_for_every_width(length: int) -> None:
    unsigned = cbor2.dumps(length)  # major type 0 uses the same argument encoding
    assert cbor_head(0, length) == unsigned
    assert cbor_head(4, length) == bytes([unsigned[0] | 0x80]) + unsigned[1:]


def _code(data: bytes, limit: int = LIMIT) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        decode_frame(data, limit)
    return error_code(info.value)


def test_a_frame_over_the_limit_is_refused_before_decoding() -> None:
    assert _code(encode_frame(PingFrame()), limit=4) is ErrorCode.FRAME_TOO_BIG


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"not cbor at all",
        b"\xa1",  # truncated map
        b"\x5a\xff\xff\xff\xff",  # byte string declaring 4 GiB
        b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff",  # array declaring 2**64 - 1 items
        b"\xbb\x7f\xff\xff\xff\xff\xff\xff\xff",  # map declaring 2**63 - 1 pairs
        b"\x9f\x01\xff",  # indefinite-length array
        b"\xc1\x1a\x00\x00\x00\x01",  # tag 1 (epoch date)
        b"\xd8\x1c\x81\xd8\x1d\x00",  # value-sharing tags 28/29 (cycles)
        b"\xf7",  # undefined
        b"\xf8\x20",  # simple value 32
        cbor2.dumps({"t": "p"}) + b"\x00",  # trailing bytes
        b"\x81" * (MAX_CBOR_DEPTH + 1) + b"\x00",  # too deep
        b"\x81" * 200_000 + b"\x00",  # far too deep
        bytes.fromhex("a2 6174 6170 6174 6170"),  # duplicate key
        bytes.fromhex("a1 6174 62 c328"),  # invalid UTF-8
        cbor2.dumps([1, 2]),  # not a map
        cbor2.dumps({"t": 5}),  # type not a string
        cbor2.dumps({"x": "p"}),  # no type
    ],
)
def test_bytes_that_are_not_a_well_formed_frame_map_are_malformed(data: bytes) -> None:
    assert _code(data) is ErrorCode.MALFORMED_FRAME


def test_an_unknown_frame_type_has_its_own_code() -> None:
    assert _code(cbor2.dumps({"t": "zz"})) is ErrorCode.UNKNOWN_FRAME_TYPE


def test_a_hello_of_an_unknown_version_is_unsupported_even_with_unknown_fields() -> None:
    data = cbor2.dumps({"t": "h", "v": 99, "future": [1, 2, 3]})
    with pytest.raises(ProtocolError, match="version 99 is not supported"):
        decode_frame(data, LIMIT)
    assert _code(data) is ErrorCode.UNSUPPORTED_VERSION


def test_a_welcome_of_another_version_is_unsupported() -> None:
    welcome = cbor2.loads(encode_frame(EVERY_FRAME[1]))
    welcome["v"] = 3
    assert _code(cbor2.dumps(welcome)) is ErrorCode.UNSUPPORTED_VERSION


def _mutated(frame: Frame, **changes: object) -> bytes:
    obj = cbor2.loads(encode_frame(frame))
    obj.update(changes)
    return cbor2.dumps(obj)


@pytest.mark.parametrize(
    ("frame", "changes"),
    [
        (EVERY_FRAME[0], {"r": True}),  # a bool is not an int
        (EVERY_FRAME[0], {"r": -1}),
        (EVERY_FRAME[0], {"r": 2**64 - 1}),
        (EVERY_FRAME[0], {"n": ""}),
        (EVERY_FRAME[0], {"n": "x" * 254}),
        (EVERY_FRAME[0], {"mf": 100}),
        (EVERY_FRAME[0], {"extra": 1}),
        (EVERY_FRAME[1], {"hd": 15000}),  # deadline not after the interval
        (EVERY_FRAME[1], {"hb": 0}),
        (EVERY_FRAME[1], {"uw": 0}),
        (EVERY_FRAME[2], {"m": "x" * 1025}),
        (EVERY_FRAME[2], {"c": 70000}),
        (EVERY_FRAME[3], {"d": 10**12}),
        (EVERY_FRAME[3], {"d": 1.5}),
        (EVERY_FRAME[4], {"ch": {"o": "u"}}),
        (EVERY_FRAME[4], {"ch": [{"o": "x", "k": "a", "r": 1}]}),
        (EVERY_FRAME[4], {"ch": [{"o": "d", "k": "a", "r": 1, "b": b""}]}),
        (EVERY_FRAME[4], {"ch": [{"o": "u", "k": "a", "r": 1, "b": "text"}]}),
        (EVERY_FRAME[4], {"ch": [{"o": "u", "k": "a", "r": 1, "b": {1: 2}}]}),
        (EVERY_FRAME[4], {"ch": [{"o": "u", "k": "a", "r": 1, "b": {"x": b"bytes"}}]}),
        (EVERY_FRAME[4], {"ch": [{"o": "u", "k": "k" * (MAX_KEY_LENGTH + 1), "r": 1, "b": b""}]}),
        (EVERY_FRAME[6], {"x": b""}),
        (EVERY_FRAME[6], {"o": 10}),
        (EVERY_FRAME[6], {"o": 8}),  # 6 bytes at offset 8 end past 10
        (EVERY_FRAME[6], {"f": 2}),
        (EVERY_FRAME[6], {"s": 0}),
        (EVERY_FRAME[9], {"i": [{"k": "a", "r": 1}]}),
        (EVERY_FRAME[10], {"r": 1}),
        (EVERY_FRAME[13], {"rs": [{"s": 1, "p": 10, "x": b""}]}),
        (EVERY_FRAME[13], {"rs": [{"s": 1, "p": 1, "x": "str"}]}),
        (EVERY_FRAME[14], {"a": [[3, 1]]}),
        (EVERY_FRAME[14], {"a": [[1, 5], [5, 9]]}),  # overlapping
        (EVERY_FRAME[14], {"a": [[5, 9], [1, 2]]}),  # unsorted
        (EVERY_FRAME[14], {"a": [[1, 2, 3]]}),
        (EVERY_FRAME[15], {"x": None}),
        (EVERY_FRAME[-1], {"ns": 0}),  # sequence numbers start at 1
        (EVERY_FRAME[-1], {"ns": True}),
        (EVERY_FRAME[-1], {"ns": 2**63}),
    ],
)
def test_fields_of_the_wrong_type_range_or_shape_are_malformed(
    frame: Frame, changes: dict[str, object]
) -> None:
    assert _code(_mutated(frame, **changes)) is ErrorCode.MALFORMED_FRAME


def test_a_body_nested_deeper_than_the_limit_is_malformed() -> None:
    body: dict[str, object] = {}
    inner = body
    for _ in range(MAX_BODY_DEPTH):
        inner["a"] = {}
        inner = inner["a"]  # type: ignore[assignment]
    frame = ChangesFrame(1, (Upsert("k", 1, body),))
    assert _code(encode_frame(frame)) is ErrorCode.MALFORMED_FRAME


def test_a_body_at_the_depth_limit_is_accepted() -> None:
    body: dict[str, object] = {}
    inner = body
    for _ in range(MAX_BODY_DEPTH - 1):
        inner["a"] = {}
        inner = inner["a"]  # type: ignore[assignment]
    frame = ChangesFrame(1, (Upsert("k", 1, body),))
    assert decode_frame(encode_frame(frame), LIMIT) == frame


def test_too_many_ack_ranges_in_one_frame_exceed_a_limit() -> None:
    ranges = tuple((2 * i, 2 * i) for i in range(MAX_ACK_RANGES_PER_FRAME + 1))
    assert _code(encode_frame(UplinkAckFrame(ranges))) is ErrorCode.LIMIT_EXCEEDED


def test_the_structure_check_accepts_floats_and_the_three_simple_values() -> None:
    check_cbor_structure(cbor2.dumps([1.5, 1e300, False, True, None, -3, "s", b"b"]), 4)
    check_cbor_structure(bytes.fromhex("f93c00"), 1)  # half-precision 1.0


def test_duplicate_keys_show_as_fewer_decoded_pairs_than_the_maps_declare() -> None:
    # How decode_cbor finds duplicate keys with cbor2's pure-Python build (armv7l has no
    # compiled cbor2 on PyPI), which has no allow_duplicate_keys: any cbor2 keeps one pair.
    duplicate = bytes.fromhex("a2 6174 6170 6174 6170")
    assert check_cbor_structure(duplicate, 4) == 2
    assert decoded_map_pairs(cbor2.loads(duplicate)) == 1
    nested = cbor2.dumps({"a": [{"b": 1}, {"c": {"d": 2}}], "e": {}})
    assert check_cbor_structure(nested, 8) == decoded_map_pairs(cbor2.loads(nested)) == 5


def test_a_huge_declared_length_costs_nothing_to_refuse() -> None:
    # 2**64 - 1 declared items behind a 9-byte header must not allocate or loop.
    with pytest.raises(ProtocolError, match="longer than the frame"):
        check_cbor_structure(b"\x9b" + b"\xff" * 8, MAX_CBOR_DEPTH)


def test_encoding_something_that_is_not_a_frame_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode_frame("ping")  # type: ignore[arg-type]


def test_a_hello_without_the_optional_next_seq_decodes_to_none_and_omits_it_when_encoding() -> None:
    plain = HelloFrame(1, "n1", "", 0, 4096)
    assert plain.next_seq is None
    assert "ns" not in cbor2.loads(encode_frame(plain))
    assert cbor2.loads(encode_frame(EVERY_FRAME[-1]))["ns"] == 1001
