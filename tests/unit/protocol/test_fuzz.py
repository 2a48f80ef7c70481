"""Hostile input into both sides: arbitrary bytes, arbitrary CBOR values, frame-shaped maps
with wrong fields, and valid frames in any order. Never an escaping exception; always
either ordinary events or one ProtocolViolation followed by a close request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from edgenode.protocol import (
    CloseCode,
    ErrorCode,
    HubConfig,
    HubProtocol,
    NodeConfig,
    NodeProtocol,
    ProtocolViolation,
    State,
)
from edgenode.protocol._connection import _Connection
from edgenode.protocol.frames import (
    FRAME_TYPES,
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
    encode_frame,
)

from .helpers import frames_of

LIMIT = 8192
VALID_CLOSE_CODES = {int(c) for c in CloseCode}


def node_connecting() -> NodeProtocol:
    node = NodeProtocol("ship-7", "1", 10, 0.0, NodeConfig(max_frame_size=LIMIT))
    node.data_to_send()
    return node


def node_open() -> NodeProtocol:
    node = node_connecting()
    node.receive_message(encode_frame(WelcomeFrame(1, 20, 1000, 3000, LIMIT, 5, 1000)), 0.0)
    node.send_uplink([UplinkRecord(s, 1, b"x") for s in range(1, 4)])
    node.events_received()
    node.data_to_send()
    return node


def node_in_snapshot() -> NodeProtocol:
    node = node_open()
    node.receive_message(encode_frame(SnapshotBeginFrame(15, 3)), 0.0)
    node.receive_message(encode_frame(ChunkFrame("k", 3, True, 40, 0, b"\xa1")), 0.0)
    assert node.state is State.OPEN
    return node


def hub_connecting() -> HubProtocol:
    return HubProtocol(0.0, HubConfig(max_frame_size=LIMIT))


def hub_greeted() -> HubProtocol:
    hub = hub_connecting()
    hub.receive_message(encode_frame(HelloFrame(1, "ship-7", "1", 10, LIMIT)), 0.0)
    hub.events_received()
    return hub


def hub_open() -> HubProtocol:
    hub = hub_greeted()
    hub.accept(30)
    hub.send_changes([Upsert("a", 11, b"")], 12)
    hub.data_to_send()
    return hub


SIDES: list[Callable[[], _Connection]] = [
    node_connecting,
    node_open,
    node_in_snapshot,
    hub_connecting,
    hub_greeted,
    hub_open,
]


def check_outcome(side: _Connection) -> None:
    """The invariants after any input."""
    events = side.events_received()
    messages = side.data_to_send()
    # Everything a side sends is itself a valid frame, under the peer's limit.
    assert all(len(m) <= LIMIT for m in messages)
    frames_of(messages)
    violations = [e for e in events if isinstance(e, ProtocolViolation)]
    assert all(v.code != ErrorCode.INTERNAL_ERROR for v in violations), violations
    assert len(violations) <= 1
    if violations:
        assert events[-1] is violations[0]
        assert side.state is State.CLOSED
        close = side.close_requested()
        assert close is not None
        assert close.code == violations[0].close_code
        assert close.code in VALID_CLOSE_CODES
        assert len(close.reason.encode()) <= 123
    if side.state is State.CLOSED:
        assert side.close_requested() is not None
        assert side.next_deadline() is None


def feed_all(side: _Connection, messages: list[bytes]) -> None:
    for i, message in enumerate(messages):
        side.receive_message(message, float(i))
        check_outcome(side)


@given(side=st.sampled_from(SIDES), messages=st.lists(st.binary(max_size=300), max_size=5))
def test_arbitrary_bytes_never_escape_as_exceptions(
    side: Callable[[], _Connection], messages: list[bytes]
) -> None:
    feed_all(side(), messages)


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=3) | st.integers(0, 3), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(side=st.sampled_from(SIDES), values=st.lists(cbor_values, max_size=4))
def test_arbitrary_cbor_values_never_escape_as_exceptions(
    side: Callable[[], _Connection], values: list[Any]
) -> None:
    feed_all(side(), [cbor2.dumps(v) for v in values])


FIELD_KEYS = ["v", "n", "sw", "r", "mf", "hb", "hd", "uw", "ub", "c", "m", "d", "ch", "k"]
FIELD_KEYS += ["f", "s", "o", "x", "i", "a", "rs", "p", "b"]
field_values = st.one_of(
    st.integers(-1, 3),
    st.sampled_from([0, 1, 1000, 4096, 2**31, 2**63 - 1, 2**63, 2**64 - 1]),
    st.text(max_size=5),
    st.binary(max_size=10),
    st.booleans(),
    st.none(),
    st.lists(
        st.dictionaries(
            st.sampled_from(["o", "k", "r", "b", "s", "p", "x"]),
            st.one_of(st.sampled_from(["u", "d"]), st.integers(0, 20), st.binary(max_size=4)),
        ),
        max_size=3,
    ),
    st.lists(st.lists(st.integers(0, 10), min_size=2, max_size=2), max_size=3),
)
frame_shaped = st.builds(
    lambda t, fields: {"t": t, **fields},
    st.sampled_from(sorted(FRAME_TYPES.values())),
    st.dictionaries(st.sampled_from(FIELD_KEYS), field_values, max_size=6),
)


@given(side=st.sampled_from(SIDES), values=st.lists(frame_shaped, max_size=4))
def test_frame_shaped_maps_with_random_fields_never_escape(
    side: Callable[[], _Connection], values: list[dict[str, Any]]
) -> None:
    feed_all(side(), [cbor2.dumps(v) for v in values])


revisions = st.integers(8, 40)
small_keys = st.sampled_from(["a", "b", "c"])
changes = st.lists(
    st.builds(Upsert, small_keys, revisions, st.binary(max_size=3))
    | st.builds(Delete, small_keys, revisions),
    max_size=3,
).map(lambda cs: tuple(sorted(cs, key=lambda c: c.revision)))
rare_frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(ErrorFrame, st.integers(0, 20), st.text(max_size=5)),
    st.builds(RetryAfterFrame, st.integers(0, 10**6), st.text(max_size=5)),
    st.builds(HelloFrame, st.just(1), st.just("n"), st.just(""), revisions, st.just(LIMIT)),
    st.builds(
        WelcomeFrame,
        st.just(1),
        revisions,
        st.just(1000),
        st.just(3000),
        st.just(LIMIT),
        st.integers(1, 5),
        st.integers(1, 100),
    ),
)
to_node: st.SearchStrategy[Frame] = st.one_of(
    st.builds(ChangesFrame, revisions, changes),
    st.builds(
        ChunkFrame,
        small_keys,
        revisions,
        st.booleans(),
        st.integers(1, 4),
        st.integers(0, 3),
        st.binary(min_size=1, max_size=2),
    ).filter(lambda c: c.offset + len(c.data) <= c.total_size),
    st.builds(SnapshotBeginFrame, revisions, st.integers(0, 3)),
    st.builds(
        SnapshotItemsFrame,
        st.lists(st.builds(Resource, small_keys, revisions, st.just(b"")), max_size=3).map(tuple),
    ),
    st.just(SnapshotEndFrame()),
    st.builds(
        UplinkAckFrame,
        st.lists(st.integers(0, 5), max_size=3, unique=True).map(
            lambda xs: tuple((x, x) for x in sorted(xs))
        ),
    ),
    st.just(PingFrame()),
)
to_hub: st.SearchStrategy[Frame] = st.one_of(
    st.builds(AckFrame, revisions),
    st.builds(ChangeErrorFrame, small_keys, revisions, st.integers(0, 5), st.just("")),
    st.builds(
        UplinkFrame,
        st.lists(
            st.builds(UplinkRecord, st.integers(0, 8), st.integers(0, 9), st.just(b"x")),
            max_size=4,
        ).map(tuple),
    ),
    st.just(PingFrame()),
)
NODE_SIDES = [node_connecting, node_open, node_in_snapshot]


@settings(max_examples=300)
@given(data=st.data(), side=st.sampled_from(SIDES))
def test_valid_frames_in_any_order_never_escape(
    data: st.DataObject, side: Callable[[], _Connection]
) -> None:
    directed = to_node if side in NODE_SIDES else to_hub
    frames = data.draw(st.lists(directed | rare_frames | directed, max_size=8))
    feed_all(side(), [encode_frame(f) for f in frames])


@given(
    side=st.sampled_from(SIDES),
    steps=st.lists(st.floats(0, 100, allow_nan=False), max_size=6),
)
def test_ticks_at_any_time_keep_the_invariants(
    side: Callable[[], _Connection], steps: list[float]
) -> None:
    proto = side()
    now = 0.0
    for step in steps:
        now += step
        proto.tick(now)
        check_outcome(proto)
        deadline = proto.next_deadline()
        assert deadline is None or deadline > now
