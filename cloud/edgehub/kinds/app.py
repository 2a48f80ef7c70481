"""App: a workload — artifacts by digest, a command (or a container image), restart
policy, health check and limits — run and supervised on the nodes it targets
(``spec.node`` or ``spec.nodeSelector``, exactly one). docs/apps.md.

The spec is checked with the node's own parser (``edgenode.apps.spec``), so what the hub
accepts is what a node can run; at admission the hub also checks what only it knows: every
artifact is in its artifact store and every Config named exists (in the store or in the
same apply).

The App revision (annotation ``edgenode.io/revision``) counts changes of what runs —
artifacts, command, env, envFrom, files, image, resources, runtime — from 1; any other
edit (a label, the restart policy, a health check) keeps it. Nodes report the revision
they run with ``app-status`` records; ``UP-TO-DATE`` counts targeted nodes on the current
one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from edgehub.kinds.base import (
    Column,
    IngestContext,
    Kind,
    ResourceError,
    ViewContext,
    check_name,
    condition,
    iso_time,
    labels_cell,
    server_annotations,
    set_server_annotation,
)
from edgehub.kinds.config import check_selector
from edgehub.kinds.schema import DATA, NODE_SELECTOR, PRESERVE, Schema, string_map
from edgehub.targeting import Target, selector_target
from edgenode.apps.spec import REVISION_ANNOTATION, RUNTIME_FIELDS, AppSpecError, parse_app

if TYPE_CHECKING:
    from edgehub.store import StoredResource

MAX_STATUS_FIELDS = 32
"""Fields of one node's app-status kept (a hostile node cannot grow the hub's status)."""
STATUS_FIELDS = frozenset(
    {
        "phase",
        "ready",
        "restarts",
        "lastExit",
        "startedAt",
        "pid",
        "revision",
        "reason",
        "download",
        "limits",
        "runtime",
        "rolledBack",
        "rollbackReason",
        "failedRevision",
        "readySince",
        "image",
    }
)


class AdmitContext(Protocol):
    """What an App's admission reads at the hub."""

    def resource(self, kind: str, name: str) -> StoredResource | None: ...

    def artifact_exists(self, digest: str) -> bool: ...


def _check_amount(value: object, field: str, index: int | None, *, zero: bool) -> None:
    """A count (an int) or a percentage (``"25%"``)."""
    if isinstance(value, bool):
        raise ResourceError(index, field, "must be a count or a percentage like 25%")
    if isinstance(value, int):
        if value < (0 if zero else 1):
            raise ResourceError(index, field, f"must be at least {0 if zero else 1}")
        return
    if isinstance(value, str) and value.endswith("%"):
        try:
            percent = float(value[:-1])
        except ValueError:
            percent = -1.0
        if 0 <= percent <= 100 and (zero or percent > 0):
            return
    raise ResourceError(index, field, "must be a count or a percentage like 25%")


def check_strategy(strategy: Mapping[str, Any], index: int | None) -> None:
    names: set[str] = set()
    for position, wave in enumerate(strategy.get("waves", [])):
        where = f"spec.strategy.waves[{position}]"
        if wave["name"] in names:
            raise ResourceError(index, f"{where}.name", f"wave {wave['name']!r} appears twice")
        names.add(wave["name"])
        check_selector(wave, index)
        if "maxUnavailable" in wave:
            _check_amount(wave["maxUnavailable"], f"{where}.maxUnavailable", index, zero=False)
    if "failureThreshold" in strategy:
        threshold = strategy["failureThreshold"]
        _check_amount(threshold, "spec.strategy.failureThreshold", index, zero=True)


def app_revision(body: Mapping[str, Any]) -> int:
    value = server_annotations(body).get(REVISION_ANNOTATION)
    return int(value) if value is not None and value.isdigit() else 0


