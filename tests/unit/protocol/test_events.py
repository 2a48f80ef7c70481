"""Events are immutable values that compare by content."""

from __future__ import annotations

import dataclasses

import pytest

from edgenode.protocol import ChangesReceived, ProtocolViolation, Upsert, Welcomed


def test_events_are_frozen() -> None:
    event = ChangesReceived((Upsert("a", 1, b""),), 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.revision = 2  # type: ignore[misc]


def test_events_compare_by_content() -> None:
    assert ProtocolViolation(1, "bad", 1002) == ProtocolViolation(1, "bad", 1002)
    assert ProtocolViolation(1, "bad", 1002) != ProtocolViolation(2, "bad", 1002)


def test_welcomed_carries_durations_in_seconds() -> None:
    event = Welcomed(1, 0, 15.0, 45.0, 1 << 20, 1000, 1 << 23)
    assert event.heartbeat_deadline / event.heartbeat_interval == 3
