"""The hub's core: the composition of its parts, with no I/O of its own.

- ``cache.ResourceCache``: resources in memory, indexed by whom they target;
- ``sessions.Sessions``: node links, fan-out of committed changes, acks, live node state;
- ``admission.Admission``: how many initial syncs at once, retry-after for the rest;
- ``ingest.UplinkIngest``: uplink records applied through the kind registry;
- ``operations.Operations``: what operators do (apply, delete, node tokens, twins, views).

``link.py`` drives sessions over WebSockets and ``api.py`` calls the operations. Everything
runs on one asyncio loop; store calls are synchronous SQLite transactions, so a change is
committed, cached and queued to every connected node without a suspension point in
between (no node can miss a change between its resume and its registration).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgehub.admission import Admission
from edgehub.artifacts import ArtifactStore, ArtifactStoreError
from edgehub.cache import ResourceCache
from edgehub.feed import ChangeFeed
from edgehub.ingest import UplinkIngest
from edgehub.kinds import REGISTRY, Registry
from edgehub.kinds.base import iso_time, ready_condition
from edgehub.logstreams import LogRequests
from edgehub.metrics import HubMetrics
from edgehub.operations import Operations, hash_token
from edgehub.rollouts import RolloutController
from edgehub.sessions import NodeLive, Session, Sessions
from edgehub.store import HubStore, LogEntry, StoredResource
from edgenode.protocol import (
    ChangeRejected,
    Event,
    HubConfig,
    HubProtocol,
    NodeHello,
    PeerTimedOut,
    RevisionAcked,
    UplinkReceived,
)
from edgenode.protocol.events import ArtifactRequested, LogEnded, LogReceived

__all__ = ["Hub", "HubSettings", "NodeLive", "Session", "hash_token"]


@dataclass
class HubSettings:
    """Timers and limits (tests scale them down)."""

    heartbeat_interval: float = 15.0
    heartbeat_deadline: float | None = None
    handshake_timeout: float = 10.0
    max_handshakes: int = 512
    retry_after: float = 5.0
    """Base delay told to nodes over the handshake cap; the hub adds up to 100% jitter."""
    log_keep: int = 100_000
    """Revisions kept in the log (``--log-keep``); older resumes get a snapshot."""
    snapshot_after: int = 1000
    """A node more than this many revisions behind gets a snapshot even when the log still
    reaches back (``--snapshot-after``): past this, reading and filtering the log costs
    more than a snapshot from the index. The log still bounds it: a node behind what
    ``--log-keep`` keeps always gets a snapshot."""
    telemetry_max_bytes: int = 256 * 1024 * 1024
    telemetry_max_age: float = 7 * 24 * 3600.0
    dedupe_age: float = 7 * 24 * 3600.0
    max_frame_size: int = 1024 * 1024
    compression: bool = False
    """Grant permessage-deflate to nodes that ask (``--compression``): fewer bytes on thin
    links, a zlib context (tens of KB) per compressed link on the hub."""

    def protocol_config(self) -> HubConfig:
        return HubConfig(
            max_frame_size=self.max_frame_size,
            handshake_timeout=self.handshake_timeout,
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_deadline=self.heartbeat_deadline,
        )


class Hub:
    """Fleet state shared by the link server and the operator API."""

    def __init__(
        self,
        store: HubStore,
        settings: HubSettings,
        metrics: HubMetrics,
        registry: Registry = REGISTRY,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.settings = settings
        self.metrics = metrics
        self.registry = registry
        self.cache = ResourceCache(store.list_resources(), registry)
        self.revision = store.revision()
        self.admission = Admission(
            settings.max_handshakes, settings.retry_after, metrics.handshakes.set
        )
        self.sessions = Sessions(
            store, self.cache, self.admission, metrics, settings.snapshot_after
        )
        self.ingest = UplinkIngest(self, metrics, registry)
        self.logs = LogRequests(self.sessions)
        self.ops = Operations(self)
        self.rollouts = RolloutController(self)
        self.feed = ChangeFeed(self.revision, self._status_of)
        self.metrics.revision.set(self.revision)
        self.metrics.acks_pending.set_function(lambda: float(self.sessions.acks_pending()))

    # --- Commits ------------------------------------------------------------------------------

    def committed(self, entry: LogEntry) -> None:
        """A change is durable: update the cache, tell watchers and connected nodes."""
        stored = None if entry.body is None else self.store.get(entry.kind, entry.name)
        before = self.cache.get(entry.kind, entry.name)
        self.cache.committed(entry, stored)
        self.feed.spec_changed(
            entry.revision,
            entry.kind,
            entry.name,
            entry.body if entry.body is not None else (entry.prev or {}),
            created=before.created if before is not None else None,
            deleted=entry.body is None,
        )
        self.revision = entry.revision
        self.metrics.revision.set(self.revision)
        self.sessions.committed(entry)

    def _status_of(self, kind: str) -> dict[str, tuple[dict[str, Any], dict[str, Any] | None]]:
        """Each resource of ``kind`` with its status view (the change feed compares them)."""
        return {
            stored.name: (stored.body, self.ops.render(stored).get("status"))
            for stored in self.cache.of_kind(kind)
        }

    # --- What kinds may read and write (ViewContext, IngestContext) -----------------------------

    def resource(self, kind: str, name: str) -> StoredResource | None:
        return self.cache.get(kind, name)

    def targeted_nodes(self, body: Mapping[str, Any]) -> list[str]:
        return self.cache.targeted_nodes(body)

    def node_status(self, name: str) -> dict[str, Any]:
        live = self.sessions.live.get(name, NodeLive())
        return {
            "state": "Ready" if live.ready else "NotReady",
            "lastSeen": None if live.last_seen is None else iso_time(live.last_seen),
            "revision": live.acked,
            "lag": max(0, self.revision - live.acked) if live.ready else None,
            "connected": name in self.sessions.open,
            "version": live.version,
            "arch": live.arch,
            "outbox": live.outbox,
            "metrics": live.metrics,
            "conditions": [ready_condition(live.ready, live.ready_since)],
        }

    def node_reported(self, node: str, record: dict[str, Any]) -> None:
        self.sessions.reported(node, record)

    def artifact_exists(self, digest: str) -> bool:
        info = None if self.artifacts is None else self.artifacts.info(digest)
        return info is not None and info.complete

    # --- Link events ------------------------------------------------------------------------

    def over_capacity(self) -> bool:
        return self.admission.over_capacity()

    def retry_delay(self) -> float:
        return self.admission.retry_delay()

    def open_session(self, node: str, proto: HubProtocol, hello: NodeHello) -> Session:
        return self.sessions.start(node, proto, hello, self.revision)

    def close_session(self, session: Session) -> None:
        current = self.is_current(session)
        self.sessions.end(session)
        if current:
            self.logs.link_ended(session.node)

    def take_outgoing(self, session: Session) -> None:
        self.sessions.take_outgoing(session)

    def is_current(self, session: Session) -> bool:
        """Is ``session`` the node's live link (not replaced by a newer one)?"""
        return self.sessions.open.get(session.node) is session

    def seen(self, node: str) -> None:
        self.sessions.seen(node)

    def handle_events(self, session: Session, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, RevisionAcked):
                self.sessions.acked_revision(session, event.revision)
            elif isinstance(event, UplinkReceived):
                session.proto.ack_uplink(self.ingest.receive(session.node, event))
            elif isinstance(event, ChangeRejected):
                self.store.reject(
                    session.node, event.key, event.revision, event.code, event.message
                )
            elif isinstance(event, PeerTimedOut):
                self.metrics.rejected_connections.labels("timeout").inc()
            elif isinstance(event, ArtifactRequested):
                self._send_artifact(session, event)
            elif isinstance(event, LogReceived):
                self.logs.received(session, event)
            elif isinstance(event, LogEnded):
                self.logs.ended(session, event)

    def _send_artifact(self, session: Session, event: ArtifactRequested) -> None:
        """A chunk of an artifact for a node (read from disk: at most a frame's worth)."""
        proto = session.proto
        if self.artifacts is None:
            proto.refuse_artifact(event.digest, 404, "this hub keeps no artifacts")
            return
        length = min(event.max_bytes, proto.max_artifact_chunk)
        try:
            size, data = self.artifacts.read(event.digest, event.offset, length)
        except ArtifactStoreError as exc:
            proto.refuse_artifact(event.digest, exc.status, exc.message)
            return
        proto.send_artifact(event.digest, event.offset, size, data)
        self.metrics.artifact_bytes_sent.inc(len(data))

    # --- Housekeeping -----------------------------------------------------------------------

    def persist_acks(self) -> None:
        """Write acked revisions and changed Node statuses (periodically and at shutdown)."""
        self.sessions.persist()

    def telemetry_retention(self) -> None:
        dropped = self.store.prune(
            self.settings.telemetry_max_bytes,
            self.settings.telemetry_max_age,
            self.settings.dedupe_age,
        )
        self.metrics.telemetry_dropped.inc(dropped)
        self.store.compact(self.revision - self.settings.log_keep)
