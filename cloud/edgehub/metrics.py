"""Prometheus metrics of one hub (own registry, so several hubs can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class HubMetrics:
    """The hub's counters and gauges; gauges that are derived are set on scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connected_nodes = Gauge(
            "edgehub_connected_nodes", "Nodes with an open link", registry=r
        )
        self.handshakes = Gauge(
            "edgehub_handshakes_in_progress",
            "Accepted links whose initial sync is not acknowledged yet",
            registry=r,
        )
        self.frames_in = Counter("edgehub_frames_in", "WebSocket messages received", registry=r)
        self.frames_out = Counter("edgehub_frames_out", "WebSocket messages sent", registry=r)
        self.fanout_latency = Histogram(
            "edgehub_fanout_latency_seconds",
            "From a change's commit to its acknowledgement by a connected node",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.acks_pending = Gauge(
            "edgehub_acks_pending", "Connected nodes that have not acked what was sent", registry=r
        )
        self.uplink_records = Counter(
            "edgehub_uplink_records",
            "Uplink records by result (stored, duplicate, rejected)",
            ["result"],
            registry=r,
        )
        self.rejected_connections = Counter(
            "edgehub_rejected_connections",
            "Connections refused, by reason",
            ["reason"],
            registry=r,
        )
        self.link_takeovers = Counter(
            "edgehub_link_takeovers",
            "Connections with the token of a node that already has a link: replaced (the "
            "old link was silent or did not answer a ping) or refused (it was live)",
            ["result"],
            registry=r,
        )
        self.protocol_violations = Counter(
            "edgehub_protocol_violations", "Links closed for breaking the protocol", registry=r
        )
        self.api_errors = Counter(
            "edgehub_api_errors",
            "Operator API requests answered with 4xx/5xx",
            ["status"],
            registry=r,
        )
        self.unauthenticated = Gauge(
            "edgehub_unauthenticated_connections",
            "Open connections that have not authenticated yet, by listener (api, link)",
            ["listener"],
            registry=r,
        )
        self.unauthenticated_closed = Counter(
            "edgehub_unauthenticated_closed",
            "Unauthenticated connections closed (the oldest) to stay within the listener's "
            "limit, by listener",
            ["listener"],
            registry=r,
        )
        self.open_streams = Gauge(
            "edgehub_open_streams",
            "Open operator API streams (watches, telemetry follows)",
            registry=r,
        )
        self.open_streams_count = 0
        self.revision = Gauge("edgehub_revision", "Current store revision", registry=r)
        self.artifact_bytes_sent = Counter(
            "edgehub_artifact_bytes_sent",
            "Artifact bytes sent to nodes over their links",
            registry=r,
        )
        self.telemetry_dropped = Counter(
            "edgehub_telemetry_dropped", "Telemetry records dropped by retention", registry=r
        )
