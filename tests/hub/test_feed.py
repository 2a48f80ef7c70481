"""The change feed (edgehub/feed.py), sans-I/O: positions, status changes found by looking,
resuming, 410 when the feed cannot vouch for a position, bounded subscribers."""

from __future__ import annotations

from typing import Any

import pytest
from edgehub import feed as feed_module
from edgehub.feed import ADDED, DELETED, MODIFIED, ChangeFeed, Position


class World:
    """Resources and their status, as the hub would render them."""

    def __init__(self) -> None:
        self.status: dict[str, dict[str, dict[str, Any]]] = {"Node": {}, "Device": {}}
        self.now = 1000.0

    def status_of(self, kind: str) -> dict[str, tuple[dict[str, Any], dict[str, Any] | None]]:
        return {name: ({"metadata": {"name": name}}, s) for name, s in self.status[kind].items()}

    def clock(self) -> float:
        return 1_700_000_000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def feed(world: World) -> ChangeFeed:
    return ChangeFeed(3, world.status_of, clock=world.clock, monotonic=world.monotonic)


def test_positions_order_spec_and_status_changes():
    assert Position(5) < Position(5, 1) < Position(6, 1) < Position(6, 2)
    assert str(Position(5)) == "5"
    assert str(Position(5, 17)) == "5.17"
    assert Position.parse("5.17") == Position(5, 17)
    assert Position.parse("5") == Position(5)
    for bad in ("", "x", "5.", ".5", "5.x", "-1", "1" * 41):
        with pytest.raises(ValueError, match="resourceVersion"):
            Position.parse(bad)


def test_spec_changes_are_added_modified_deleted(feed: ChangeFeed):
    subscriber = feed.follow("Device")
    feed.spec_changed(4, "Device", "lamp", {"spec": {}}, created=None, deleted=False)
    feed.spec_changed(5, "Device", "lamp", {"spec": {"a": 1}}, created=10.0, deleted=False)
    feed.spec_changed(6, "Node", "n1", {}, created=None, deleted=False)  # another kind
    feed.spec_changed(7, "Device", "lamp", {"spec": {"a": 1}}, created=10.0, deleted=True)
    changes = [subscriber.queue.get_nowait() for _ in range(subscriber.queue.qsize())]
    assert [(c.type, c.position) for c in changes if c] == [
        (ADDED, Position(4)),
        (MODIFIED, Position(5)),
        (DELETED, Position(7)),
    ]
    assert feed.position == Position(7)


def test_status_changes_are_seen_only_while_someone_looks(feed: ChangeFeed, world: World):
    world.status["Node"]["n1"] = {"state": "NotReady"}
    world.status["Device"]["lamp"] = {"reported": {}}
    assert feed.poll_status() == 0  # nobody looks: nothing rendered, nothing emitted
    subscriber = feed.follow("Node")  # takes the baseline now
    world.status["Node"]["n1"] = {"state": "Ready"}
    world.status["Device"]["lamp"] = {"reported": {"power": "on"}}
    assert feed.poll_status() == 1  # the Node only: Devices are not looked at
    change = subscriber.queue.get_nowait()
    assert change is not None
    assert (change.type, change.name, change.status) == (MODIFIED, "n1", {"state": "Ready"})
    assert change.position == Position(3, 1_700_000_000_000)
    assert feed.poll_status() == 0  # unchanged: at most one change per look
    assert feed.object_position("Node", "n1", 2) == change.position
    assert feed.object_position("Node", "other", 2) == Position(2)


def test_a_list_then_a_watch_from_its_position_misses_nothing(feed: ChangeFeed, world: World):
    world.status["Node"]["n1"] = {"state": "NotReady"}
    feed.look("Node")  # what a list does before rendering
    listed = feed.position
    world.status["Node"]["n1"] = {"state": "Ready"}  # between the list and the watch
    feed.poll_status()
    subscriber = feed.resume("Node", listed)
    assert subscriber is not None
    change = subscriber.queue.get_nowait()
    assert change is not None
    assert change.status == {"state": "Ready"}


def test_resuming_where_the_feed_cannot_vouch_is_gone(feed: ChangeFeed, world: World):
    assert feed.resume("Node", Position(3)) is None  # never looked at
    feed.look("Node")
    resumed = feed.resume("Node", Position(3))
    assert resumed is not None
    feed.unsubscribe(resumed)
    assert feed.resume("Node", Position(2)) is None  # before it was looked at
    assert feed.resume("Node", Position(9)) is None  # from the future
    assert feed.resume("Node", Position(3, 5)) is None  # another process's status count
    # Interest lapses: the next look forgets the kind, and resumes are gone again.
    world.now += feed_module.LOOK_GRACE + 1
    feed.poll_status()
    assert feed.resume("Node", Position(3)) is None


def test_the_feed_keeps_a_bounded_history(world: World, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(feed_module, "MAX_FEED_EVENTS", 4)
    small = ChangeFeed(0, world.status_of, clock=world.clock, monotonic=world.monotonic)
    small.look("Device")
    for revision in range(1, 8):
        small.spec_changed(revision, "Device", f"d{revision}", {}, created=None, deleted=False)
    assert small.resume("Device", Position(2)) is None  # dropped from the history
    kept = small.resume("Device", Position(4))
    assert kept is not None
    assert kept.queue.qsize() == 3


def test_a_subscriber_that_falls_behind_is_ended(feed: ChangeFeed, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(feed_module, "MAX_SUBSCRIBER_EVENTS", 2)
    subscriber = feed.follow("Device")
    for revision in range(4, 8):
        feed.spec_changed(revision, "Device", "d", {}, created=None, deleted=False)
    assert subscriber.gone
    assert "behind" in subscriber.why
    items = [subscriber.queue.get_nowait() for _ in range(subscriber.queue.qsize())]
    assert items[-1] is None  # the reader sees the end after what it had
    feed.unsubscribe(subscriber)
    assert feed.subscribers() == 0


def test_end_all_ends_every_stream(feed: ChangeFeed):
    subscribers = [feed.follow("Node"), feed.follow("Device")]
    feed.end_all()
    assert all(s.gone and s.why == "the hub is stopping" for s in subscribers)
