"""NodeProtocol against hand-written hub frames: handshake, changes, chunks, snapshots,
uplink window, heartbeats, and every way a hub can break the protocol."""

from __future__ import annotations

import cbor2
import pytest

from edgenode.errors import ConfigError
from edgenode.protocol import (
    ChangesReceived,
    CloseCode,
    Delete,
    ErrorCode,
    ErrorReceived,
    NodeConfig,
    NodeProtocol,
    PeerTimedOut,
    ProtocolViolation,
    Resource,
    RetryAfter,
    SnapshotReceived,
    State,
    UplinkAcked,
    UplinkRecord,
    Upsert,
    Welcomed,
)
from edgenode.protocol import node as node_module
from edgenode.protocol.constants import FEATURES, PROTOCOL_VERSION
from edgenode.protocol.frames import (
    AckFrame,
    ChangesFrame,
    ChunkFrame,
    ErrorFrame,
    Frame,
    HelloFrame,
    PingFrame,
    RetryAfterFrame,
    SnapshotBeginFrame,
    SnapshotEndFrame,
    SnapshotItemsFrame,
    UplinkAckFrame,
    UplinkFrame,
    WelcomeFrame,
    encode_frame,
)

from .helpers import frames_of

WELCOME = WelcomeFrame(1, 100, 15000, 45000, 1048576, 1000, 8388608)


def fresh(last_revision: int = 10, config: NodeConfig | None = None) -> NodeProtocol:
    node = NodeProtocol("ship-7", "edgenode 0.1", last_revision, 0.0, config)
    node.data_to_send()
    return node


def opened(
    last_revision: int = 10, config: NodeConfig | None = None, **welcome: int
) -> NodeProtocol:
    node = fresh(last_revision, config)
    fields = {**WELCOME.__dict__, **welcome}
    node.receive_message(encode_frame(WelcomeFrame(**fields)), 0.0)
    node.events_received()
    node.data_to_send()
    return node


def feed(node: NodeProtocol, *frames: Frame, now: float = 1.0) -> None:
    for frame in frames:
        node.receive_message(encode_frame(frame), now)


def assert_violation(node: NodeProtocol, code: ErrorCode, close: CloseCode) -> None:
    events = node.events_received()
    assert isinstance(events[-1], ProtocolViolation), events
    assert events[-1].code == code, events[-1]
    assert frames_of(node.data_to_send())[-1] == ErrorFrame(code, events[-1].message[:1024])
    assert node.close_requested() is not None
    assert node.close_requested().code == close
    assert node.state is State.CLOSED


def test_the_first_message_is_a_hello_with_name_version_and_last_revision() -> None:
    node = NodeProtocol("ship-7", "edgenode 0.1", 42, 0.0, NodeConfig(max_frame_size=8192))
    assert frames_of(node.data_to_send()) == [
        HelloFrame(
            PROTOCOL_VERSION, "ship-7", "edgenode 0.1", 42, 8192, None, tuple(sorted(FEATURES))
        )
    ]
    assert node.state is State.CONNECTING
    assert node.next_deadline() == 30.0


@pytest.mark.parametrize(
    ("name", "version", "revision"),
    [("", "1", 0), ("x" * 254, "1", 0), ("n", "v" * 129, 0), ("n", "1", -1), ("n", "1", True)],
)
def test_invalid_hello_arguments_are_value_errors(name: str, version: str, revision: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        NodeProtocol(name, version, revision, 0.0)


def test_a_non_finite_now_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="finite"):
        NodeProtocol("n", "1", 0, float("nan"))


def test_invalid_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        NodeConfig(max_frame_size=100)
    with pytest.raises(ConfigError):
        NodeConfig(max_in_flight_records=0)


def test_welcome_opens_the_connection_and_reports_the_smaller_limits() -> None:
    node = fresh(config=NodeConfig(max_frame_size=65536, max_in_flight_records=10))
    feed(node, WelcomeFrame(1, 100, 2000, 6000, 1048576, 1000, 4096), now=5.0)
    assert node.events_received() == [Welcomed(1, 100, 2.0, 6.0, 65536, 10, 4096)]
    assert node.state is State.OPEN
    assert node.hub_revision == 100
    assert node.next_deadline() == 7.0  # the first ping check, one interval after welcome


def test_frames_before_welcome_are_unexpected() -> None:
    node = fresh()
    feed(node, ChangesFrame(11, ()))
    assert_violation(node, ErrorCode.UNEXPECTED_FRAME, CloseCode.PROTOCOL_ERROR)