def _runtime_part(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {key: spec[key] for key in RUNTIME_FIELDS if key in spec}


def _summary_cell(key: str) -> Any:
    def cell(view: dict[str, Any], now: float) -> str:
        summary = (view.get("status") or {}).get("summary") or {}
        return str(summary.get(key, 0))

    return cell


def _ready_cell(view: dict[str, Any], now: float) -> str:
    summary = (view.get("status") or {}).get("summary") or {}
    return f"{summary.get('ready', 0)}/{summary.get('desired', 0)}"


def _revision_cell(view: dict[str, Any], now: float) -> str:
    return str(app_revision(view))


class AppKind(Kind):
    name = "App"
    plural = "apps"
    singular = "app"
    short_names = ("ap",)
    description = "A workload run and supervised on the nodes it targets (docs/apps.md)."
    spec_schema: ClassVar[Schema] = {
        "type": "object",
        "properties": {
            "node": {"type": "string", "description": "The one node to run on."},
            "nodeSelector": NODE_SELECTOR,
            "runtime": {"type": "string", "enum": ["process", "container"]},
            "image": {"type": "string", "description": "Container image (runtime container)."},
            "artifacts": {
                "type": "array",
                "maxItems": 64,
                "description": "Files placed in the work dir, by the digest edgectl printed.",
                "items": {
                    "type": "object",
                    "required": ["name", "sha256"],
                    "properties": {
                        "name": {"type": "string"},
                        "sha256": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
            },
            # A program's arguments and environment are data (any character), not text.
            "command": {"type": "array", "items": {"type": "string", DATA: True}, "maxItems": 256},
            "env": string_map(
                "Environment of the process (after envFrom).", max_entries=256, data=True
            ),
            "envFrom": {
                "type": "array",
                "maxItems": 64,
                "description": "Configs whose data become environment variables.",
                "items": {
                    "type": "object",
                    "required": ["config"],
                    "properties": {"config": {"type": "string"}},
                    "additionalProperties": False,
                },
            },
            "files": {
                "type": "array",
                "maxItems": 64,
                "description": "Configs written as JSON files into the work dir.",
                "items": {
                    "type": "object",
                    "required": ["config", "path"],
                    "properties": {"config": {"type": "string"}, "path": {"type": "string"}},
                    "additionalProperties": False,
                },
            },
            "restartPolicy": {"type": "string", "enum": ["Always", "OnFailure", "Never"]},
            "healthCheck": {
                "type": "object",
                "description": "exec, http or tcp; periodSeconds, failureThreshold, "
                "timeoutSeconds, initialDelaySeconds.",
                PRESERVE: True,
            },
            "resources": {
                "type": "object",
                "properties": {
                    "memoryMax": {"description": "64Mi, 1G, ...", PRESERVE: True},
                    "cpuMax": {"description": "0.5, 500m, ...", PRESERVE: True},
                },
                "additionalProperties": False,
            },
            "stopSignal": {"type": "string"},
            "terminationGracePeriodSeconds": {"type": "number", "minimum": 0, "maximum": 3600},
            "revisionHistoryLimit": {"type": "integer", "minimum": 1, "maximum": 100},
            "paused": {"type": "boolean", "description": "Move no more nodes (rollouts)."},
            "strategy": {
                "type": "object",
                "description": "A staged rollout: waves of nodes, gated by health.",
                "properties": {
                    "waves": {
                        "type": "array",
                        "maxItems": 32,
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string", "maxLength": 63},
                                "nodeSelector": NODE_SELECTOR,
                                "maxUnavailable": {"description": "3 or 25%", PRESERVE: True},
                            },
                            "additionalProperties": False,
                        },
                    },
                    "minReadySeconds": {"type": "number", "minimum": 0, "maximum": 86400},
                    "progressDeadlineSeconds": {
                        "type": "number",
                        "minimum": 1,
                        "maximum": 30 * 86400,
                    },
                    "failureThreshold": {"description": "2 or 10%", PRESERVE: True},
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    }
    uplink_kinds = frozenset({"app-status"})
    columns = (
        Column("DESIRED", _summary_cell("desired"), type="integer", description="nodes targeted"),
        Column("READY", _ready_cell, description="targeted nodes where it is ready"),
        Column("UP-TO-DATE", _summary_cell("upToDate"), type="integer"),
        Column("REVISION", _revision_cell, wide=True),
        Column("LABELS", labels_cell, wide=True),
    )

    def validate(self, spec: dict[str, Any], index: int | None) -> None:
        if ("node" in spec) == ("nodeSelector" in spec):
            raise ResourceError(index, "spec", "needs exactly one of node and nodeSelector")
        if "node" in spec:
            check_name(spec["node"], index, "spec.node")
        check_selector(spec, index)
        try:
            parse_app("app", spec, 1, {})
        except AppSpecError as exc:
            raise ResourceError(index, exc.field, exc.message) from None
        if "strategy" in spec:
            check_strategy(spec["strategy"], index)

    def admit(
        self, ctx: AdmitContext, body: dict[str, Any], index: int, batch: set[tuple[str, str]]
    ) -> None:
        spec = body["spec"]
        for position, artifact in enumerate(spec.get("artifacts", [])):
            if not ctx.artifact_exists(artifact["sha256"]):
                raise ResourceError(
                    index,
                    f"spec.artifacts[{position}].sha256",
                    f"no artifact {artifact['sha256'][:12]} on this hub: push it first "
                    "(edgectl artifact push FILE)",
                )
        uses = [
            (f"spec.envFrom[{i}].config", e["config"])
            for i, e in enumerate(spec.get("envFrom", []))
        ]
        uses += [
            (f"spec.files[{i}].config", f["config"]) for i, f in enumerate(spec.get("files", []))
        ]
        for field, config in uses:
            if ctx.resource("Config", config) is None and ("Config", config) not in batch:
                raise ResourceError(index, field, f"no Config {config!r}")

    def target(self, body: Mapping[str, Any]) -> Target | None:
        spec = body.get("spec") or {}
        if "node" in spec:
            return Target(str(spec["node"]), None)
        return selector_target(spec.get("nodeSelector"))

    def stamp(self, prev: dict[str, Any] | None, body: dict[str, Any], revision: int) -> None:
        before = None if prev is None else app_revision(prev)
        if not before:
            number = 1
        elif _runtime_part(prev["spec"]) == _runtime_part(body["spec"]):  # type: ignore[index]
            number = before
        else:
            number = before + 1
        set_server_annotation(body, REVISION_ANNOTATION, str(number))

    def status(self, ctx: ViewContext, stored: StoredResource) -> dict[str, Any] | None:
        reported = ctx.store.get_status("App", stored.name).get("nodes", {})
        targeted = ctx.targeted_nodes(stored.body)
        current = app_revision(stored.body)
        nodes = {node: reported[node] for node in targeted if isinstance(reported.get(node), dict)}
        ready = sum(1 for entry in nodes.values() if entry.get("ready") is True)
        up_to_date = sum(1 for entry in nodes.values() if entry.get("revision") == current)
        desired = len(targeted)
        all_ready = ready == desired and up_to_date == desired
        view: dict[str, Any] = {
            "revision": current,
            "summary": {"desired": desired, "ready": ready, "upToDate": up_to_date},
            "nodes": nodes,
            "conditions": [
                condition(
                    "Ready",
                    all_ready,
                    "AllNodesReady" if all_ready else "NodesNotReady",
                    f"{ready}/{desired} nodes ready, {up_to_date}/{desired} at revision {current}",
                )
            ],
        }
        stored_status = ctx.store.get_status("App", stored.name)
        for key in ("rollout", "history"):
            if key in stored_status:
                view[key] = stored_status[key]
        return view

    def ingest(self, ctx: IngestContext, node: str, record: dict[str, Any]) -> str | None:
        app = record.get("app")
        if not isinstance(app, str):
            return "app-status record without an 'app' name"
        stored = ctx.resource("App", app)
        if stored is None:
            return None  # deleted meanwhile
        target = self.target(stored.body)
        node_body = ctx.resource("Node", node)
        labels = {} if node_body is None else node_body.body["metadata"].get("labels", {})
        if target is None or not target.matches(node, labels):
            return f"App {app!r} does not target node {node!r}"
        entry = {k: v for k, v in record.items() if k in STATUS_FIELDS}
        entry["reportedAt"] = iso_time(time.time())
        status = ctx.store.get_status("App", app)
        nodes = status.setdefault("nodes", {})
        nodes[node] = dict(list(entry.items())[:MAX_STATUS_FIELDS])
        ctx.store.set_status("App", app, status)
        return None
