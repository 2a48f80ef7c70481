"""HubProtocol against hand-written node frames: hello, accept, splitting of what it sends,
acks, uplink window, and every way a node can break the protocol."""

from __future__ import annotations

import cbor2
import pytest

from edgenode.errors import ConfigError
from edgenode.protocol import (
    ChangeRejected,
    CloseCode,
    Delete,
    ErrorCode,
    HubConfig,
    HubProtocol,
    NodeHello,
    NodeProtocol,
    PeerTimedOut,
    ProtocolViolation,
    Resource,
    RevisionAcked,
    State,
    UplinkReceived,
    UplinkRecord,
    Upsert,
)
from edgenode.protocol.frames import (
    AckFrame,
    ChangeErrorFrame,
    ChangesFrame,
    ChunkFrame,
    ErrorFrame,
    Frame,
    HelloFrame,
    PingFrame,
    RetryAfterFrame,
    SnapshotBeginFrame,
    SnapshotEndFrame,
    UplinkAckFrame,
    UplinkFrame,
    WelcomeFrame,
    encode_frame,
)

from .helpers import frames_of

HELLO = HelloFrame(1, "ship-7", "edgenode 0.1", 10, 1048576)


def feed(hub: HubProtocol, *frames: Frame, now: float = 1.0) -> None:
    for frame in frames:
        hub.receive_message(encode_frame(frame), now)


def greeted(config: HubConfig | None = None, hello: HelloFrame = HELLO) -> HubProtocol:
    hub = HubProtocol(0.0, config)
    feed(hub, hello, now=0.0)
    return hub


def opened(config: HubConfig | None = None, hello: HelloFrame = HELLO) -> HubProtocol:
    hub = greeted(config, hello)
    hub.accept(100)
    hub.events_received()
    hub.data_to_send()
    return hub


def assert_violation(hub: HubProtocol, code: ErrorCode, close: int) -> None:
    events = hub.events_received()
    assert isinstance(events[-1], ProtocolViolation), events
    assert events[-1].code == code, events[-1]
    assert frames_of(hub.data_to_send())[-1].code == code  # type: ignore[union-attr]
    assert hub.close_requested() is not None
    assert hub.close_requested().code == close
    assert hub.state is State.CLOSED


def test_a_hello_is_reported_with_the_node_name_version_and_revision() -> None:
    hub = greeted()
    assert hub.events_received() == [NodeHello("ship-7", "edgenode 0.1", 10, 1, 1048576)]
    assert hub.node_name == "ship-7"
    assert hub.state is State.CONNECTING


def test_the_hello_event_carries_the_nodes_next_outbox_sequence_when_the_node_sends_it() -> None:
    node = NodeProtocol("ship-7", "edgenode 0.1", 10, 0.0, next_seq=77)
    hub = HubProtocol(0.0)
    for message in node.data_to_send():
        hub.receive_message(message, 0.0)
    [hello] = hub.events_received()
    assert isinstance(hello, NodeHello)
    assert hello.next_seq == 77
    assert hub.next_deadline() is None  # the application decides now


def test_accept_sends_a_welcome_with_the_hub_timers_and_limits() -> None:
    config = HubConfig(
        max_frame_size=65536,
        heartbeat_interval=0.5,
        max_in_flight_records=7,
        max_in_flight_bytes=9999,
    )
    hub = greeted(config)
    hub.accept(1234)
    assert frames_of(hub.data_to_send()) == [WelcomeFrame(1, 1234, 500, 1500, 65536, 7, 9999)]
    assert hub.state is State.OPEN
    assert hub.next_deadline() == 0.5


def test_accept_needs_a_hello_and_only_works_once() -> None:
    with pytest.raises(RuntimeError, match="needs a hello"):
        HubProtocol(0.0).accept(1)
    hub = opened()
    with pytest.raises(RuntimeError, match="needs a hello"):
        hub.accept(1)


def test_invalid_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        HubConfig(heartbeat_interval=10.0, heartbeat_deadline=5.0)
    with pytest.raises(ConfigError):
        HubConfig(max_frame_size=10**9)
    with pytest.raises(ConfigError):
        HubConfig(heartbeat_interval=0.0)


@pytest.mark.parametrize(
    "frame",
    [PingFrame(), AckFrame(0), UplinkFrame(()), ChangesFrame(1, ())],
    ids=lambda f: type(f).__name__,
)
def test_any_frame_before_hello_is_unexpected(frame: Frame) -> None:
    hub = HubProtocol(0.0)
    feed(hub, frame)
    assert_violation(hub, ErrorCode.UNEXPECTED_FRAME, CloseCode.PROTOCOL_ERROR)


