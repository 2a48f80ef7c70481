"""Uplink ingest: records from a node's outbox, persisted at most once and applied by the
resource kind that takes their record kind (``Kind.uplink_kinds`` / ``Kind.ingest``).

Each ``u`` frame is one store transaction: the (node, sequence) dedupe marks and every
status write of its records commit together, then the records are acknowledged. A record
that cannot be read or applied is dropped — counted, still acknowledged, never retried
(retrying cannot fix it, and a node must not be stuck behind it).
"""

from __future__ import annotations

import logging
from typing import Any

from edgehub.kinds import REGISTRY, Registry
from edgehub.kinds.base import IngestContext
from edgehub.metrics import HubMetrics
from edgenode.protocol import UplinkReceived
from edgenode.uplink import read_record

log = logging.getLogger("edgehub.ingest")


class UplinkIngest:
    """Applies uplink records through the kind registry."""

    def __init__(
        self, ctx: IngestContext, metrics: HubMetrics, registry: Registry = REGISTRY
    ) -> None:
        self.ctx = ctx
        self.metrics = metrics
        self.registry = registry

    def receive(self, node: str, event: UplinkReceived) -> list[int]:
        """Persist (deduplicated by (node, seq)) and apply in one transaction; the
        sequences to acknowledge."""
        store = self.ctx.store
        with store.transaction():
            fresh = store.record_uplink(node, [r.sequence for r in event.records])
            for record in event.records:
                if record.sequence not in fresh:
                    self.metrics.uplink_records.labels("duplicate").inc()
                    continue
                problem = self.apply(node, record.payload)
                self.metrics.uplink_records.labels("rejected" if problem else "stored").inc()
        return [r.sequence for r in event.records]

    def apply(self, node: str, payload: bytes) -> str | None:
        """Apply one uplink record; returns why it was refused (dropped, still acked)."""
        record: dict[str, Any] | None = read_record(payload)
        if record is None:
            return "not a CBOR or JSON map with a 'kind'"
        kind = self.registry.for_uplink(record["kind"])
        if kind is None:
            return f"unknown record kind {record['kind'][:32]!r}"
        return kind.ingest(self.ctx, node, record)
