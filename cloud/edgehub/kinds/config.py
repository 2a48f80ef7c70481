"""Config: key/value data fanned out to the nodes its ``spec.nodeSelector`` matches.

On each node the Config becomes a file (``DATA_DIR/config/NAME.json``), a retained MQTT
message (``$edge/config/NAME``) and a change event for the node's services (docs/node.md).
A node reports each Config it applied with a ``config-status`` uplink record
(``{"config": NAME, "generation": G}``); the status view counts the targeted nodes whose
last applied generation is the current one (``APPLIED n/m``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from edgehub.kinds.base import (
    Column,
    IngestContext,
    Kind,
    ResourceError,
    ViewContext,
    iso_time,
    labels_cell,
    selector_text,
)
from edgehub.kinds.schema import NODE_SELECTOR, Schema, string_map
from edgehub.selectors import SelectorError, selector_from_spec

if TYPE_CHECKING:
    from edgehub.store import StoredResource

MAX_CONFIG_ENTRIES = 4096


def check_selector(spec: dict[str, Any], index: int | None) -> None:
    """``spec.nodeSelector`` must parse (shared by every kind that has one)."""
    if "nodeSelector" in spec:
        try:
            selector_from_spec(spec["nodeSelector"])
        except SelectorError as exc:
            raise ResourceError(index, "spec.nodeSelector", str(exc)) from None


def _applied_cell(view: dict[str, Any], now: float) -> str:
    applied = (view.get("status") or {}).get("applied") or {}
    return f"{applied.get('current', 0)}/{applied.get('targeted', 0)}"


def _keys_cell(view: dict[str, Any], now: float) -> str:
    return str(len(view.get("spec", {}).get("data", {})))


def _selector_cell(view: dict[str, Any], now: float) -> str:
    return selector_text(view.get("spec", {}).get("nodeSelector"))


def _revision_cell(view: dict[str, Any], now: float) -> str:
    return str(view["metadata"].get("resourceVersion", ""))


class ConfigKind(Kind):
    name = "Config"
    plural = "configs"
    singular = "config"
    short_names = ("cfg",)
    description = "Key/value data for the nodes a selector picks: files, MQTT, events."
    spec_schema: ClassVar[Schema] = {
        "type": "object",
        "properties": {
            "data": string_map(
                "The key/value data (strings); written to DATA_DIR/config/NAME.json and "
                "published retained at $edge/config/NAME on each node.",
                max_entries=MAX_CONFIG_ENTRIES,
                data=True,
            ),
            "nodeSelector": NODE_SELECTOR,
        },
        "additionalProperties": False,
    }
    uplink_kinds = frozenset({"config-status"})
    columns = (
        Column("KEYS", _keys_cell, type="integer"),
        Column("SELECTOR", _selector_cell),
        Column("APPLIED", _applied_cell, description="targeted nodes on the current generation"),
        Column("REVISION", _revision_cell),
        Column("LABELS", labels_cell, wide=True),
    )

    def validate(self, spec: dict[str, Any], index: int | None) -> None:
        check_selector(spec, index)

    def status(self, ctx: ViewContext, stored: StoredResource) -> dict[str, Any] | None:
        reported = ctx.store.get_status("Config", stored.name).get("nodes", {})
        targeted = ctx.targeted_nodes(stored.body)
        nodes = {node: reported[node] for node in targeted if isinstance(reported.get(node), dict)}
        current = sum(1 for entry in nodes.values() if entry.get("generation") == stored.generation)
        return {
            "applied": {"current": current, "targeted": len(targeted)},
            "nodes": nodes,
        }

    def ingest(self, ctx: IngestContext, node: str, record: dict[str, Any]) -> str | None:
        name = record.get("config")
        generation = record.get("generation")
        if not isinstance(name, str) or isinstance(generation, bool):
            return "config-status record without a 'config' name"
        if not isinstance(generation, int):
            return "config-status record without an integer 'generation'"
        if ctx.resource("Config", name) is None:
            return None  # deleted meanwhile: nothing to count
        status = ctx.store.get_status("Config", name)
        nodes = status.setdefault("nodes", {})
        nodes[node] = {
            "generation": generation,
            "appliedAt": iso_time(time.time()),
        }
        ctx.store.set_status("Config", name, status)
        return None