def test_a_second_welcome_is_unexpected() -> None:
    node = opened()
    feed(node, WELCOME)
    assert_violation(node, ErrorCode.UNEXPECTED_FRAME, CloseCode.PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "frame",
    [HelloFrame(1, "x", "", 0, 4096), AckFrame(1), UplinkFrame(())],
    ids=lambda f: type(f).__name__,
)
def test_frames_only_hubs_receive_are_unexpected_at_a_node(frame: Frame) -> None:
    node = opened()
    feed(node, frame)
    assert_violation(node, ErrorCode.UNEXPECTED_FRAME, CloseCode.PROTOCOL_ERROR)


def test_retry_after_is_surfaced_with_its_delay_and_closes_with_try_again_later() -> None:
    node = fresh()
    feed(node, RetryAfterFrame(30_500, "overloaded"))
    assert node.events_received() == [RetryAfter(30.5, "overloaded")]
    assert node.close_requested().code == CloseCode.TRY_AGAIN_LATER
    assert node.data_to_send() == []


def test_an_error_frame_is_surfaced_and_closes_with_the_matching_code() -> None:
    node = fresh()
    feed(node, ErrorFrame(ErrorCode.UNSUPPORTED_VERSION, "speak version 2"))
    assert node.events_received() == [ErrorReceived(6, "speak version 2")]
    assert node.close_requested() == (4001, "speak version 2")


def test_an_unknown_error_code_closes_as_a_protocol_error() -> None:
    node = opened()
    feed(node, ErrorFrame(999, "?"))
    assert node.close_requested().code == CloseCode.PROTOCOL_ERROR


def test_changes_are_delivered_with_the_batch_revision() -> None:
    node = opened(last_revision=10)
    changes = (Upsert("a", 11, {"x": 1}), Delete("b", 13))
    feed(node, ChangesFrame(20, changes))
    assert node.events_received() == [ChangesReceived(changes, 20)]
    assert node.revision == 20


def test_an_empty_batch_just_advances_the_revision() -> None:
    node = opened(last_revision=10)
    feed(node, ChangesFrame(15, ()))
    assert node.events_received() == [ChangesReceived((), 15)]


@pytest.mark.parametrize(
    "frame",
    [
        ChangesFrame(20, (Delete("a", 10),)),  # not after the node's revision
        ChangesFrame(20, (Delete("a", 12), Delete("b", 12))),  # not strictly increasing
        ChangesFrame(20, (Delete("a", 12), Delete("b", 11))),
        ChangesFrame(11, (Delete("a", 12),)),  # batch revision behind its changes
        ChangesFrame(9, ()),  # batch revision behind the node
    ],
)
def test_changes_out_of_revision_order_are_invalid_sequences(frame: ChangesFrame) -> None:
    node = opened(last_revision=10)
    feed(node, frame)
    assert_violation(node, ErrorCode.INVALID_SEQUENCE, CloseCode.PROTOCOL_ERROR)


def test_ack_sends_the_revision_once_delivered() -> None:
    node = opened(last_revision=10)
    feed(node, ChangesFrame(20, ()))
    node.ack(20)
    node.ack(10)
    assert frames_of(node.data_to_send()) == [AckFrame(20), AckFrame(10)]


def test_acking_a_revision_never_delivered_is_a_value_error() -> None:
    node = opened(last_revision=10)
    with pytest.raises(ValueError, match="never delivered"):
        node.ack(11)


def test_acking_before_welcome_is_a_runtime_error() -> None:
    with pytest.raises(RuntimeError, match="before the connection is open"):
        fresh().ack(5)


def test_application_calls_after_close_do_nothing() -> None:
    node = opened()
    node.close()
    node.ack(10)
    node.reject_change("a", 10, 1, "bad")
    assert node.send_uplink([UplinkRecord(1, 1, b"x")]) == 0
    assert node.data_to_send() == []
    assert node.close_requested() == (1000, "")


def test_a_change_error_ack_carries_key_revision_code_and_message() -> None:
    node = opened(last_revision=10)
    feed(node, ChangesFrame(12, (Upsert("Device/x", 12, b"?"),)))
    node.reject_change("Device/x", 12, 2, "unknown kind")
    node.ack(12)
    sent = frames_of(node.data_to_send())
    assert sent[0].__class__.__name__ == "ChangeErrorFrame"
    assert (sent[0].key, sent[0].revision, sent[0].code, sent[0].message) == (
        "Device/x",
        12,
        2,
        "unknown kind",
    )
    assert sent[1] == AckFrame(12)


