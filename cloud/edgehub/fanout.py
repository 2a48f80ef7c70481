"""What one node must receive: the resume decision (changes since R, or a snapshot) and the
live change for one log entry. Pure functions over log entries and resource bodies.

Protocol constraint: changes sent on a connection carry strictly increasing revisions after
what was already sent. A resource that starts matching because the *node's labels* changed
has an older revision, so a label change is delivered as a snapshot (which replaces the
node's desired cache, dropping what stopped matching). A resource whose own selector or
``spec.node`` changes is an upsert or a delete at its new revision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgehub.kinds.base import resource_key
from edgehub.store import LogEntry, StoredResource
from edgehub.targeting import labels_of, target_of, targets
from edgenode.protocol import Change, Delete, Resource, Upsert


@dataclass(frozen=True)
class Snapshot:
    revision: int
    resources: list[Resource]


@dataclass(frozen=True)
class Changes:
    revision: int
    changes: list[Change]


def snapshot_for(
    node: str, labels: Mapping[str, str], resources: Iterable[StoredResource], revision: int
) -> Snapshot:
    """Every current resource that targets ``node``."""
    items = [
        Resource(r.key, r.revision, r.body) for r in resources if targets(r.body, node, labels)
    ]
    items.sort(key=lambda r: r.key)
    return Snapshot(revision, items)


def _is_node_entry(entry: LogEntry, node: str) -> bool:
    return entry.kind == "Node" and entry.name == node


def resume(
    node: str,
    last_revision: int,
    hub_revision: int,
    compacted: int,
    log: list[LogEntry],
    labels_now: Mapping[str, str],
    resources: Iterable[StoredResource],
) -> Snapshot | Changes:
    """What a node that has everything up to ``last_revision`` needs; ``log`` holds the
    entries after ``last_revision`` (only used when the log reaches back that far)."""
    if last_revision < compacted or last_revision > hub_revision:
        return snapshot_for(node, labels_now, resources, hub_revision)
    first: dict[str, LogEntry] = {}
    latest: dict[str, LogEntry] = {}
    for entry in log:
        if _is_node_entry(entry, node) and labels_of(entry.prev) != labels_of(entry.body):
            # The node's labels changed since R: selector matches may differ for resources
            # that did not change themselves; only a snapshot can deliver those.
            return snapshot_for(node, labels_now, resources, hub_revision)
        first.setdefault(entry.key, entry)
        latest[entry.key] = entry
    changes: list[Change] = []
    for key, entry in latest.items():
        was = targets(first[key].prev, node, labels_now)
        now = targets(entry.body, node, labels_now)
        if now and entry.body is not None:
            changes.append(Upsert(key, entry.revision, entry.body))
        elif was:
            changes.append(Delete(key, entry.revision))
    changes.sort(key=lambda c: c.revision)
    return Changes(hub_revision, changes)


def live_change(entry: LogEntry, node: str, labels: Mapping[str, str]) -> Change | None:
    """The change one log entry means for a connected node (not for its own label changes,
    which the caller turns into a snapshot)."""
    return LiveChange(entry).for_node(node, labels)


class LiveChange:
    """``live_change`` for one entry and many nodes: the targets of the new and the old
    version are worked out once (a fan-out asks for every connected node)."""

    def __init__(self, entry: LogEntry) -> None:
        self._key = resource_key(entry.kind, entry.name)
        self._entry = entry
        self._now = target_of(entry.body)
        self._was = target_of(entry.prev)

    def nodes(self) -> frozenset[str] | None:
        """The only nodes this change can concern, when both versions are aimed at nodes by
        name (a Device); None when a selector is involved (any node may match)."""
        named: set[str] = set()
        for target in (self._now, self._was):
            if target is None:
                continue
            if target.node is None:
                return None
            named.add(target.node)
        return frozenset(named)

    def for_node(self, node: str, labels: Mapping[str, str]) -> Change | None:
        entry = self._entry
        if self._now is not None and self._now.matches(node, labels) and entry.body is not None:
            return Upsert(self._key, entry.revision, entry.body)
        if self._was is not None and self._was.matches(node, labels):
            return Delete(self._key, entry.revision)
        return None


def labels_changed(entry: LogEntry) -> bool:
    return entry.kind == "Node" and labels_of(entry.prev) != labels_of(entry.body)


def body_labels(body: dict[str, Any] | None) -> dict[str, str]:
    return labels_of(body)
