"""Device: one device's twin, served by the node named in ``spec.node``.

``spec.desired`` is the desired twin document (operator-owned, cloud-wins); the node
reports the device's ``reported`` document, its state and acknowledgements through uplink
records (``twin``, ``device-state``) and routes its ``telemetry`` (stored apart, read with
``edgectl telemetry``).

The desired version: one number names one desired document, the same at the hub, in
``edgectl twin get`` and in the delta the device receives. It is the hub revision at which
``spec.desired`` last changed, written by :meth:`DeviceKind.stamp` into the server-managed
annotation ``edgenode.io/desired-version`` (so it travels to the node with the resource and
survives in the node's store). A spec change that leaves ``desired`` alone (a description)
keeps the number; revisions only grow, so a device deleted and created again never sees a
number go backwards.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from edgehub.kinds.base import (
    Column,
    IngestContext,
    Kind,
    ResourceError,
    ViewContext,
    check_name,
    iso_time,
    labels_cell,
    server_annotations,
    set_server_annotation,
    spec_cell,
    status_cell,
)
from edgehub.kinds.schema import PRESERVE, Schema
from edgehub.targeting import Target
from edgenode.errors import TwinError
from edgenode.twin import check_limits, delta, merge_patch

if TYPE_CHECKING:
    from edgehub.store import StoredResource

DESIRED_VERSION = "edgenode.io/desired-version"


def desired_version(body: dict[str, Any]) -> int | None:
    """The desired version stamped on a Device body (None before it was stamped)."""
    value = server_annotations(body).get(DESIRED_VERSION)
    return int(value) if value is not None and value.isdigit() else None


def _count_cell(field: str) -> Any:
    def cell(view: dict[str, Any], now: float) -> str:
        value = (view.get("status") or {}).get(field)
        return str(len(value)) if isinstance(value, dict) else "0"

    return cell


class DeviceKind(Kind):
    name = "Device"
    plural = "devices"
    singular = "device"
    short_names = ("dev",)
    description = "A device's twin: desired (operator), reported (device), served by one node."
    spec_schema: ClassVar[Schema] = {
        "type": "object",
        "required": ["node"],
        "properties": {
            "node": {"type": "string", "description": "The node that serves the device."},
            "desired": {
                "type": "object",
                "description": "The desired twin document (JSON; merge-patched by twin set).",
                PRESERVE: True,
            },
            "description": {"type": "string", "description": "Free text for operators."},
            "model": {"type": "string", "description": "Free text: the device's model."},
        },
        "additionalProperties": False,
    }
    uplink_kinds = frozenset({"twin", "device-state", "telemetry"})
    columns = (
        Column("NODE", spec_cell("node")),
        Column("STATE", status_cell("state")),
        Column("DESIRED", status_cell("versions", "desired"), description="desired version"),
        Column("REPORTED", status_cell("versions", "reported"), description="reported version"),
        Column("DELTA", _count_cell("delta"), description="keys desired but not reported"),
        Column("LAST SEEN", status_cell("lastSeen"), wide=True),
        Column("LABELS", labels_cell, wide=True),
    )

    def target(self, body: Mapping[str, Any]) -> Target | None:
        node = (body.get("spec") or {}).get("node")
        return None if node is None else Target(str(node), None)

    def validate(self, spec: dict[str, Any], index: int | None) -> None:
        check_name(spec.get("node"), index, "spec.node")
        try:
            check_limits(spec.get("desired", {}))
        except TwinError as exc:
            raise ResourceError(index, "spec.desired", str(exc)) from None

    def stamp(self, prev: dict[str, Any] | None, body: dict[str, Any], revision: int) -> None:
        before = None if prev is None else desired_version(prev)
        unchanged = (
            prev is not None
            and before is not None
            and prev["spec"].get("desired", {}) == body["spec"].get("desired", {})
        )
        set_server_annotation(body, DESIRED_VERSION, str(before if unchanged else revision))

    def warnings(self, ctx: ViewContext, stored: StoredResource) -> list[str]:
        node = stored.body["spec"].get("node")
        if isinstance(node, str) and ctx.resource("Node", node) is None:
            return [  # a Device's spec.node is a valid name: printable as it is
                f"spec.node: there is no Node {node} on this hub yet; the device is served "
                f"once it is added (edgectl node add {node})"
            ]
        return []

    def status(self, ctx: ViewContext, stored: StoredResource) -> dict[str, Any] | None:
        status = ctx.store.get_status("Device", stored.name)
        if warnings := self.warnings(ctx, stored):
            status["warnings"] = warnings
        status.setdefault("reported", {})
        status["delta"] = delta(stored.body["spec"].get("desired", {}), status["reported"])
        version = desired_version(stored.body)
        versions = status.setdefault("versions", {})
        versions["desired"] = version if version is not None else stored.generation
        return status

    def ingest(self, ctx: IngestContext, node: str, record: dict[str, Any]) -> str | None:
        device = record.get("device")
        if not isinstance(device, str):
            return "record without a 'device' name"
        stored = ctx.resource("Device", device)
        if stored is None or stored.body["spec"].get("node") != node:
            # A node writes only its own devices' status (isolation between nodes).
            return f"device {device!r} is not attached to node {node!r}"
        kind = record["kind"]
        if kind == "telemetry":
            ctx.store.add_telemetry(node, device, record)
            return None
        status = ctx.store.get_status("Device", device)
        status["lastSeen"] = iso_time(time.time())
        if kind == "twin":
            problem = _apply_twin(status, record)
            if problem is not None:
                return problem
        else:  # device-state
            if "state" in record:
                status["state"] = record["state"]
            if "ack" in record:
                status["lastAck"] = record["ack"]
        ctx.store.set_status("Device", device, status)
        return None


def _apply_twin(status: dict[str, Any], record: dict[str, Any]) -> str | None:
    reported = record.get("reported")
    if not isinstance(reported, dict):
        return "twin record without a 'reported' map"
    version = record.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        # The node sends the device's FULL reported document with its version (only the
        # newest waits in its outbox), so a newer record replaces status.reported: keys
        # the device deleted disappear. Records can arrive out of order across
        # priorities: an older or equal version is ignored.
        stored_version = status.get("versions", {}).get("reported")
        if not isinstance(stored_version, int) or version > stored_version:
            status["reported"] = reported
            status.setdefault("versions", {})["reported"] = version
        return None
    # Without a version (a bare record), the map is a merge patch.
    try:
        status["reported"] = merge_patch(status.get("reported", {}), reported)
    except TwinError as exc:
        return str(exc)
    return None