def test_a_chunked_body_is_delivered_once_complete() -> None:
    node = opened(last_revision=10)
    body = {"spec": {"blob": "z" * 100}}
    data = cbor2.dumps(body)
    feed(node, ChunkFrame("big", 11, True, len(data), 0, data[:40]))
    assert node.events_received() == []
    feed(node, PingFrame(), ChunkFrame("big", 11, True, len(data), 40, data[40:]))
    assert node.events_received() == [ChangesReceived((Upsert("big", 11, body),), 11)]


@pytest.mark.parametrize(
    "second",
    [
        ChunkFrame("other", 11, False, 10, 5, b"12345"),
        ChunkFrame("big", 12, False, 10, 5, b"12345"),
        ChunkFrame("big", 11, True, 10, 5, b"12345"),
        ChunkFrame("big", 11, False, 11, 5, b"12345"),
        ChunkFrame("big", 11, False, 10, 4, b"123456"),
    ],
)
def test_a_chunk_that_does_not_continue_the_body_is_an_invalid_sequence(
    second: ChunkFrame,
) -> None:
    node = opened(last_revision=10)
    feed(node, ChunkFrame("big", 11, False, 10, 0, b"01234"), second)
    assert_violation(node, ErrorCode.INVALID_SEQUENCE, CloseCode.PROTOCOL_ERROR)


def test_a_first_chunk_not_at_offset_zero_is_an_invalid_sequence() -> None:
    node = opened()
    feed(node, ChunkFrame("big", 11, False, 10, 5, b"12345"))
    assert_violation(node, ErrorCode.INVALID_SEQUENCE, CloseCode.PROTOCOL_ERROR)


def test_a_chunked_body_declaring_more_than_the_limit_is_refused_at_once() -> None:
    node = opened(config=NodeConfig(max_change_bytes=1000))
    feed(node, ChunkFrame("big", 11, False, 1001, 0, b"x"))
    assert_violation(node, ErrorCode.LIMIT_EXCEEDED, CloseCode.POLICY_VIOLATION)


def test_too_many_chunks_for_one_body_exceed_a_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "MAX_CHUNKS_PER_CHANGE", 3)
    node = opened()
    feed(node, *(ChunkFrame("big", 11, False, 10, i, b"x") for i in range(4)))
    assert_violation(node, ErrorCode.LIMIT_EXCEEDED, CloseCode.POLICY_VIOLATION)


def test_changes_in_the_middle_of_a_chunked_body_are_unexpected() -> None:
    node = opened()
    feed(node, ChunkFrame("big", 11, False, 10, 0, b"x"), ChangesFrame(12, ()))
    assert_violation(node, ErrorCode.UNEXPECTED_FRAME, CloseCode.PROTOCOL_ERROR)


def test_a_chunked_map_body_that_is_not_a_json_like_map_is_malformed() -> None:
    node = opened()
    data = cbor2.dumps([1, 2, 3])
    feed(node, ChunkFrame("big", 11, True, len(data), 0, data))
    assert_violation(node, ErrorCode.MALFORMED_FRAME, CloseCode.PROTOCOL_ERROR)


