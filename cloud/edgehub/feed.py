"""The hub's change feed: every change of a resource, spec or status, in one order, for
watchers (``edgectl get -w``, ``kubectl get -w``, ``kubectl wait``).

**Positions.** A change has a :class:`Position` ``(revision, status)``. A desired-state
change (apply, delete) is the hub revision ``R`` that the store gave it — the number nodes
acknowledge, which counts desired-state changes only. A status change (a node connects,
reports, its lag or outbox moves; a device reports) does not touch the revision: it counts
on ``status``, a per-process counter that starts at the hub's start time in milliseconds,
so it grows across restarts too. Both parts only grow and each change moves exactly one,
so ``(R, s)`` orders every change. Its text, the Kubernetes ``resourceVersion``, is ``R``
when ``s`` is 0 and ``R.s`` otherwise (docs/kubectl.md). A feed between hub replicas can
carry positions unchanged: ``R`` is the shared revision, ``s`` the replica's own count
(a watcher stays on one replica or lists again).

**Status changes** are found by looking: while a kind is of interest — it has watchers,
or it was listed in the last :data:`LOOK_GRACE` seconds (a list is how a watch starts) —
:meth:`ChangeFeed.poll_status` (every second) renders the status of each of its resources
and emits a ``MODIFIED`` for each one that changed since the last look: at most one per
object per second, nothing at all for kinds nobody looks at. A list takes the baseline in
the same turn of the event loop as it renders, so a watch from the list's position misses
nothing. Resuming from a position the feed cannot vouch for (older than it holds, from
before the kind was looked at, another process's) is answered with 410 Gone: list again.

**Bounds.** The feed keeps the last :data:`MAX_FEED_EVENTS` changes; a subscriber's queue
holds at most :data:`MAX_SUBSCRIBER_EVENTS`: one that falls that far behind is ended with
``gone`` set (its stream sends a 410 ERROR event and ends: the client lists again) instead
of losing events silently.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

MAX_FEED_EVENTS: Final = 10_000
MAX_SUBSCRIBER_EVENTS: Final = 10_000
STATUS_POLL_SECONDS: Final = 1.0
LOOK_GRACE: Final = 300.0
"""Seconds a kind's status stays looked at after it was last listed or watched."""

ADDED: Final = "ADDED"
MODIFIED: Final = "MODIFIED"
DELETED: Final = "DELETED"


@dataclass(frozen=True, order=True, slots=True)
class Position:
    revision: int
    status: int = 0

    def __str__(self) -> str:
        return str(self.revision) if self.status == 0 else f"{self.revision}.{self.status}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """``R`` or ``R.s`` (ValueError otherwise)."""
        head, sep, tail = text.partition(".")
        if not head.isdigit() or (sep and not tail.isdigit()) or len(text) > 40:
            raise ValueError(f"resourceVersion {text[:40]!r} is not one this hub wrote")
        return cls(int(head), int(tail) if sep else 0)


@dataclass(frozen=True, slots=True)
class Change:
    """One change of one resource: ``body`` is the stored body (the last one for a
    deletion), ``status`` the status view it was seen with (None: rendered when sent)."""

    position: Position
    type: str
    kind: str
    name: str
    body: dict[str, Any]
    status: dict[str, Any] | None = None
    created: float | None = None
    """When the resource was created (known for updates and deletions)."""


@dataclass(eq=False)
class Subscriber:
    """One watcher of one kind: its queue of changes, ended by ``None`` once it fell
    behind or the hub stops (``gone``): the stream says so and ends."""

    kind: str
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)
    gone: bool = False
    why: str = ""
    """Why it ended (``gone``): said to the client in the stream's last event."""

    def offer(self, change: Change) -> None:
        if self.gone:
            return
        if self.queue.qsize() >= MAX_SUBSCRIBER_EVENTS:
            self.end(f"the watch fell {MAX_SUBSCRIBER_EVENTS:,} changes behind")
            return
        self.queue.put_nowait(change)

    def end(self, why: str) -> None:
        if not self.gone:
            self.gone = True
            self.why = why
            self.queue.put_nowait(None)


StatusOf = Callable[[str], dict[str, tuple[dict[str, Any], dict[str, Any] | None]]]
"""``status_of(kind)``: name -> (stored body, status view) of every resource of the kind."""


