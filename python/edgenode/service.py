"""Node services and their host: the contract between the daemon and what runs inside it.

The node daemon (``edgenode.node.Daemon``) is a :class:`NodeHost`: it owns the store, the
cloud link, the metrics and the local bus's retained messages, and runs
:class:`NodeService` s beside the link — the device layer, the Config consumer, and the
services later issues add (workloads). A service only sees the host:

- ``config``, ``store`` (reads), ``metrics``;
- ONE commit port, :meth:`NodeHost.commit`: twin documents and uplink records
  (:class:`OutRecord`, enveloped by the host in ``edgenode.uplink``'s one format) in one
  durable transaction;
- the desired state by kind: :meth:`NodeHost.desired` now, and ``on_desired`` for every
  persisted change of a kind the service declares in ``kinds``;
- :attr:`NodeHost.retained`: the retained messages the node owns on its local bus.

This module imports neither the daemon nor ``websockets``: services (``edgenode.devices``)
depend on this contract, not on the daemon.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edgenode.apps.artifacts import ArtifactSource
    from edgenode.config import Config
    from edgenode.node.metrics import Metrics
    from edgenode.store import Store

DesiredRow = tuple[str, int, bytes | None]
"""A desired-state row as persisted: (key ``Kind/namespace/name``, revision, body JSON
bytes or None for a deletion)."""


def kind_of(key: str) -> str:
    """``Device/default/lamp`` → ``Device``."""
    return key.partition("/")[0]


def name_of(key: str) -> str:
    """``Device/default/lamp`` → ``lamp`` (names never contain ``/``)."""
    return key.rpartition("/")[2]


@dataclass(frozen=True, slots=True)
class DesiredResource:
    """One resource of the node's desired state, parsed."""

    key: str
    revision: int
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return kind_of(self.key)

    @property
    def name(self) -> str:
        metadata = self.body.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        return name if isinstance(name, str) else name_of(self.key)

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.body.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def generation(self) -> int:
        metadata = self.body.get("metadata")
        value = metadata.get("generation") if isinstance(metadata, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    def annotation(self, key: str) -> str | None:
        metadata = self.body.get("metadata")
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        value = annotations.get(key) if isinstance(annotations, dict) else None
        return value if isinstance(value, str) else None


def parse_desired(key: str, revision: int, data: bytes) -> DesiredResource:
    """A stored body as a :class:`DesiredResource`; ValueError if it is not a JSON map."""
    body = json.loads(data)
    if not isinstance(body, dict):
        raise ValueError(f"{key}: body is not a map")
    return DesiredResource(key, revision, body)


@dataclass(frozen=True, slots=True)
class OutRecord:
    """An uplink record before its envelope: ``body`` is a compact JSON object (bytes)."""

    kind: str
    body: bytes
    priority: int
    ttl: float | None = None
    """Seconds it may wait; None: ``[outbox] default_ttl``."""
    coalesce_key: str | None = None
    """Only the newest record with the same key waits in the outbox."""


TwinWrite = tuple[str, bytes]
"""(device, twin document) to store."""


class CommitPort(Protocol):
    """Where a service's durable writes go: ``commit`` stores twins and appends records in
    ONE transaction; per record its outbox sequence number, or None where the outbox's
    quota policy (or the envelope's size limit) refused it, counted. ``StoreError``:
    nothing was committed."""

    def commit(
        self, twins: Sequence[TwinWrite], records: Sequence[OutRecord]
    ) -> list[int | None]: ...


@dataclass(frozen=True)
class BatchTarget:
    """Where a batch call of the core commits on its own (``edgenode.devtwin.handle_batch``,
    the device layer's hot path): what :meth:`CommitPort.commit` would do, in parts. The
    port's ``store``; ``node``, the name the record envelopes carry; ``default_ttl`` for a
    record without one (None: no expiry); ``appended(priority, count)``, called after a
    commit that appended records, with their most urgent priority and their number (the
    daemon wakes its uplink).
    """

    store: Store
    node: str
    default_ttl: float | None
    appended: Callable[[int, int], None]


class BatchPort(CommitPort, Protocol):
    """A commit port that also lets the core commit a batch itself (same transaction,
    same envelope, same TTL, same wake-up as :meth:`CommitPort.commit`)."""

    def batch_target(self) -> BatchTarget | None:
        """The target, or None to keep every commit on :meth:`CommitPort.commit`."""
        ...


class RetainedMessages:
    """The retained messages the node owns on its local bus, by topic.

    Services set them (``put``; ``b""`` clears a topic at the broker); the device layer
    publishes every change while connected and all of them after every (re)connect, so
    the broker ends up holding exactly these whatever it kept or lost. A cleared topic is
    remembered (``b""``) so that the clear itself is published after a reconnect too.
    """

    def __init__(self) -> None:
        self._messages: dict[str, bytes] = {}
        self._listeners: list[Callable[[str, bytes], None]] = []

    def put(self, topic: str, payload: bytes) -> None:
        if self._messages.get(topic) == payload:
            return
        self._messages[topic] = payload
        for listener in self._listeners:
            listener(topic, payload)

    def clear(self, topic: str) -> None:
        """Clear ``topic`` at the broker (an empty retained message)."""
        if topic in self._messages:
            self.put(topic, b"")

    def get(self, topic: str) -> bytes | None:
        return self._messages.get(topic)

    def owns(self, topic: str) -> bool:
        return topic in self._messages

    def items(self) -> list[tuple[str, bytes]]:
        return sorted(self._messages.items())

    def listen(self, listener: Callable[[str, bytes], None]) -> None:
        """Call ``listener(topic, payload)`` after every change."""
        self._listeners.append(listener)


class LogSource(Protocol):
    """Answers the hub's requests for an App's log (``edgectl logs app NAME --node N``)."""

    def app_log(self, app: str, tail: int, follow: bool) -> AsyncIterator[bytes] | None:
        """The last ``tail`` lines of ``app``'s log (0: all that is kept), then, with
        ``follow``, what it writes until the iterator is closed; None: no such App here."""
        ...


class NodeHost(Protocol):
    """What a service may use (the daemon implements it)."""

    @property
    def config(self) -> Config: ...

    @property
    def store(self) -> Store: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def retained(self) -> RetainedMessages: ...

    @property
    def hub_connected(self) -> bool: ...

    @property
    def artifacts(self) -> ArtifactSource:
        """Artifacts for Apps: cached under ``DATA_DIR/artifacts``, fetched over the link."""
        ...

    def serve_logs(self, source: LogSource) -> None:
        """Answer the hub's log requests with ``source`` (the App service registers)."""
        ...

    def commit(
        self, twins: Sequence[TwinWrite], records: Sequence[OutRecord]
    ) -> list[int | None]: ...

    def desired(self, kind: str) -> list[DesiredResource]:
        """The node's current desired resources of ``kind`` (from the store), by key."""
        ...


class NodeService(Protocol):
    """A part of the node the daemon runs beside its cloud link.

    ``run`` serves until cancelled (the daemon restarts it after a failure, after a short
    delay); ``on_desired`` is called on the event loop after the link persisted desired
    changes touching one of ``kinds`` (``snapshot``: the whole desired state was
    replaced), also before ``run`` started and while it is restarting.
    """

    @property
    def name(self) -> str: ...

    @property
    def kinds(self) -> frozenset[str]: ...

    async def run(self, host: NodeHost) -> None: ...

    def on_desired(self, host: NodeHost, rows: Sequence[DesiredRow], snapshot: bool) -> None: ...