def test_a_frame_between_hello_and_welcome_is_unexpected() -> None:
    hub = greeted()
    hub.events_received()
    feed(hub, PingFrame())
    assert_violation(hub, ErrorCode.UNEXPECTED_FRAME, CloseCode.PROTOCOL_ERROR)


def test_a_duplicate_hello_is_unexpected() -> None:
    hub = opened()
    feed(hub, HELLO)
    assert_violation(hub, ErrorCode.UNEXPECTED_FRAME, CloseCode.PROTOCOL_ERROR)


def test_a_hello_of_an_unknown_version_gets_an_error_code_and_a_version_close() -> None:
    hub = HubProtocol(0.0)
    hub.receive_message(cbor2.dumps({"t": "h", "v": 99, "n": "ship-7", "new": True}), 0.0)
    assert_violation(hub, ErrorCode.UNSUPPORTED_VERSION, CloseCode.UNSUPPORTED_VERSION)


@pytest.mark.parametrize(
    "frame",
    [
        WelcomeFrame(1, 1, 1000, 3000, 4096, 1, 1),
        SnapshotEndFrame(),
        UplinkAckFrame(()),
        ChunkFrame("k", 1, False, 1, 0, b"x"),
    ],
    ids=lambda f: type(f).__name__,
)
def test_frames_only_nodes_receive_are_unexpected_at_a_hub(frame: Frame) -> None:
    hub = opened()
    feed(hub, frame)
    assert_violation(hub, ErrorCode.UNEXPECTED_FRAME, CloseCode.PROTOCOL_ERROR)


def test_a_missing_hello_times_out() -> None:
    hub = HubProtocol(0.0, HubConfig(handshake_timeout=2.0))
    assert hub.next_deadline() == 2.0
    hub.tick(2.0)
    assert hub.events_received() == [PeerTimedOut(2.0)]
    assert hub.close_requested().code == CloseCode.PEER_TIMED_OUT


def test_retry_after_sends_the_delay_and_closes_with_try_again_later() -> None:
    hub = greeted()
    hub.send_retry_after(12.3456, "overloaded")
    assert frames_of(hub.data_to_send()) == [RetryAfterFrame(12346, "overloaded")]
    assert hub.close_requested() == (1013, "overloaded")


def test_a_negative_retry_delay_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="delay"):
        greeted().send_retry_after(-1)


def test_send_error_closes_with_the_code_that_goes_with_it() -> None:
    hub = greeted()
    hub.send_error(ErrorCode.REPLACED, "a newer connection of ship-7 arrived")
    assert frames_of(hub.data_to_send()) == [ErrorFrame(9, "a newer connection of ship-7 arrived")]
    assert hub.close_requested().code == CloseCode.REPLACED


def test_send_error_refuses_codes_outside_the_wire_range() -> None:
    with pytest.raises(ValueError, match="error code"):
        greeted().send_error(70000, "x")


def test_changes_go_out_in_one_frame_when_they_fit() -> None:
    hub = opened()
    changes = [Upsert("a", 11, {"x": 1}), Delete("b", 12)]
    hub.send_changes(changes, 20)
    assert frames_of(hub.data_to_send()) == [ChangesFrame(20, tuple(changes))]
    assert hub.sent_revision == 20


def test_an_empty_batch_still_tells_the_node_its_new_revision() -> None:
    hub = opened()
    hub.send_changes([], 50)
    assert frames_of(hub.data_to_send()) == [ChangesFrame(50, ())]


def test_a_large_batch_is_split_into_frames_under_the_limit_ending_at_the_batch_revision() -> None:
    hub = opened(HubConfig(max_frame_size=4096))
    changes = [Upsert(f"Config/default/{i}", 11 + i, {"v": "x" * 100}) for i in range(200)]
    hub.send_changes(changes, 500)
    messages = hub.data_to_send()
    frames = frames_of(messages)
    assert len(frames) > 5
    assert all(len(m) <= 4096 for m in messages)
    assert [c for f in frames for c in f.changes] == changes  # type: ignore[union-attr]
    for frame in frames[:-1]:
        assert frame.revision == frame.changes[-1].revision  # type: ignore[union-attr]
    assert frames[-1].revision == 500  # type: ignore[union-attr]


def test_the_frame_limit_is_the_smaller_of_both_sides() -> None:
    hub = opened(HubConfig(max_frame_size=1048576), HelloFrame(1, "n", "", 0, 4096))
    hub.send_changes([Upsert(f"k{i}", 1 + i, b"x" * 300) for i in range(100)], 100)
    assert all(len(m) <= 4096 for m in hub.data_to_send())


