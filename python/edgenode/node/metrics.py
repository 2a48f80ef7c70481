"""Prometheus metrics of the node, served as text on ``[metrics] listen``.

A private registry (no process-wide default state), updated by the daemon and the link on
the event loop; ``prometheus_client`` serves it from its own thread.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

LINK_STATES: Final = ("standalone", "connecting", "connected", "disconnected")


class Metrics:
    """Every metric of the node, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.outbox_messages = Gauge(
            "edgenode_outbox_messages", "Records waiting in the outbox", registry=r
        )
        self.outbox_bytes = Gauge(
            "edgenode_outbox_bytes", "Payload bytes waiting in the outbox", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "edgenode_outbox_oldest_age_seconds", "Age of the oldest outbox record", registry=r
        )
        self.outbox_dropped = Gauge(
            "edgenode_outbox_dropped",
            "Outbox records dropped so far, by reason (persisted across restarts)",
            ["reason"],
            registry=r,
        )
        self.link_state = Gauge(
            "edgenode_link_state", "1 for the cloud link's current state", ["state"], registry=r
        )
        self.frames_in = Counter(
            "edgenode_link_frames_received", "Messages from the hub", registry=r
        )
        self.frames_out = Counter("edgenode_link_frames_sent", "Messages to the hub", registry=r)
        self.reconnects = Counter(
            "edgenode_link_connect_attempts", "Connection attempts to the hub", registry=r
        )
        self.uplink_acked = Counter(
            "edgenode_uplink_acked", "Uplink records acknowledged by the hub", registry=r
        )
        self.uplink_oversized = Counter(
            "edgenode_uplink_dropped_oversized",
            "Uplink records dropped because they exceed the hub's frame limit",
            registry=r,
        )
        self.changes_applied = Counter(
            "edgenode_desired_changes_applied", "Desired-state changes persisted", registry=r
        )
        self.changes_rejected = Counter(
            "edgenode_desired_changes_rejected", "Desired-state changes refused", registry=r
        )
        self.applied_revision = Gauge(
            "edgenode_applied_revision", "Last desired-state revision persisted", registry=r
        )
        self.set_link_state("connecting")

    def set_link_state(self, state: str) -> None:
        for name in LINK_STATES:
            self.link_state.labels(name).set(1 if name == state else 0)

    def set_outbox(self, stats: dict[str, int | float]) -> None:
        self.outbox_messages.set(stats["messages"])
        self.outbox_bytes.set(stats["bytes"])
        self.outbox_oldest_age.set(stats["oldest_age"])
        for reason in ("dropped_expired", "dropped_quota", "rejected"):
            self.outbox_dropped.labels(reason.removeprefix("dropped_")).set(stats[reason])

    def serve(self, host: str, port: int) -> str:
        """Start the HTTP endpoint; returns the bound ``host:port`` (port 0 picks one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        bound_port = server.server_address[1]
        return f"{host}:{bound_port}"
