"""Route: which local MQTT topics a node sends upstream (through its outbox, with a
priority and a TTL) or republishes on another local topic; fanned out by ``nodeSelector``.
The node checks a route set for loops before using it (docs/device-api.md, "Routes")."""

from __future__ import annotations

from typing import Any, ClassVar

from edgehub.kinds.base import Column, Kind, ResourceError, dash, labels_cell, selector_text
from edgehub.kinds.config import check_selector
from edgehub.kinds.schema import NODE_SELECTOR, Schema
from edgenode.errors import TopicError
from edgenode.router import validate_filter, validate_topic

MIN_PRIORITY, MAX_PRIORITY, DEFAULT_PRIORITY = 0, 9, 5
MAX_TTL_SECONDS = 365 * 24 * 3600


def _cell(field: str, default: Any = None) -> Any:
    def cell(view: dict[str, Any], now: float) -> str:
        return dash(view.get("spec", {}).get(field, default))

    return cell


def _selector_cell(view: dict[str, Any], now: float) -> str:
    return selector_text(view.get("spec", {}).get("nodeSelector"))


class RouteKind(Kind):
    name = "Route"
    plural = "routes"
    singular = "route"
    short_names = ("rt",)
    description = "Local MQTT topics sent upstream (priority, TTL) or republished locally."
    spec_schema: ClassVar[Schema] = {
        "type": "object",
        "required": ["from", "to"],
        "properties": {
            "from": {"type": "string", "description": "An MQTT topic filter on the node's bus."},
            "to": {
                "type": "string",
                "description": "'upstream' (through the outbox) or 'topic:<local topic>'.",
            },
            "priority": {
                "type": "integer",
                "minimum": MIN_PRIORITY,
                "maximum": MAX_PRIORITY,
                "description": "Outbox priority, 0 (first) to 9; default 5.",
            },
            "ttl": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_TTL_SECONDS,
                "description": "Seconds a record may wait in the outbox; absent: no expiry.",
            },
            "nodeSelector": NODE_SELECTOR,
        },
        "additionalProperties": False,
    }
    columns = (
        Column("FROM", _cell("from")),
        Column("TO", _cell("to")),
        Column("PRIORITY", _cell("priority", DEFAULT_PRIORITY), type="integer"),
        Column("TTL", _cell("ttl")),
        Column("SELECTOR", _selector_cell),
        Column("LABELS", labels_cell, wide=True),
    )

    def validate(self, spec: dict[str, Any], index: int | None) -> None:
        try:
            validate_filter(spec["from"])
        except TopicError as exc:
            raise ResourceError(index, "spec.from", str(exc)) from None
        target = spec["to"]
        if target != "upstream":
            if not target.startswith("topic:"):
                raise ResourceError(index, "spec.to", "required: 'upstream' or 'topic:<topic>'")
            try:
                validate_topic(target[len("topic:") :])
            except TopicError as exc:
                raise ResourceError(index, "spec.to", str(exc)) from None
        check_selector(spec, index)