def test_a_change_bigger_than_a_frame_is_sent_as_chunks() -> None:
    hub = opened(HubConfig(max_frame_size=4096))
    body = {"blob": "y" * 20000}
    hub.send_changes([Delete("a", 11), Upsert("big", 12, body), Delete("c", 13)], 15)
    messages = hub.data_to_send()
    assert all(len(m) <= 4096 for m in messages)
    frames = frames_of(messages)
    assert frames[0] == ChangesFrame(11, (Delete("a", 11),))
    chunks = [f for f in frames if isinstance(f, ChunkFrame)]
    assert len(chunks) >= 5
    assert all(c.key == "big" and c.revision == 12 and c.is_map for c in chunks)
    assert cbor2.loads(b"".join(c.data for c in chunks)) == body
    assert frames[-1] == ChangesFrame(15, (Delete("c", 13),))


def test_a_chunked_last_change_at_the_batch_revision_needs_no_closing_frame() -> None:
    hub = opened(HubConfig(max_frame_size=4096))
    hub.send_changes([Upsert("big", 12, b"z" * 10000)], 12)
    frames = frames_of(hub.data_to_send())
    assert all(isinstance(f, ChunkFrame) for f in frames)


@pytest.mark.parametrize(
    ("changes", "revision"),
    [
        ([Delete("a", 10)], 20),  # not after the hello's revision 10
        ([Delete("a", 12), Delete("b", 12)], 20),
        ([Delete("a", 12)], 11),
        ([Upsert("a", 12, "text")], 20),  # type: ignore[arg-type]
        ([Upsert("a", 12, {"k": b"bytes"})], 20),
        ([Upsert("a", 12, {"k": 2**64})], 20),  # would need a bignum tag
        ([Delete("", 12)], 20),
        (["nope"], 20),
        ([], -1),
    ],
)
def test_invalid_batches_are_value_errors_and_send_nothing(
    changes: list[Upsert | Delete], revision: int
) -> None:
    hub = opened()
    with pytest.raises(ValueError):  # noqa: PT011 -- several messages, one class
        hub.send_changes(changes, revision)
    assert hub.data_to_send() == []
    assert hub.sent_revision == 10


def test_sending_before_accept_is_a_runtime_error_and_after_close_a_no_op() -> None:
    hub = greeted()
    with pytest.raises(RuntimeError):
        hub.send_changes([], 11)
    with pytest.raises(RuntimeError):
        hub.ack_uplink([])
    hub.close(1001, "bye")
    hub.send_changes([], 11)
    hub.send_snapshot(11, [])
    hub.ack_uplink([5])
    hub.send_retry_after(1)
    hub.send_error(1, "x")
    assert frames_of(hub.data_to_send()) == []
    assert hub.close_requested() == (1001, "bye")


def test_a_snapshot_of_ten_thousand_resources_is_split_under_the_limit() -> None:
    hub = opened(HubConfig(max_frame_size=65536))
    resources = [Resource(f"Config/default/c{i}", i, {"data": {"i": i}}) for i in range(10_000)]
    hub.send_snapshot(10_000, resources)
    messages = hub.data_to_send()
    assert all(len(m) <= 65536 for m in messages)
    frames = frames_of(messages)
    assert frames[0] == SnapshotBeginFrame(10_000, 10_000)
    assert frames[-1] == SnapshotEndFrame()
    assert len(frames) > 4
    items = [r for f in frames[1:-1] for r in f.resources]  # type: ignore[union-attr]
    assert items == resources
    assert hub.sent_revision == 10_000


@pytest.mark.parametrize(
    "resources",
    [
        [Resource("a", 1, b""), Resource("a", 2, b"")],
        [Resource("a", 101, b"")],
        [Resource("a", 1, {"x": object()})],
        ["nope"],
    ],
)
def test_invalid_snapshots_are_value_errors_and_send_nothing(resources: list[Resource]) -> None:
    hub = opened()
    with pytest.raises(ValueError):  # noqa: PT011 -- several messages, one class
        hub.send_snapshot(100, resources)
    assert hub.data_to_send() == []


def test_acks_and_change_errors_become_events_with_the_node_name() -> None:
    hub = opened()
    hub.send_changes([Upsert("Device/x", 11, b"?")], 12)
    feed(hub, ChangeErrorFrame("Device/x", 11, 2, "unknown kind"), AckFrame(12))
    assert hub.events_received() == [
        ChangeRejected("ship-7", "Device/x", 11, 2, "unknown kind"),
        RevisionAcked("ship-7", 12),
    ]


