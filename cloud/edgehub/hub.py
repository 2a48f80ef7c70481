"""The hub's core: resources in memory over the store, node sessions, fan-out, uplink
ingest and node status. No I/O of its own: ``link.py`` drives sessions over WebSockets and
``api.py`` calls the operator operations.

Everything runs on one asyncio loop; store calls are synchronous SQLite transactions, so a
change is committed, cached and queued to every connected node without a suspension point
in between (no node can miss a change between its resume and its registration).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cbor2

from edgehub import fanout
from edgehub.metrics import HubMetrics
from edgehub.resources import ResourceError, check_name, resource_key, validate_document
from edgehub.selectors import Selector
from edgehub.store import HubStore, LogEntry, StoredResource
from edgehub.targeting import labels_of, target_of
from edgenode.errors import TwinError
from edgenode.protocol import (
    Change,
    ChangeRejected,
    ErrorCode,
    Event,
    HubConfig,
    HubProtocol,
    NodeHello,
    PeerTimedOut,
    RevisionAcked,
    UplinkReceived,
)
from edgenode.twin import check_limits, delta, merge_patch

TOKEN_PREFIX = "ent_"
TOKEN_BYTES = 32
"""256-bit node tokens."""
IDLE_FLUSH_SECONDS = 1.0
"""Revision-only advances (changes for other nodes) are coalesced for this long."""
ACK_PERSIST_SECONDS = 0.5
"""Acked revisions are written to the store in batches at this period."""
MAX_WATCH_QUEUE = 10_000
SNAPSHOT_AFTER_REVISIONS = 1000
"""A node further behind than this gets a snapshot instead of the log since its revision."""
MAX_UPLINK_PAYLOAD_DEPTH = 32
UPLINK_KINDS = ("status", "twin", "device-state", "telemetry")

log = logging.getLogger("edgehub.hub")


def hash_token(token: str) -> str:
    """Tokens are stored as SHA-256 hex (fast on purpose: a fleet reconnect checks many)."""
    return hashlib.sha256(token.encode()).hexdigest()


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
    """Revisions kept in the log; older resumes get a snapshot."""
    telemetry_max_bytes: int = 256 * 1024 * 1024
    telemetry_max_age: float = 7 * 24 * 3600.0
    dedupe_age: float = 7 * 24 * 3600.0
    max_frame_size: int = 1024 * 1024

    def protocol_config(self) -> HubConfig:
        return HubConfig(
            max_frame_size=self.max_frame_size,
            handshake_timeout=self.handshake_timeout,
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_deadline=self.heartbeat_deadline,
        )


@dataclass
class Session:
    """One open node link: the protocol object and what waits to be sent."""

    node: str
    proto: HubProtocol
    pending: list[Change] = field(default_factory=list)
    pending_revision: int = 0
    snapshot: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    flush_scheduled: bool = False
    synced: bool = False
    initial_revision: int = 0
    initial_acked: bool = False
    sent_times: deque[tuple[int, float]] = field(default_factory=deque)

    def kick(self) -> None:
        self.wake.set()


@dataclass
class NodeLive:
    """What the hub knows about a node beyond its resource (kept in memory, persisted as
    the Node's status on changes of readiness)."""

    ready: bool = False
    last_seen: float | None = None
    acked: int = 0
    version: str = ""
    arch: str = ""
    outbox: Any = None
    metrics: dict[str, Any] = field(default_factory=dict)


class Hub:
    """Fleet state and operations shared by the link server and the operator API."""

    def __init__(self, store: HubStore, settings: HubSettings, metrics: HubMetrics) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.resources: dict[tuple[str, str], StoredResource] = {
            (r.kind, r.name): r for r in store.list_resources()
        }
        # Index for snapshots: resources aimed at one node by name, and those with a
        # selector (a snapshot looks at these only, not at the whole fleet's resources).
        self._by_node: dict[str, set[tuple[str, str]]] = {}
        self._selected: set[tuple[str, str]] = set()
        for ident, stored in self.resources.items():
            self._index(ident, stored.body, add=True)
        self.revision = store.revision()
        self.sessions: dict[str, Session] = {}
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
        self.syncing = 0
        """Accepted links whose initial sync is not acknowledged yet (admission control)."""
        self.watchers: list[asyncio.Queue[dict[str, Any]]] = []
        self._acks_dirty: set[str] = set()
        self.metrics.revision.set(self.revision)
        self.metrics.acks_pending.set_function(self._acks_pending)

    def _acks_pending(self) -> float:
        return float(
            sum(1 for s in self.sessions.values() if s.proto.sent_revision > self._acked(s.node))
        )

    def _acked(self, node: str) -> int:
        live = self.live.get(node)
        return 0 if live is None else live.acked

    # --- Operator operations ------------------------------------------------------------

    def apply(self, documents: list[Any]) -> list[dict[str, Any]]:
        """Validate every document first (all or nothing), then store and fan out."""
        resources = [validate_document(doc, index) for index, doc in enumerate(documents)]
        seen: set[tuple[str, str]] = set()
        for index, body in enumerate(resources):
            ident = (body["kind"], body["metadata"]["name"])
            if ident in seen:
                raise ResourceError(index, "metadata.name", f"{ident[0]} {ident[1]} appears twice")
            seen.add(ident)
        results = []
        for (entry, revision), body in zip(self.store.put(resources), resources, strict=True):
            kind, name = body["kind"], body["metadata"]["name"]
            existed = (kind, name) in self.resources
            if entry is not None:
                self._committed(entry)
            action = "unchanged" if entry is None else ("configured" if existed else "created")
            results.append({"kind": kind, "name": name, "revision": revision, "action": action})
        return results

    def delete(self, kind: str, name: str) -> LogEntry | None:
        entry = self.store.delete(kind, name)
        if entry is not None:
            self._committed(entry)
            if kind == "Node":
                self.revoke(name)
        return entry

    def node_add(self, name: str, labels: dict[str, str]) -> tuple[str, int]:
        """Create the Node (if missing) and a join token; returns (token, revision).
        ValueError when the node already has a live token."""
        check_name(name, None, "name")
        if self.store.has_live_token(name):
            raise ValueError(f"node {name!r} already has a token; revoke it first")
        existing = self.resources.get(("Node", name))
        if existing is None:
            doc = {
                "apiVersion": "edgenode.io/v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": labels},
                "spec": {},
            }
            revision = self.apply([doc])[0]["revision"]
        else:
            revision = existing.revision
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        self.store.add_token(name, hash_token(token))
        return token, revision

    def revoke(self, name: str) -> int:
        count = self.store.revoke(name)
        session = self.sessions.get(name)
        if session is not None:
            session.proto.send_error(ErrorCode.UNAUTHORIZED, "token revoked")
            session.kick()
        return count

    def twin_set(self, device: str, patch: dict[str, Any]) -> dict[str, Any]:
        current = self.resources.get(("Device", device))
        if current is None:
            raise KeyError(device)
        body = json.loads(json.dumps(current.body))
        spec = body["spec"]
        try:
            spec["desired"] = merge_patch(spec.get("desired", {}), patch)
            check_limits(spec["desired"])
        except TwinError as exc:
            raise ResourceError(None, "spec.desired", str(exc)) from None
        body["metadata"].pop("resourceVersion", None)
        body["metadata"].pop("generation", None)
        self.apply([body])
        return self.view("Device", device) or {}

    # --- Views ----------------------------------------------------------------------------

    def view(self, kind: str, name: str) -> dict[str, Any] | None:
        stored = self.resources.get((kind, name))
        if stored is None:
            return None
        return self._view(stored)

    def _view(self, stored: StoredResource) -> dict[str, Any]:
        body = json.loads(json.dumps(stored.body))
        body["metadata"]["creationTimestamp"] = _iso(stored.created)
        if stored.kind == "Node":
            body["status"] = self.node_status(stored.name)
        elif stored.kind == "Device":
            status = self.store.get_status("Device", stored.name)
            status.setdefault("reported", {})
            status["delta"] = delta(body["spec"].get("desired", {}), status["reported"])
            status.setdefault("versions", {})["desired"] = stored.generation
            body["status"] = status
        rejections = self.store.rejections(stored.key)
        if rejections:
            body.setdefault("status", {})["rejections"] = [
                {"node": r.node, "revision": r.revision, "code": r.code, "message": r.message}
                for r in rejections
                if r.revision == stored.revision
            ]
        result: dict[str, Any] = body
        return result

    def node_status(self, name: str) -> dict[str, Any]:
        live = self.live.get(name, NodeLive())
        return {
            "state": "Ready" if live.ready else "NotReady",
            "lastSeen": None if live.last_seen is None else _iso(live.last_seen),
            "revision": live.acked,
            "lag": max(0, self.revision - live.acked) if live.ready else None,
            "connected": name in self.sessions,
            "version": live.version,
            "arch": live.arch,
            "outbox": live.outbox,
            "metrics": live.metrics,
        }

    def list_views(self, kind: str, selector: Selector | None) -> list[dict[str, Any]]:
        out = []
        for (k, _), stored in sorted(self.resources.items()):
            if k != kind:
                continue
            if selector is not None and not selector.matches(labels_of(stored.body)):
                continue
            out.append(self._view(stored))
        return out

    # --- Fan-out --------------------------------------------------------------------------

    def _committed(self, entry: LogEntry) -> None:
        """A change is durable: update the cache, tell watchers and connected nodes."""
        ident = (entry.kind, entry.name)
        self._index(ident, entry.prev, add=False)
        if entry.body is None:
            self.resources.pop(ident, None)
        else:
            stored = self.store.get(entry.kind, entry.name)
            if stored is not None:
                self.resources[ident] = stored
                self._index(ident, stored.body, add=True)
        self.revision = entry.revision
        self.metrics.revision.set(self.revision)
        now = time.monotonic()
        for session in self.sessions.values():
            if not session.synced:
                continue
            if fanout.labels_changed(entry) and session.node == entry.name:
                session.snapshot = True
                session.pending.clear()
                session.pending_revision = entry.revision
                session.sent_times.append((entry.revision, now))
                session.kick()
                continue
            labels = labels_of(self._node_body(session.node))
            change = fanout.live_change(entry, session.node, labels)
            session.pending_revision = entry.revision
            if change is not None:
                session.pending.append(change)
                session.sent_times.append((entry.revision, now))
                session.kick()
            elif not session.flush_scheduled:
                session.flush_scheduled = True
                asyncio.get_running_loop().call_later(IDLE_FLUSH_SECONDS, session.kick)
        event = {
            "type": "DELETED" if entry.body is None else "MODIFIED",
            "revision": entry.revision,
            "kind": entry.kind,
            "name": entry.name,
            "object": entry.body if entry.body is not None else entry.prev,
        }
        for queue in self.watchers:
            if queue.qsize() < MAX_WATCH_QUEUE:
                queue.put_nowait(event)

    def _index(self, ident: tuple[str, str], body: dict[str, Any] | None, *, add: bool) -> None:
        if body is None:
            return
        target = target_of(body)
        if target is None:
            return
        if target.node is not None:
            names = self._by_node.setdefault(target.node, set())
            if add:
                names.add(ident)
            else:
                names.discard(ident)
        elif add:
            self._selected.add(ident)
        else:
            self._selected.discard(ident)

    def candidates(self, node: str) -> list[StoredResource]:
        """Resources that may target ``node``: by name, or by selector."""
        idents = self._by_node.get(node, set()) | self._selected
        return [self.resources[i] for i in idents if i in self.resources]

    def _node_body(self, node: str) -> dict[str, Any] | None:
        stored = self.resources.get(("Node", node))
        return None if stored is None else stored.body

    def take_outgoing(self, session: Session) -> None:
        """Move what is pending for a session into its protocol object."""
        session.flush_scheduled = False
        if session.snapshot:
            session.snapshot = False
            labels = labels_of(self._node_body(session.node))
            snap = fanout.snapshot_for(
                session.node, labels, self.candidates(session.node), session.pending_revision
            )
            session.proto.send_snapshot(snap.revision, snap.resources)
        elif session.pending or session.pending_revision > session.proto.sent_revision:
            changes, session.pending = session.pending, []
            session.proto.send_changes(changes, session.pending_revision)

    # --- Link events ----------------------------------------------------------------------

    def over_capacity(self) -> bool:
        # Only admitted handshakes count: counting every waiting connection would refuse
        # everyone in a reconnect storm (all retry together, all are refused again).
        return self.syncing >= self.settings.max_handshakes

    def open_session(self, node: str, proto: HubProtocol, hello: NodeHello) -> Session:
        """Accept a hello: register the session and queue its initial sync (resume)."""
        old = self.sessions.get(node)
        if old is not None:
            old.proto.send_error(ErrorCode.REPLACED, "a newer connection of this node")
            old.kick()
        session = Session(node, proto)
        if hello.next_seq is not None:
            self._forget_previous_life(node, hello.next_seq)
        proto.accept(self.revision)
        labels = labels_of(self._node_body(node))
        compacted = self.store.compacted_revision()
        if self.revision - hello.last_revision > SNAPSHOT_AFTER_REVISIONS:
            # Far behind: a snapshot (from the index) is cheaper than reading the log.
            compacted = max(compacted, hello.last_revision + 1)
        log = (
            self.store.log_since(hello.last_revision)
            if (compacted <= hello.last_revision <= self.revision)
            else []
        )
        plan = fanout.resume(
            node,
            hello.last_revision,
            self.revision,
            compacted,
            log,
            labels,
            self.candidates(node),
        )
        if isinstance(plan, fanout.Snapshot):
            proto.send_snapshot(plan.revision, plan.resources)
        else:
            proto.send_changes(plan.changes, plan.revision)
        session.pending_revision = self.revision
        session.initial_revision = self.revision
        self.syncing += 1
        self.metrics.handshakes.set(self.syncing)
        session.sent_times.append((self.revision, time.monotonic()))
        session.synced = True
        self.sessions[node] = session
        live = self.live.setdefault(node, NodeLive())
        live.ready = True
        live.last_seen = time.time()
        live.version = hello.software_version
        self.metrics.connected_nodes.set(len(self.sessions))
        self._persist_node_status(node)
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

    def _initial_sync_done(self, session: Session) -> None:
        if not session.initial_acked:
            session.initial_acked = True
            self.syncing -= 1
            self.metrics.handshakes.set(self.syncing)

    def close_session(self, session: Session) -> None:
        self._initial_sync_done(session)
        if self.sessions.get(session.node) is session:
            del self.sessions[session.node]
            live = self.live.setdefault(session.node, NodeLive())
            live.ready = False
            self._persist_node_status(session.node)
            self.metrics.connected_nodes.set(len(self.sessions))

    def seen(self, node: str) -> None:
        live = self.live.get(node)
        if live is not None:
            live.last_seen = time.time()

    def handle_events(self, session: Session, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, RevisionAcked):
                self._on_ack(session, event.revision)
            elif isinstance(event, UplinkReceived):
                self._on_uplink(session, event)
            elif isinstance(event, ChangeRejected):
                self.store.reject(
                    session.node, event.key, event.revision, event.code, event.message
                )
            elif isinstance(event, PeerTimedOut):
                self.metrics.rejected_connections.labels("timeout").inc()

    def _on_ack(self, session: Session, revision: int) -> None:
        live = self.live.setdefault(session.node, NodeLive())
        live.acked = revision
        self._acks_dirty.add(session.node)
        if revision >= session.initial_revision:
            self._initial_sync_done(session)
        now = time.monotonic()
        while session.sent_times and session.sent_times[0][0] <= revision:
            _, sent = session.sent_times.popleft()
            self.metrics.fanout_latency.observe(now - sent)

    def persist_acks(self) -> None:
        dirty, self._acks_dirty = self._acks_dirty, set()
        if not dirty:
            return
        with self.store.transaction():
            for node in dirty:
                self.store.set_acked(node, self.live[node].acked)

    def _persist_node_status(self, node: str) -> None:
        live = self.live[node]
        self.store.set_status(
            "Node",
            node,
            {
                "lastSeen": live.last_seen,
                "version": live.version,
                "arch": live.arch,
                "outbox": live.outbox,
                "metrics": live.metrics,
            },
        )

    def _on_uplink(self, session: Session, event: UplinkReceived) -> None:
        """Persist (deduplicated by (node, seq)) and apply in one transaction, then ack."""
        node = session.node
        with self.store.transaction():
            fresh = self.store.record_uplink(node, [r.sequence for r in event.records])
            for record in event.records:
                if record.sequence not in fresh:
                    self.metrics.uplink_records.labels("duplicate").inc()
                    continue
                problem = self._apply_record(node, record.payload)
                self.metrics.uplink_records.labels("rejected" if problem else "stored").inc()
        session.proto.ack_uplink([r.sequence for r in event.records])

    def _apply_record(self, node: str, payload: bytes) -> str | None:
        """Apply one uplink record; returns why it was refused (dropped, still acked)."""
        record = decode_uplink(payload)
        if record is None:
            return "not a CBOR or JSON map with a known 'kind'"
        kind = record["kind"]
        if kind == "status":
            live = self.live.setdefault(node, NodeLive())
            live.version = str(record.get("version", live.version))
            live.arch = str(record.get("arch", live.arch))
            if "outbox" in record:
                live.outbox = record["outbox"]
            metrics = record.get("metrics")
            live.metrics = (
                metrics
                if isinstance(metrics, dict)
                else {k: v for k, v in record.items() if k not in ("kind", "outbox")}
            )
            self._persist_node_status(node)
            return None
        device = record.get("device")
        if not isinstance(device, str):
            return "record without a 'device' name"
        stored = self.resources.get(("Device", device))
        if stored is None or stored.body["spec"].get("node") != node:
            # A node writes only its own devices' status (isolation between nodes).
            return f"device {device!r} is not attached to node {node!r}"
        if kind == "telemetry":
            self.store.add_telemetry(node, device, record)
            return None
        status = self.store.get_status("Device", device)
        status["lastSeen"] = _iso(time.time())
        if kind == "twin":
            reported = record.get("reported")
            if not isinstance(reported, dict):
                return "twin record without a 'reported' map"
            version = record.get("version")
            if isinstance(version, int) and not isinstance(version, bool):
                # The node sends the device's FULL reported document with its version
                # (only the newest waits in its outbox), so a newer record replaces
                # status.reported: keys the device deleted disappear. Records can arrive
                # out of order across priorities: an older or equal version is ignored.
                stored_version = status.get("versions", {}).get("reported")
                if not isinstance(stored_version, int) or version > stored_version:
                    status["reported"] = reported
                    status.setdefault("versions", {})["reported"] = version
            else:
                # Without a version (a bare record), the map is a merge patch.
                try:
                    status["reported"] = merge_patch(status.get("reported", {}), reported)
                except TwinError as exc:
                    return str(exc)
        else:  # device-state
            if "state" in record:
                status["state"] = record["state"]
            if "ack" in record:
                status["lastAck"] = record["ack"]
        self.store.set_status("Device", device, status)
        return None

    def telemetry_retention(self) -> None:
        dropped = self.store.prune(
            self.settings.telemetry_max_bytes,
            self.settings.telemetry_max_age,
            self.settings.dedupe_age,
        )
        self.metrics.telemetry_dropped.inc(dropped)
        self.store.compact(self.revision - self.settings.log_keep)


def decode_uplink(payload: bytes) -> dict[str, Any] | None:
    """An uplink record as a flat map with a ``kind``.

    Accepted: the node daemon's envelope, compact JSON
    ``{"v": 1, "kind": K, "node": N, "ts": T, "body": {...}}`` (the body's fields are
    lifted to the top level; the envelope's ``node`` is informative, the link decides
    who wrote it), or a bare CBOR/JSON map with ``kind`` and the fields at the top level.
    """
    value: Any
    try:
        # A JSON object starts with "{" (CBOR would read that byte as a short text string).
        value = json.loads(payload) if payload[:1] == b"{" else cbor2.loads(payload)
    except Exception:
        return None
    if not isinstance(value, dict) or value.get("kind") not in UPLINK_KINDS:
        return None
    body = value.get("body")
    if isinstance(body, dict):
        value = {**body, "kind": value["kind"], "ts": value.get("ts")}
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    record: dict[str, Any] = value
    return record


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def key_of(kind: str, name: str) -> str:
    return resource_key(kind, name)
