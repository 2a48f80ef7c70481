"""Node: one edge node. Created by ``edgectl node add`` (with its join token) or by apply;
its status is what the hub knows live (connected, acknowledged revision, lag) plus the
node's own ``status`` uplink records (version, arch, outbox, metrics).

A Node targets itself: a node receives its own Node resource (labels, description).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from edgehub.kinds.base import (
    Column,
    IngestContext,
    Kind,
    ViewContext,
    dash,
    labels_cell,
    status_cell,
)
from edgehub.kinds.schema import Schema
from edgehub.targeting import Target

if TYPE_CHECKING:
    from edgehub.store import StoredResource


def _outbox_cell(view: dict[str, Any], now: float) -> str:
    status = view.get("status") or {}
    if status.get("state") != "Ready":
        return "-"  # what a disconnected node last said is history, not its backlog
    value = status.get("outbox")
    if isinstance(value, dict):
        # The node daemon reports its outbox statistics; "messages" is the backlog.
        return dash(value.get("messages", value.get("pending")))
    return dash(value)


class NodeKind(Kind):
    name = "Node"
    plural = "nodes"
    singular = "node"
    short_names = ("no",)
    description = "An edge node: its labels select what it receives; status is its link."
    spec_schema: ClassVar[Schema] = {
        "type": "object",
        "properties": {
            "description": {"type": "string", "description": "Free text for operators."}
        },
        "additionalProperties": False,
    }
    uplink_kinds = frozenset({"status"})
    columns = (
        Column("STATUS", status_cell("state"), description="Ready while connected"),
        Column("REVISION", status_cell("revision"), type="integer"),
        Column("LAG", status_cell("lag"), description="revisions not yet acknowledged"),
        Column("OUTBOX", _outbox_cell, description="uplink records waiting on the node"),
        Column("VERSION", status_cell("version")),
        Column("ARCH", status_cell("arch")),
        Column("LAST SEEN", status_cell("lastSeen"), wide=True),
        Column("LABELS", labels_cell, wide=True),
    )

    def target(self, body: Mapping[str, Any]) -> Target | None:
        return Target(str(body["metadata"]["name"]), None)

    def status(self, ctx: ViewContext, stored: StoredResource) -> dict[str, Any] | None:
        return ctx.node_status(stored.name)

    def ingest(self, ctx: IngestContext, node: str, record: dict[str, Any]) -> str | None:
        ctx.node_reported(node, record)
        return None