def test_a_snapshot_is_delivered_only_when_complete() -> None:
    node = opened(last_revision=500)
    resources = (Resource("a", 3, {"x": 1}), Resource("b", 40, b"raw"))
    feed(node, SnapshotBeginFrame(40, 3), SnapshotItemsFrame(resources))
    data = b"q" * 50
    feed(node, ChunkFrame("c", 39, False, 50, 0, data[:20]))
    feed(node, ChunkFrame("c", 39, False, 50, 20, data[20:]))
    assert node.events_received() == []
    feed(node, SnapshotEndFrame())
    assert node.events_received() == [SnapshotReceived(40, (*resources, Resource("c", 39, data)))]
    assert node.revision == 40  # a snapshot may move the revision backwards
    node.ack(40)
    node.ack(500)  # still delivered on this connection (the hello's revision)
    assert frames_of(node.data_to_send()) == [AckFrame(40), AckFrame(500)]


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([SnapshotItemsFrame(())], ErrorCode.UNEXPECTED_FRAME),
        ([SnapshotEndFrame()], ErrorCode.UNEXPECTED_FRAME),
        ([SnapshotBeginFrame(5, 1), SnapshotBeginFrame(5, 1)], ErrorCode.UNEXPECTED_FRAME),
        ([SnapshotBeginFrame(5, 1), ChangesFrame(20, ())], ErrorCode.UNEXPECTED_FRAME),
        (
            [SnapshotBeginFrame(5, 2), SnapshotItemsFrame((Resource("a", 6, b""),))],
            ErrorCode.INVALID_SEQUENCE,
        ),
        (
            [SnapshotBeginFrame(5, 2), SnapshotItemsFrame((Resource("a", 1, b""),) * 2)],
            ErrorCode.INVALID_SEQUENCE,
        ),
        (
            [SnapshotBeginFrame(5, 1), SnapshotItemsFrame(()), SnapshotEndFrame()],
            ErrorCode.INVALID_SEQUENCE,
        ),
        (
            [
                SnapshotBeginFrame(5, 1),
                SnapshotItemsFrame((Resource("a", 1, b""), Resource("b", 1, b""))),
            ],
            ErrorCode.LIMIT_EXCEEDED,
        ),
        ([SnapshotBeginFrame(5, 10**9)], ErrorCode.LIMIT_EXCEEDED),
        (
            [SnapshotBeginFrame(5, 1), ChunkFrame("a", 6, False, 4, 0, b"ab")],
            ErrorCode.INVALID_SEQUENCE,
        ),
        (
            [SnapshotBeginFrame(5, 1), ChunkFrame("a", 4, False, 4, 0, b"ab"), SnapshotEndFrame()],
            ErrorCode.UNEXPECTED_FRAME,
        ),
    ],
)
def test_broken_snapshots_are_refused(frames: list[Frame], code: ErrorCode) -> None:
    node = opened(last_revision=10)
    feed(node, *frames)
    assert_violation(node, code, CloseCode.PROTOCOL_ERROR if code != 5 else 1008)


def test_a_snapshot_over_the_byte_limit_is_refused() -> None:
    node = opened(config=NodeConfig(max_snapshot_bytes=200))
    items = SnapshotItemsFrame(tuple(Resource(f"k{i}", 1, b"x" * 30) for i in range(5)))
    feed(node, SnapshotBeginFrame(5, 10), items)
    assert_violation(node, ErrorCode.LIMIT_EXCEEDED, CloseCode.POLICY_VIOLATION)


def test_uplink_records_fill_the_window_and_the_rest_waits() -> None:
    node = opened(window_records=3)
    records = [UplinkRecord(i, 5, b"abc") for i in range(1, 6)]
    assert node.can_send(3)
    assert node.send_uplink(records) == 3
    assert not node.can_send(0)
    assert node.window.records_in_flight == 3
    assert node.window.bytes_in_flight == 9
    assert frames_of(node.data_to_send()) == [UplinkFrame(tuple(records[:3]))]
    assert node.send_uplink(records[3:]) == 0


def test_uplink_acks_release_the_window_and_name_the_acked_records() -> None:
    node = opened(window_bytes=10)
    assert node.send_uplink([UplinkRecord(i, 1, b"xx") for i in (2, 4, 6, 8, 10)]) == 5
    assert node.send_uplink([UplinkRecord(11, 1, b"x")]) == 0  # 10 bytes in flight
    feed(node, UplinkAckFrame(((1, 4), (8, 100))))
    assert node.events_received() == [UplinkAcked((2, 4, 8, 10))]
    assert node.in_flight == (6,)
    assert node.window.bytes_in_flight == 2
    assert node.send_uplink([UplinkRecord(11, 1, b"x")]) == 1


def test_an_ack_that_covers_nothing_in_flight_is_ignored() -> None:
    node = opened()
    feed(node, UplinkAckFrame(((1, 3),)))
    assert node.events_received() == []
    assert node.state is State.OPEN


def test_a_record_bigger_than_the_byte_window_goes_alone() -> None:
    node = opened(window_bytes=10)
    assert node.send_uplink([UplinkRecord(1, 1, b"x" * 100), UplinkRecord(2, 1, b"x")]) == 1
    assert node.window.bytes_in_flight == 100


def test_uplink_records_are_packed_into_frames_under_the_limit() -> None:
    node = opened(config=NodeConfig(max_frame_size=4096))
    records = [UplinkRecord(i, 9, b"p" * 500) for i in range(40)]
    assert node.send_uplink(records) == 40
    messages = node.data_to_send()
    assert len(messages) > 1
    assert all(len(m) <= 4096 for m in messages)
    assert [r for f in frames_of(messages) for r in f.records] == records  # type: ignore[union-attr]