def _digest(status: dict[str, Any] | None) -> bytes:
    text = json.dumps(status, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class ChangeFeed:
    """The changes of one hub, in order, with the subscribers that watch them."""

    def __init__(
        self,
        revision: int,
        status_of: StatusOf,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._status_of = status_of
        self._monotonic = monotonic
        self._interest: dict[str, float] = {}
        """Per kind: until when (monotonic) it is looked at without watchers."""
        self._revision = revision
        self._status = 0
        self._status_base = int(clock() * 1000)
        self._changes: deque[Change] = deque(maxlen=MAX_FEED_EVENTS)
        self._complete_since = Position(revision, 0)
        """Every change after this position is in ``_changes`` (for spec changes)."""
        self._subscribers: list[Subscriber] = []
        self._looked: dict[str, Position] = {}
        """Per kind watched: since when its status changes are in the feed."""
        self._digests: dict[str, dict[str, bytes]] = {}
        self._status_positions: dict[tuple[str, str], Position] = {}
        """Where each object's last status change is (while its kind is looked at)."""

    @property
    def position(self) -> Position:
        return Position(self._revision, self._status)

    # --- Changes ---------------------------------------------------------------------------

    def spec_changed(
        self,
        revision: int,
        kind: str,
        name: str,
        body: dict[str, Any],
        *,
        created: float | None,
        deleted: bool,
    ) -> None:
        """A desired-state change was committed at ``revision`` (``created``: when the
        resource was created, None for a new one)."""
        self._revision = revision
        change_type = DELETED if deleted else (ADDED if created is None else MODIFIED)
        self._append(Change(self.position, change_type, kind, name, body, created=created))
        if deleted:
            self._status_positions.pop((kind, name), None)
            digests = self._digests.get(kind)
            if digests is not None:
                digests.pop(name, None)

    def object_position(self, kind: str, name: str, revision: int) -> Position:
        """The position of an object's last change: its spec ``revision``, or a later
        status change."""
        spec = Position(revision, 0)
        status = self._status_positions.get((kind, name))
        return spec if status is None or status < spec else status

    def look(self, kind: str) -> None:
        """``kind`` is being listed or watched: look at its status from now on (the
        baseline is taken now, in the caller's turn of the event loop)."""
        self._interest[kind] = self._monotonic() + LOOK_GRACE
        if kind not in self._digests:
            current = self._status_of(kind)
            self._digests[kind] = {n: _digest(s) for n, (_b, s) in current.items()}
            self._looked[kind] = self.position

    def poll_status(self) -> int:
        """Look at the status of every kind of interest; a change for each resource whose
        status moved since the last look. Returns how many."""
        emitted = 0
        looked_at = self.watched_kinds()
        for kind in list(self._digests):
            if kind not in looked_at:
                # Nobody looks any more: forget, so a later resume is answered with 410.
                del self._digests[kind]
                self._looked.pop(kind, None)
                for key in [k for k in self._status_positions if k[0] == kind]:
                    del self._status_positions[key]
        for kind in sorted(looked_at):
            if kind not in self._digests:
                self.look(kind)
                continue
            digests = self._digests[kind]
            for name, (body, status) in self._status_of(kind).items():
                digest = _digest(status)
                before = digests.get(name)
                digests[name] = digest
                if before is None or before == digest:
                    continue  # new ones come as ADDED from spec_changed
                self._status = max(self._status + 1, self._status_base)
                self._status_positions[(kind, name)] = self.position
                self._append(Change(self.position, MODIFIED, kind, name, body, status))
                emitted += 1
        return emitted

    def _append(self, change: Change) -> None:
        if len(self._changes) == self._changes.maxlen:
            self._complete_since = self._changes[0].position
        self._changes.append(change)
        for subscriber in self._subscribers:
            if subscriber.kind == change.kind:
                subscriber.offer(change)

    # --- Subscribers -----------------------------------------------------------------------

    def watched_kinds(self) -> set[str]:
        """Kinds with watchers, and kinds listed within the grace period."""
        now = self._monotonic()
        for kind, until in list(self._interest.items()):
            if until < now:
                del self._interest[kind]
        return {s.kind for s in self._subscribers} | set(self._interest)

    def follow(self, kind: str) -> Subscriber:
        """A subscriber of ``kind``'s changes from now on."""
        subscriber = Subscriber(kind)
        self.look(kind)
        self._subscribers.append(subscriber)
        return subscriber

    def resume(self, kind: str, since: Position) -> Subscriber | None:
        """A subscriber of ``kind``'s changes after ``since``; None if the feed cannot give
        every one of them (410 Gone: list again)."""
        missed = self.changes_after(kind, since)
        if missed is None:
            return None
        subscriber = self.follow(kind)
        for change in missed:
            subscriber.offer(change)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def changes_after(self, kind: str, since: Position) -> list[Change] | None:
        """``kind``'s changes after ``since``, or None when the feed does not hold them all
        (too old, from before the kind's status was looked at, or from the future)."""
        if since > self.position:
            return None
        if since < self._complete_since:
            return None
        looked = self._looked.get(kind)
        if looked is None or since < looked:
            # Status changes since then were not looked at (or were another process's).
            return None
        return [c for c in self._changes if c.kind == kind and c.position > since]

    def subscribers(self) -> int:
        return len(self._subscribers)

    def end_all(self) -> None:
        """End every subscriber (the hub is stopping): their streams end."""
        for subscriber in self._subscribers:
            subscriber.end("the hub is stopping")
