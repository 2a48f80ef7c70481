"""Node sessions and fan-out: who is connected, what each must receive, what each acked.

One :class:`Session` per open node link. When a change is committed (``committed``), every
synced session gets the change as it applies to that node (an upsert, a tombstone, or only
a revision advance, coalesced for ``IDLE_FLUSH_SECONDS``); a node whose own labels changed
gets a snapshot. A new session starts with the resume plan (``fanout.resume``: the changes
since the node's revision, or a snapshot). What nodes acknowledge and what the hub knows
about them live (:class:`NodeLive`) is written to the store in batches
(``persist``: a reconnect storm would otherwise commit twice per node).

Everything runs on one asyncio loop without a suspension point between a commit and the
queueing to every session, so no node can miss a change between its resume and its
registration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edgehub import fanout
from edgehub.admission import Admission
from edgehub.cache import ResourceCache
from edgehub.metrics import HubMetrics
from edgehub.store import HubStore, LogEntry
from edgehub.targeting import labels_of
from edgenode.protocol import Change, ErrorCode, HubProtocol, NodeHello

IDLE_FLUSH_SECONDS = 1.0
"""Revision-only advances (changes for other nodes) are coalesced for this long."""

log = logging.getLogger("edgehub.sessions")


def shown_version(software: str) -> str:
    """A node's version as VERSION shows it, the same from its hello (``edgenode 0.1.0``)
    and from its status records (``0.1.0``): ``0.1.0``. Other software keeps its name."""
    return software.removeprefix("edgenode ")


@dataclass
class Session:
    """One open node link: the protocol object and what waits to be sent."""

    node: str
    proto: HubProtocol
    pending: list[Change] = field(default_factory=list)
    pending_revision: int = 0
    snapshot: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    synced: bool = False
    initial_revision: int = 0
    initial_acked: bool = False
    sent_times: deque[tuple[int, float]] = field(default_factory=deque)
    unsent: list[bytes] = field(default_factory=list)
    """Messages the reader took from the protocol for the writer to send first."""
    protocol_version: int = 1
    """The protocol version negotiated with this node (what it may be sent)."""
    connected_at: float = field(default_factory=time.time)
    """When the link was accepted (wall clock, for rollout deadlines)."""

    def kick(self) -> None:
        self.wake.set()


@dataclass
class NodeLive:
    """What the hub knows about a node beyond its resource (kept in memory, persisted as
    the Node's status on changes of readiness)."""

    ready: bool = False
    ready_since: float | None = None
    """When ``ready`` last changed (None: not since the hub started)."""
    last_seen: float | None = None
    acked: int = 0
    version: str = ""
    arch: str = ""
    outbox: Any = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def persisted(self) -> dict[str, Any]:
        return {
            "lastSeen": self.last_seen,
            "version": self.version,
            "arch": self.arch,
            "outbox": self.outbox,
            "metrics": self.metrics,
        }


class Sessions:
    """The open node links of one hub and the live state of every node."""

    def __init__(
        self,
        store: HubStore,
        cache: ResourceCache,
        admission: Admission,
        metrics: HubMetrics,
        snapshot_after: int,
    ) -> None:
        self.store = store
        self.cache = cache
        self.admission = admission
        self.metrics = metrics
        self.snapshot_after = snapshot_after
        """A node more than this many revisions behind gets a snapshot (not the log)."""
        self.open: dict[str, Session] = {}
        self.live: dict[str, NodeLive] = {}
        acked = store.acked()
        for name, status in store.all_status("Node").items():
            self.live[name] = NodeLive(
                ready=False,
                last_seen=status.get("lastSeen"),
                acked=acked.get(name, 0),
                version=str(status.get("version", "")),
                arch=str(status.get("arch", "")),
                outbox=status.get("outbox"),
                metrics=dict(status.get("metrics", {})),
            )
        for name, revision in acked.items():
            self.live.setdefault(name, NodeLive()).acked = revision
        self._acks_dirty: set[str] = set()
        self._status_dirty: set[str] = set()
        self.revision = store.revision()
        """The hub's revision as of the last committed change."""
        self._flush_scheduled = False

    def acked(self, node: str) -> int:
        live = self.live.get(node)
        return 0 if live is None else live.acked

    def acks_pending(self) -> int:
        return sum(1 for s in self.open.values() if s.proto.sent_revision > self.acked(s.node))

    # --- Fan-out ----------------------------------------------------------------------------

    def committed(self, entry: LogEntry) -> None:
        """Queue a durable change to the synced sessions it concerns. The others only fall
        behind by a revision: one timer per hub (not per session and change) advances
        them within ``IDLE_FLUSH_SECONDS``, so the cost of a change is the nodes it
        targets, not the whole fleet."""
        self.revision = entry.revision
        now = time.monotonic()
        relabelled = entry.name if fanout.labels_changed(entry) else None
        # Who the new and the old version are for: worked out once, matched per node.
        live_change = fanout.LiveChange(entry)
        named = live_change.nodes()
        if named is None:
            concerned: Iterable[Session] = list(self.open.values())
        else:
            concerned = [self.open[node] for node in named if node in self.open]
        for session in concerned:
            if not session.synced:
                continue
            if session.node == relabelled:
                session.snapshot = True
                session.pending.clear()
                session.sent_times.append((entry.revision, now))
                session.kick()
                continue
            change = live_change.for_node(session.node, self.cache.labels(session.node))
            if change is not None:
                session.pending.append(change)
                session.sent_times.append((entry.revision, now))
                session.kick()
        self._schedule_idle_flush()

    def _schedule_idle_flush(self) -> None:
        if self.open and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(IDLE_FLUSH_SECONDS, self._flush_idle)

    def _flush_idle(self) -> None:
        """Advance every synced session that is behind the hub's revision (changes for
        other nodes): its writer sends an empty ``c`` frame up to the current revision."""
        self._flush_scheduled = False
        for session in self.open.values():
            if session.synced and session.proto.sent_revision < self.revision:
                session.kick()

    def take_outgoing(self, session: Session) -> None:
        """Move what is pending for a session into its protocol object, complete up to the
        hub's current revision: every change up to it that concerns the node is queued
        (``committed`` queues without a suspension point)."""
        session.pending_revision = max(session.pending_revision, self.revision)
        if session.snapshot:
            session.snapshot = False
            labels = labels_of(self.cache.node_body(session.node))
            snap = fanout.snapshot_for(
                session.node, labels, self.cache.candidates(session.node), session.pending_revision
            )
            session.proto.send_snapshot(snap.revision, snap.resources)
        elif session.pending or session.pending_revision > session.proto.sent_revision:
            changes, session.pending = session.pending, []
            session.proto.send_changes(changes, session.pending_revision)

    # --- Link life cycle --------------------------------------------------------------------

    def start(self, node: str, proto: HubProtocol, hello: NodeHello, revision: int) -> Session:
        """Accept a hello: register the session and queue its initial sync (resume)."""
        old = self.open.get(node)
        if old is not None:
            old.proto.send_error(ErrorCode.REPLACED, "a newer connection of this node")
            old.kick()
        session = Session(node, proto, protocol_version=hello.protocol_version)
        if hello.next_seq is not None:
            self._forget_previous_life(node, hello.next_seq)
        proto.accept(revision, wall_time=time.time())
        labels = labels_of(self.cache.node_body(node))
        compacted = self.store.compacted_revision()
        if revision - hello.last_revision > self.snapshot_after:
            # Far behind: a snapshot (from the index) is cheaper than reading the log.
            compacted = max(compacted, hello.last_revision + 1)
        log_entries = (
            self.store.log_since(hello.last_revision)
            if (compacted <= hello.last_revision <= revision)
            else []
        )
        plan = fanout.resume(
            node,
            hello.last_revision,
            revision,
            compacted,
            log_entries,
            labels,
            self.cache.candidates(node),
        )
        if isinstance(plan, fanout.Snapshot):
            proto.send_snapshot(plan.revision, plan.resources)
        else:
            proto.send_changes(plan.changes, plan.revision)
        session.pending_revision = revision
        session.initial_revision = revision
        self.admission.sync_started()
        session.sent_times.append((revision, time.monotonic()))
        session.synced = True
        self.open[node] = session
        live = self.live.setdefault(node, NodeLive())
        if not live.ready:
            live.ready_since = time.time()
        live.ready = True
        live.last_seen = time.time()
        live.version = shown_version(hello.software_version)
        self.metrics.connected_nodes.set(len(self.open))
        self.status_changed(node)
        log.info(
            "node %s connected (protocol %d, revision %d of %d)",
            node,
            hello.protocol_version,
            hello.last_revision,
            revision,
        )
        return session

    def _forget_previous_life(self, node: str, next_seq: int) -> None:
        """A live outbox never reuses a sequence number, so sequences at or above the
        node's next one were seen from an earlier life of its store (a restored backup,
        an empty new file): forget them, or its new records would be dropped as
        duplicates for the whole dedupe window."""
        forgotten = self.store.forget_uplink_from(node, next_seq)
        if forgotten:
            log.warning(
                "node %s: its outbox restarted at sequence %d (restored backup or new "
                "store); forgot %d sequence numbers seen before",
                node,
                next_seq,
                forgotten,
            )

    def _initial_sync_done(self, session: Session, *, acked: bool = False) -> None:
        if not session.initial_acked:
            session.initial_acked = True
            self.admission.sync_ended(acked=acked)

    def end(self, session: Session) -> None:
        self._initial_sync_done(session)
        if self.open.get(session.node) is session:
            del self.open[session.node]
            live = self.live.setdefault(session.node, NodeLive())
            live.ready = False
            live.ready_since = time.time()
            self.status_changed(session.node)
            self.metrics.connected_nodes.set(len(self.open))
            log.info("node %s disconnected", session.node)

    def seen(self, node: str) -> None:
        live = self.live.get(node)
        if live is not None:
            live.last_seen = time.time()

    def acked_revision(self, session: Session, revision: int) -> None:
        live = self.live.setdefault(session.node, NodeLive())
        live.acked = revision
        self._acks_dirty.add(session.node)
        if revision >= session.initial_revision:
            self._initial_sync_done(session, acked=True)
        now = time.monotonic()
        while session.sent_times and session.sent_times[0][0] <= revision:
            _, sent = session.sent_times.popleft()
            self.metrics.fanout_latency.observe(now - sent)

    def revoke(self, node: str) -> None:
        session = self.open.get(node)
        if session is not None:
            session.proto.send_error(ErrorCode.UNAUTHORIZED, "token revoked")
            session.kick()

    # --- Node status ------------------------------------------------------------------------

    def reported(self, node: str, record: dict[str, Any]) -> None:
        """A ``status`` uplink record of ``node``."""
        live = self.live.setdefault(node, NodeLive())
        live.version = shown_version(str(record.get("version", live.version)))
        live.arch = str(record.get("arch", live.arch))
        if "outbox" in record:
            live.outbox = record["outbox"]
        metrics = record.get("metrics")
        live.metrics = (
            metrics
            if isinstance(metrics, dict)
            else {k: v for k, v in record.items() if k not in ("kind", "outbox")}
        )
        self.status_changed(node)

    def status_changed(self, node: str) -> None:
        self._status_dirty.add(node)

    def persist(self) -> None:
        """Write acked revisions and changed Node statuses, batched in one transaction."""
        acked, self._acks_dirty = self._acks_dirty, set()
        status, self._status_dirty = self._status_dirty, set()
        if not acked and not status:
            return
        with self.store.transaction():
            for node in acked:
                self.store.set_acked(node, self.live[node].acked)
            for node in status:
                if ("Node", node) not in self.cache:
                    continue  # deleted meanwhile: its status went with it
                self.store.set_status("Node", node, self.live[node].persisted())