def test_the_largest_allowed_payload_fits_one_frame_exactly_under_the_limit() -> None:
    node = opened(config=NodeConfig(max_frame_size=4096))
    payload = b"p" * node.max_uplink_payload
    assert node.send_uplink([UplinkRecord(2**63 - 1, 9, payload)]) == 1
    assert len(node.data_to_send()[0]) <= 4096
    with pytest.raises(ValueError, match="per-record limit"):
        node.send_uplink([UplinkRecord(1, 9, payload + b"p")])


@pytest.mark.parametrize(
    "record",
    [
        UplinkRecord(-1, 1, b""),
        UplinkRecord(1, 10, b""),
        UplinkRecord(1, -1, b""),
        UplinkRecord(1, 1, "text"),  # type: ignore[arg-type]
        "not a record",
    ],
)
def test_invalid_uplink_records_are_value_errors_and_send_nothing(record: UplinkRecord) -> None:
    node = opened()
    with pytest.raises(ValueError, match=r"must be|not an UplinkRecord"):
        node.send_uplink([UplinkRecord(5, 1, b"ok"), record])
    assert node.data_to_send() == []
    assert node.window.records_in_flight == 0


def test_a_sequence_already_in_flight_is_a_value_error() -> None:
    node = opened()
    node.send_uplink([UplinkRecord(5, 1, b"ok")])
    with pytest.raises(ValueError, match="already in flight"):
        node.send_uplink([UplinkRecord(5, 1, b"ok")])


def test_a_ping_is_sent_after_an_interval_of_silence_only() -> None:
    node = opened()  # interval 15 s, deadline 45 s, opened at 0
    node.tick(15.0)
    assert frames_of(node.data_to_send()) == [PingFrame()]
    node.ack(10)  # something sent during the next interval: no ping needed
    node.data_to_send()
    node.tick(30.0)
    assert node.data_to_send() == []
    feed(node, PingFrame(), now=40.0)  # keeps the hub alive past the 45 s deadline
    node.tick(45.0)  # nothing sent since 30 s: ping
    assert frames_of(node.data_to_send()) == [PingFrame()]
    assert node.next_deadline() == 60.0


def test_any_frame_from_the_hub_resets_the_deadline() -> None:
    node = opened()
    feed(node, PingFrame(), now=40.0)
    node.tick(80.0)
    assert node.state is State.OPEN
    assert node.next_deadline() is not None
    assert node.next_deadline() <= 85.0


def test_a_silent_hub_times_out_with_an_event_and_a_close() -> None:
    node = opened()
    node.tick(45.0)
    assert node.events_received() == [PeerTimedOut(45.0)]
    assert frames_of(node.data_to_send()) == [
        ErrorFrame(ErrorCode.TIMED_OUT, "heartbeat deadline missed")
    ]
    assert node.close_requested().code == CloseCode.PEER_TIMED_OUT
    assert node.next_deadline() is None


def test_a_missing_welcome_times_out_after_the_handshake_timeout() -> None:
    node = fresh(config=NodeConfig(handshake_timeout=5.0))
    node.tick(4.9)
    assert node.state is State.CONNECTING
    node.tick(5.0)
    assert node.events_received() == [PeerTimedOut(5.0)]
    assert node.close_requested().code == CloseCode.PEER_TIMED_OUT


def test_a_text_message_is_malformed() -> None:
    node = opened()
    node.receive_message('{"t": "p"}', 1.0)
    assert_violation(node, ErrorCode.MALFORMED_FRAME, CloseCode.PROTOCOL_ERROR)


def test_a_message_over_the_frame_limit_closes_with_message_too_big() -> None:
    node = opened(config=NodeConfig(max_frame_size=4096))
    node.receive_message(b"\x00" * 4097, 1.0)
    assert_violation(node, ErrorCode.FRAME_TOO_BIG, CloseCode.MESSAGE_TOO_BIG)


def test_messages_after_the_close_are_ignored() -> None:
    node = opened()
    node.receive_message(b"garbage", 1.0)
    node.events_received()
    node.data_to_send()
    node.receive_message(b"more garbage", 2.0)
    feed(node, ChangesFrame(20, ()))
    assert node.events_received() == []
    assert node.data_to_send() == []


def test_a_close_reason_is_cut_to_123_utf8_bytes_on_a_character_boundary() -> None:
    node = opened()
    node.send_error(ErrorCode.SHUTTING_DOWN, "é" * 100)
    reason = node.close_requested().reason
    assert len(reason.encode()) <= 123
    assert reason == "é" * 61
    assert node.close_requested().code == CloseCode.GOING_AWAY