def test_an_ack_of_the_hello_revision_is_fine_before_anything_was_sent() -> None:
    hub = opened()
    feed(hub, AckFrame(10))
    assert hub.events_received() == [RevisionAcked("ship-7", 10)]


@pytest.mark.parametrize("frame", [AckFrame(11), ChangeErrorFrame("a", 11, 1, "")])
def test_acking_a_revision_never_sent_is_an_invalid_sequence(frame: Frame) -> None:
    hub = opened()
    feed(hub, frame)
    assert_violation(hub, ErrorCode.INVALID_SEQUENCE, CloseCode.PROTOCOL_ERROR)


def test_uplink_records_are_reported_and_acked_as_ranges() -> None:
    hub = opened()
    records = tuple(UplinkRecord(s, 3, b"r") for s in (1, 2, 3, 7, 9, 10))
    feed(hub, UplinkFrame(records))
    assert hub.events_received() == [UplinkReceived("ship-7", records)]
    hub.ack_uplink([1, 2, 3, 7, 10])
    assert frames_of(hub.data_to_send()) == [UplinkAckFrame(((1, 3), (7, 7), (10, 10)))]
    assert hub.in_flight == (9,)


def test_acking_a_sequence_not_in_flight_is_a_value_error() -> None:
    hub = opened()
    feed(hub, UplinkFrame((UplinkRecord(1, 1, b""),)))
    with pytest.raises(ValueError, match="not in flight"):
        hub.ack_uplink([1, 2])
    assert hub.in_flight == (1,)


def test_many_ack_ranges_are_split_across_frames_under_the_limit() -> None:
    hub = opened(HubConfig(max_frame_size=4096, max_in_flight_records=5000))
    sequences = list(range(0, 6000, 2))
    for start in range(0, len(sequences), 200):
        feed(
            hub, UplinkFrame(tuple(UplinkRecord(s, 1, b"") for s in sequences[start : start + 200]))
        )
    hub.ack_uplink(sequences)
    messages = hub.data_to_send()
    assert len(messages) > 1
    assert all(len(m) <= 4096 for m in messages)
    acked = [lo for f in frames_of(messages) for lo, _ in f.ranges]  # type: ignore[union-attr]
    assert acked == sequences


def test_a_sequence_sent_twice_on_one_connection_is_an_invalid_sequence() -> None:
    hub = opened()
    feed(hub, UplinkFrame((UplinkRecord(1, 1, b""),)), UplinkFrame((UplinkRecord(1, 1, b""),)))
    assert_violation(hub, ErrorCode.INVALID_SEQUENCE, CloseCode.PROTOCOL_ERROR)


def test_a_node_that_overruns_the_uplink_window_is_refused() -> None:
    hub = opened(HubConfig(max_in_flight_records=2))
    feed(hub, UplinkFrame(tuple(UplinkRecord(s, 1, b"") for s in (1, 2, 3))))
    assert_violation(hub, ErrorCode.LIMIT_EXCEEDED, CloseCode.POLICY_VIOLATION)


def test_a_node_that_overruns_the_byte_window_is_refused() -> None:
    hub = opened(HubConfig(max_in_flight_bytes=10))
    feed(hub, UplinkFrame((UplinkRecord(1, 1, b"x" * 100),)))  # alone: admitted
    assert hub.state is State.OPEN
    feed(hub, UplinkFrame((UplinkRecord(2, 1, b"x"),)))
    assert_violation(hub, ErrorCode.LIMIT_EXCEEDED, CloseCode.POLICY_VIOLATION)


def test_the_hub_pings_an_idle_node_and_times_out_a_silent_one() -> None:
    hub = opened(HubConfig(heartbeat_interval=1.0))
    hub.tick(1.0)
    assert frames_of(hub.data_to_send()) == [PingFrame()]
    hub.tick(2.0)
    assert frames_of(hub.data_to_send()) == [PingFrame()]
    hub.tick(3.0)
    assert hub.events_received() == [PeerTimedOut(3.0)]
    assert hub.close_requested().code == CloseCode.PEER_TIMED_OUT


def test_heartbeat_timers_start_when_the_application_accepts() -> None:
    hub = greeted(HubConfig(heartbeat_interval=1.0))
    hub.accept(5, now=30.0)
    assert hub.next_deadline() == 31.0
    hub.tick(32.9)
    assert hub.state is State.OPEN
