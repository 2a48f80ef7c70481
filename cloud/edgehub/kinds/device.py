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

import json
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from edgehub.kinds.base import (
    Column,
    IngestContext,
    Kind,
    NameRule,
    ResourceConflict,
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
from edgenode.devices.config import DEVICE_NAME_PATTERN
from edgenode.devices.kubeedge import DeviceId, KubeEdgeSpecError, id_conflict, kubeedge_spec
from edgenode.devices.kubeedge.values import type_problems
from edgenode.errors import TwinError
from edgenode.twin import check_limits, delta, merge_patch
from edgenode.uplink import MAX_TIMESTAMP, iso_timestamp

if TYPE_CHECKING:
    from edgehub.store import StoredResource

DESIRED_VERSION = "edgenode.io/desired-version"
DEVICE_NAMES = NameRule(
    re.compile(r"[a-z0-9]([-a-z0-9._]*[a-z0-9])?"),
    128,
    "lowercase alphanumerics, '-', '.' and '_'",
)
"""Device names: DNS subdomains plus ``_`` (KubeEdge devices outside the default namespace
are ``<namespace>_<name>``, docs/kubeedge.md), at most 128 characters as a node serves
(``edgenode.devices.config.DEVICE_NAME_PATTERN``: one MQTT topic level)."""
assert DEVICE_NAME_PATTERN.pattern.endswith("{0,127}$")  # the node's limit, kept in step


def desired_version(body: dict[str, Any]) -> int | None:
    """The desired version stamped on a Device body (None before it was stamped)."""
    value = server_annotations(body).get(DESIRED_VERSION)
    return int(value) if value is not None and value.isdigit() else None


def _kubeedge_key(name: str, spec: Mapping[str, Any]) -> tuple[str, DeviceId]:
    """(node, KubeEdge ID) of a Device (a stored spec is valid: checked when applied)."""
    try:
        device = kubeedge_spec(name, spec).device
    except KubeEdgeSpecError:  # stored before the field was checked: as the node serves it
        device = kubeedge_spec(name, None).device
    return str(spec.get("node")), device


MAX_VALUES_CELL = 48
"""Characters of a DESIRED/REPORTED/DELTA cell; longer ones end in "..." (the whole
document: ``edgectl twin get``, ``-o yaml``)."""


def values_text(document: Any, limit: int = MAX_VALUES_CELL) -> str:
    """A twin document as a table shows it: ``fan.speed=3,power=on`` (nested keys dotted,
    printable strings bare, other values as JSON, so control characters stay escaped),
    ``<none>`` when empty, cut at ``limit``."""
    if not isinstance(document, dict) or not document:
        return "<none>"
    pairs: list[str] = []
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:  # depth-first, keys in document order, without recursion
        prefix, value = stack.pop()
        if isinstance(value, dict) and (value or not prefix):
            stack.extend(reversed([(f"{prefix}{_key(key)}.", item) for key, item in value.items()]))
            continue
        printable = isinstance(value, str) and value.isprintable()  # no escapes reach a terminal
        text = value if printable else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        pairs.append(f"{prefix[:-1]}={text}")
        if sum(len(pair) + 1 for pair in pairs) > limit:
            break
    text = ",".join(pairs)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key(key: str) -> str:
    return key if key.isprintable() else json.dumps(key, ensure_ascii=False)


def _values_cell(*path: str) -> Any:
    def cell(view: dict[str, Any], now: float) -> str:
        value: Any = view
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return values_text(value)

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
            "kubeedge": {
                "type": "object",
                "description": "How KubeEdge devices and mappers see it (docs/kubeedge.md).",
                "properties": {
                    "namespace": {
                        "type": "string",
                        "description": "Its KubeEdge namespace (default: default).",
                    },
                    "name": {
                        "type": "string",
                        "description": "Its KubeEdge name (default: metadata.name).",
                    },
                    "types": {
                        "type": "object",
                        "description": "Property types: string, int, integer, float, boolean.",
                        "additionalProperties": {"type": "string"},
                    },
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    }
    name_rule = DEVICE_NAMES
    uplink_kinds = frozenset({"twin", "device-state", "telemetry"})
    columns = (
        Column("NODE", spec_cell("node")),
        Column("STATE", status_cell("state")),
        Column("DESIRED", _values_cell("spec", "desired"), description="spec.desired, key=value"),
        Column(
            "REPORTED", _values_cell("status", "reported"), description="what the device reported"
        ),
        Column(
            "DELTA", _values_cell("status", "delta"), description="desired values not yet reported"
        ),
        Column(
            "DESIRED VERSION",
            status_cell("versions", "desired"),
            wide=True,
            type="integer",
            description="the desired document's version (the delta's)",
        ),
        Column(
            "REPORTED VERSION",
            status_cell("versions", "reported"),
            wide=True,
            type="integer",
            description="the reported document's version",
        ),
        Column("LAST SEEN", status_cell("lastSeen"), wide=True),
        Column("LABELS", labels_cell, wide=True),
    )

    def target(self, body: Mapping[str, Any]) -> Target | None:
        node = (body.get("spec") or {}).get("node")
        return None if node is None else Target(str(node), None)

    def validate(self, spec: dict[str, Any], index: int | None) -> None:
        check_name(spec.get("node"), index, "spec.node")
        desired = spec.get("desired", {})
        try:
            check_limits(desired)
        except TwinError as exc:
            raise ResourceError(index, "spec.desired", str(exc)) from None
        try:
            # The name only fills in a default: any valid one checks the rest.
            types = kubeedge_spec("device", spec).types
        except KubeEdgeSpecError as exc:
            raise ResourceError(index, exc.field, exc.message) from None
        problems = type_problems(desired, types)
        if problems:
            # A device reads the property with its declared type: it could never report
            # such a value back, and it would stay in the delta for ever.
            raise ResourceError(index, "spec.desired", problems[0])

    def admit_all(
        self, ctx: Any, bodies: list[tuple[int, dict[str, Any]]], batch: set[tuple[str, str]]
    ) -> None:
        """Two Devices of one node cannot have one KubeEdge ID (409 naming the other)."""
        applied = {body["metadata"]["name"] for _index, body in bodies}
        served: dict[tuple[str, DeviceId], str] = {}
        for stored in ctx.cache.of_kind(self.name):
            if stored.name not in applied:
                served[_kubeedge_key(stored.name, stored.body["spec"])] = stored.name
        for index, body in bodies:
            name = body["metadata"]["name"]
            key = _kubeedge_key(name, body["spec"])
            other = served.setdefault(key, name)
            problem = id_conflict(name, key[1], [(other, key[1])])
            if problem is not None:
                raise ResourceConflict(index, "spec.kubeedge", problem)

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
                status["lastAck"] = _ack_view(record["ack"])
        ctx.store.set_status("Device", device, status)
        return None


def _ack_view(ack: Any) -> Any:
    """A device's ack as the status shows it: its time in ISO 8601, as every record time."""
    if isinstance(ack, dict) and isinstance(ack.get("timestamp"), int | float):
        seconds = ack["timestamp"]
        if not isinstance(seconds, bool) and 0 <= seconds <= MAX_TIMESTAMP:
            return {**ack, "timestamp": iso_timestamp(seconds)}
    return ack


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
