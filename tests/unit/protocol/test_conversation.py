"""A NodeProtocol and a HubProtocol talking to each other entirely in memory, through bytes.

The story of a node's life: connect, resume from its revision, live changes and acks,
a snapshot and a large change split and reassembled, uplink with back-pressure and acks,
a rejected change, heartbeats on a fake clock, a dropped link, a reconnect that resends
every unacknowledged record, and a hub that sheds load with retry-after.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgenode.protocol import (
    ChangeErrorCode,
    ChangeRejected,
    ChangesReceived,
    CloseCode,
    Delete,
    HubConfig,
    NodeConfig,
    NodeHello,
    PeerTimedOut,
    Resource,
    RetryAfter,
    RevisionAcked,
    SnapshotReceived,
    State,
    UplinkAcked,
    UplinkReceived,
    UplinkRecord,
    Upsert,
    Welcomed,
)
from edgenode.protocol.constants import FEATURES, PROTOCOL_VERSION
from edgenode.protocol.frames import ChunkFrame, SnapshotItemsFrame

from .helpers import Link, frames_of

SMALL = 4096


def test_connect_and_resume_from_the_persisted_revision() -> None:
    link = Link.connect(last_revision=120, hub_revision=130, accept=False)
    assert link.take_hub_events() == [
        NodeHello("ship-7", "edgenode 0.1", 120, PROTOCOL_VERSION, 1048576, None, FEATURES)
    ]
    link.hub.accept(130)
    link.pump()
    [welcomed] = link.take_node_events()
    assert isinstance(welcomed, Welcomed)
    assert welcomed.hub_revision == 130
    assert link.node.state is State.OPEN
    assert link.hub.state is State.OPEN
    # The hub sends only what changed after 120.
    link.hub.send_changes([Upsert("Config/default/a", 125, {"spec": {"x": 1}})], 130)
    link.pump()
    assert link.take_node_events() == [
        ChangesReceived((Upsert("Config/default/a", 125, {"spec": {"x": 1}}),), 130)
    ]
    link.node.ack(130)
    link.pump()
    assert link.take_hub_events() == [RevisionAcked("ship-7", 130)]


def test_live_changes_a_rejected_change_and_acks() -> None:
    link = Link.connect(last_revision=5)
    link.hub.send_changes([Upsert("Device/d1", 6, b"\x01"), Delete("Config/old", 7)], 7)
    link.pump()
    [event] = link.take_node_events()
    assert isinstance(event, ChangesReceived)
    # The node cannot apply Device/d1, says so, and still advances past it.
    link.node.reject_change("Device/d1", 6, ChangeErrorCode.UNSUPPORTED_KIND, "kind unknown")
    link.node.ack(event.revision)
    link.pump()
    assert link.take_hub_events() == [
        ChangeRejected("ship-7", "Device/d1", 6, 2, "kind unknown"),
        RevisionAcked("ship-7", 7),
    ]


def test_a_snapshot_is_split_by_the_hub_and_reassembled_by_the_node() -> None:
    link = Link.connect(
        last_revision=3,
        node_config=NodeConfig(max_frame_size=SMALL),
        hub_config=HubConfig(max_frame_size=SMALL),
    )
    resources = [Resource(f"Config/default/c{i}", i + 1, {"data": {"n": i}}) for i in range(2000)]
    resources.append(Resource("Config/default/huge", 2001, {"blob": "h" * 50_000}))
    link.hub.send_snapshot(2500, resources)
    link.pump()
    assert link.take_node_events() == [SnapshotReceived(2500, tuple(resources))]
    sent = frames_of(link.to_node)
    assert sum(isinstance(f, SnapshotItemsFrame) for f in sent) > 10
    assert sum(isinstance(f, ChunkFrame) for f in sent) > 10
    assert all(len(m) <= SMALL for m in link.to_node)
    link.node.ack(2500)
    link.pump()
    assert link.take_hub_events() == [RevisionAcked("ship-7", 2500)]


def test_a_change_larger_than_the_frame_limit_is_split_and_reassembled() -> None:
    link = Link.connect(hub_config=HubConfig(max_frame_size=SMALL))
    big = Upsert("Config/default/firmware", 1, b"\xab" * 100_000)
    link.hub.send_changes([big, Upsert("Config/default/small", 2, {"a": 1})], 3)
    link.pump()
    assert link.take_node_events() == [
        ChangesReceived((big,), 1),
        ChangesReceived((Upsert("Config/default/small", 2, {"a": 1}),), 3),
    ]
    assert all(len(m) <= SMALL for m in link.to_node)


def test_uplink_with_window_back_pressure_and_acks_drains_the_outbox() -> None:
    link = Link.connect(
        node_config=NodeConfig(max_in_flight_records=10),
        hub_config=HubConfig(max_in_flight_bytes=2000),
    )
    outbox = {s: UplinkRecord(s, s % 10, b"r" * 100) for s in range(1, 51)}
    persisted: dict[int, bytes] = {}
    for _ in range(100):
        if not outbox:
            break
        waiting = [r for s, r in sorted(outbox.items()) if s not in link.node.in_flight]
        link.node.send_uplink(waiting)
        assert link.node.window.records_in_flight <= 10
        assert link.node.window.bytes_in_flight <= 2000
        link.pump()
        for event in link.take_hub_events():
            assert isinstance(event, UplinkReceived)
            persisted.update({r.sequence: r.payload for r in event.records})
            link.hub.ack_uplink(r.sequence for r in event.records)
        link.pump()
        for event in link.take_node_events():
            assert isinstance(event, UplinkAcked)
            for sequence in event.sequences:
                del outbox[sequence]
    assert outbox == {}
    assert sorted(persisted) == list(range(1, 51))


def test_heartbeats_keep_an_idle_link_alive_on_a_fake_clock() -> None:
    link = Link.connect(hub_config=HubConfig(heartbeat_interval=0.2))
    link.advance(10.0)
    assert link.node.state is State.OPEN
    assert link.hub.state is State.OPEN
    assert link.take_node_events() == []
    pings = [m for m in link.to_hub if m == b"\xa1\x61t\x61p"]
    assert 20 <= len(pings) <= 51  # at most one per interval, at least one per two


def test_a_dropped_link_times_out_on_both_sides_and_a_reconnect_resends_unacked_uplink() -> None:
    hub_config = HubConfig(heartbeat_interval=15.0)
    link = Link.connect(last_revision=40, hub_config=hub_config)
    outbox = {s: UplinkRecord(s, 1, f"reading {s}".encode()) for s in range(1, 6)}
    assert link.node.send_uplink(list(outbox.values())) == 5
    link.pump()
    [received] = link.take_hub_events()
    assert isinstance(received, UplinkReceived)
    hub_store = {r.sequence: r.payload for r in received.records[:3]}  # persisted 1..3 only
    link.hub.ack_uplink([1, 2, 3])
    link.pump()
    for event in link.take_node_events():
        assert isinstance(event, UplinkAcked)
        for sequence in event.sequences:
            del outbox[sequence]
    assert sorted(outbox) == [4, 5]

    # The link drops silently: nothing is delivered any more, the clock runs on.
    now = link.now
    for t in (now + 15, now + 30, now + 44.9):
        link.node.tick(t)
        link.hub.tick(t)
    assert link.node.state is State.OPEN
    link.node.tick(now + 45)
    link.hub.tick(now + 45)
    assert isinstance(link.node.events_received()[-1], PeerTimedOut)
    assert isinstance(link.hub.events_received()[-1], PeerTimedOut)
    assert link.node.close_requested().code == CloseCode.PEER_TIMED_OUT
    assert link.hub.close_requested().code == CloseCode.PEER_TIMED_OUT

    # Reconnect: new protocol objects; the node resends everything still in its outbox.
    again = Link.connect(
        last_revision=40, hub_config=hub_config, hub_revision=41, now=now + 50, keep_events=True
    )
    [hello] = again.take_hub_events()
    assert isinstance(hello, NodeHello)
    assert hello.last_revision == 40
    assert isinstance(again.take_node_events()[0], Welcomed)
    assert again.node.send_uplink(list(outbox.values())) == 2
    again.pump()
    [resent] = again.take_hub_events()
    assert isinstance(resent, UplinkReceived)
    assert [r.sequence for r in resent.records] == [4, 5]
    for record in resent.records:
        hub_store.setdefault(record.sequence, record.payload)  # drop duplicates by sequence
    again.hub.ack_uplink([4, 5])
    again.pump()
    assert again.take_node_events()[-1] == UplinkAcked((4, 5))
    assert sorted(hub_store) == [1, 2, 3, 4, 5]


def test_an_overloaded_hub_sends_retry_after_and_the_node_surfaces_it() -> None:
    link = Link.connect(accept=False)
    link.take_hub_events()
    link.hub.send_retry_after(30.0, "overloaded")
    link.pump()
    assert link.take_node_events() == [RetryAfter(30.0, "overloaded")]
    assert link.hub.close_requested().code == CloseCode.TRY_AGAIN_LATER
    assert link.node.close_requested().code == CloseCode.TRY_AGAIN_LATER
    assert link.node.next_deadline() is None


keys = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
bodies = st.one_of(
    st.binary(max_size=9000),
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text()),
        max_size=8,
    ),
)


@given(
    items=st.lists(st.tuples(keys, bodies, st.booleans()), max_size=40),
    limit=st.sampled_from([4096, 5000, 16384]),
    extra=st.integers(0, 5),
)
def test_any_batch_arrives_whole_and_in_order_through_any_frame_limit(
    items: list[tuple[str, bytes | dict[str, object], bool]], limit: int, extra: int
) -> None:
    link = Link.connect(last_revision=7, hub_config=HubConfig(max_frame_size=limit))
    changes = [
        Delete(key, 8 + i) if delete else Upsert(key, 8 + i, body)
        for i, (key, body, delete) in enumerate(items)
    ]
    revision = 7 + len(changes) + extra
    link.hub.send_changes(changes, revision)
    link.pump()
    events = link.take_node_events()
    assert all(isinstance(e, ChangesReceived) for e in events)
    assert [c for e in events for c in e.changes] == changes  # type: ignore[union-attr]
    assert events[-1].revision == revision  # type: ignore[union-attr]
    assert all(len(m) <= limit for m in link.to_node)
    assert link.node.revision == revision


@given(
    items=st.dictionaries(keys, bodies, max_size=30),
    limit=st.sampled_from([4096, 7000]),
)
def test_any_snapshot_arrives_whole_through_any_frame_limit(
    items: dict[str, bytes | dict[str, object]], limit: int
) -> None:
    link = Link.connect(last_revision=7, hub_config=HubConfig(max_frame_size=limit))
    resources = [Resource(key, i, body) for i, (key, body) in enumerate(items.items())]
    link.hub.send_snapshot(len(resources), resources)
    link.pump()
    assert link.take_node_events() == [SnapshotReceived(len(resources), tuple(resources))]
    assert all(len(m) <= limit for m in link.to_node)
