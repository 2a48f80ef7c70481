"""Prometheus metrics of the node, served as text on ``[metrics] listen``.

A private registry (no process-wide default state), updated by the daemon and the link on
the event loop; ``prometheus_client`` serves it from its own thread.

With the endpoint off (``Metrics(enabled=False)``, the daemon's choice when ``listen`` is
empty) the metrics are no-ops and ``prometheus_client`` is never imported: it brings
``http.server``, ``wsgiref``, ``urllib.request`` and ``email`` along, ~2 MB of an idle
node's RSS that nobody would read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

LINK_STATES: Final = ("standalone", "connecting", "connected", "disconnected")


class CounterLike(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class GaugeLike(Protocol):
    def set(self, value: float) -> None: ...
    def labels(self, *values: Any) -> GaugeLike: ...


class _Nothing:
    """A metric nobody reads: every update is dropped."""

    def inc(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def labels(self, *values: Any) -> _Nothing:
        return self


class Metrics:
    """Every metric of the node, in one registry (None when not ``enabled``)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.registry: CollectorRegistry | None = None
        counter: Callable[..., CounterLike]
        gauge: Callable[..., GaugeLike]
        if enabled:
            from prometheus_client import CollectorRegistry, Counter, Gauge

            registry = self.registry = CollectorRegistry(auto_describe=True)

            def counter(name: str, doc: str) -> CounterLike:
                return Counter(name, doc, registry=registry)

            def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeLike:
                return Gauge(name, doc, labels, registry=registry)

        else:
            nothing = _Nothing()
            counter = gauge = lambda *args: nothing
        self.outbox_messages = gauge("edgenode_outbox_messages", "Records waiting in the outbox")
        self.outbox_bytes = gauge("edgenode_outbox_bytes", "Payload bytes waiting in the outbox")
        self.outbox_oldest_age = gauge(
            "edgenode_outbox_oldest_age_seconds", "Age of the oldest outbox record"
        )
        self.outbox_dropped = gauge(
            "edgenode_outbox_dropped",
            "Outbox records dropped so far, by reason (persisted across restarts)",
            ["reason"],
        )
        self.outbox_dropped_by_priority = gauge(
            "edgenode_outbox_dropped_by_priority",
            "Outbox records dropped so far, by reason (expired, quota) and record priority "
            "(persisted across restarts)",
            ["reason", "priority"],
        )
        self.link_state = gauge(
            "edgenode_link_state", "1 for the cloud link's current state", ["state"]
        )
        self.frames_in = counter("edgenode_link_frames_received", "Messages from the hub")
        self.frames_out = counter("edgenode_link_frames_sent", "Messages to the hub")
        self.reconnects = counter(
            "edgenode_link_connect_attempts", "Connection attempts to the hub"
        )
        self.uplink_acked = counter(
            "edgenode_uplink_acked", "Uplink records acknowledged by the hub"
        )
        self.uplink_oversized = counter(
            "edgenode_uplink_dropped_oversized",
            "Uplink records dropped because they exceed the hub's frame limit",
        )
        self.changes_applied = counter(
            "edgenode_desired_changes_applied", "Desired-state changes persisted"
        )
        self.changes_rejected = counter(
            "edgenode_desired_changes_rejected", "Desired-state changes refused"
        )
        self.applied_revision = gauge(
            "edgenode_applied_revision", "Last desired-state revision persisted"
        )
        self.set_link_state("connecting")

    @property
    def enabled(self) -> bool:
        return self.registry is not None

    def set_link_state(self, state: str) -> None:
        for name in LINK_STATES:
            self.link_state.labels(name).set(1 if name == state else 0)

    def set_outbox(
        self, stats: dict[str, int | float], drops: Sequence[tuple[int, int, int]] = ()
    ) -> None:
        """``stats`` from ``Store.outbox_stats``, ``drops`` from ``Store.drop_counts``."""
        self.outbox_messages.set(stats["messages"])
        self.outbox_bytes.set(stats["bytes"])
        self.outbox_oldest_age.set(stats["oldest_age"])
        for reason in ("dropped_expired", "dropped_quota", "rejected"):
            self.outbox_dropped.labels(reason.removeprefix("dropped_")).set(stats[reason])
        for priority, expired, quota in drops:
            self.outbox_dropped_by_priority.labels("expired", str(priority)).set(expired)
            self.outbox_dropped_by_priority.labels("quota", str(priority)).set(quota)

    def add_collector(self, collect: Callable[[], Iterable[Any]]) -> None:
        """Serve the metric families ``collect()`` yields too (called from the server's
        thread at each scrape); nothing when not enabled."""
        if self.registry is None:
            return
        from prometheus_client.registry import Collector

        class _Families(Collector):
            def collect(self) -> Iterable[Any]:
                return collect()

        self.registry.register(_Families())

    def serve(self, host: str, port: int) -> str:
        """Start the HTTP endpoint; returns the bound ``host:port`` (port 0 picks one).
        ValueError when not enabled."""
        if self.registry is None:
            raise ValueError("metrics are not enabled")
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        bound_port = server.server_address[1]
        return f"{host}:{bound_port}"
