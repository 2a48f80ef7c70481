"""What a resource kind is: the one place that says everything kind-specific.

Modelled on Kubernetes' generic registry: the verbs (apply, get, list, delete, watch, the
node fan-out, the operator tables, OpenAPI) are written once, for every kind; each kind is
a small *strategy* object that supplies only what differs:

- ``spec_schema`` — its fields (validated by ``schema.check``, published in OpenAPI) and
  ``validate`` for the rules a schema cannot say;
- ``target`` — which nodes a version of the resource is for (a node by name, or a selector);
- ``stamp`` — server-managed values written into the stored body (e.g. a Device's desired
  version);
- ``status`` — the status view the API shows, from what nodes reported;
- ``uplink_kinds`` and ``ingest`` — which uplink record kinds from nodes write its status;
- ``columns`` — its table (``edgectl get``, the Kubernetes Table API);
- names: ``plural``, ``singular``, ``short_names``.

A kind module declares one subclass and the registry (``registry.py``) holds an instance.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from edgehub.kinds.schema import Schema
from edgehub.limits import printable
from edgehub.selectors import Selector
from edgehub.targeting import Target, selector_target

if TYPE_CHECKING:
    from edgehub.store import HubStore, StoredResource

API_VERSION = "edgenode.io/v1"
GROUP = "edgenode.io"
VERSION = "v1"
NAMESPACE = "default"
"""One namespace for now; it is part of the protocol key ``Kind/namespace/name``."""
SERVER_ANNOTATION_PREFIX = "edgenode.io/"
"""Annotations under this prefix are written by the hub (``Kind.stamp``), never by people:
dropped from what is applied, ignored when telling an unchanged apply from a change."""
MAX_NAME_LENGTH = 253
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class ResourceError(ValueError):
    """An invalid document: ``index`` (0-based) and ``field`` (dotted path) name the spot."""

    def __init__(self, index: int | None, field: str, message: str) -> None:
        self.index = index
        self.field = field
        self.message = message
        where = [] if index is None else [f"document {index}"]
        if field:
            where.append(field)
        super().__init__(": ".join([*where, message]))


class ResourceConflict(ResourceError):
    """A valid document that clashes with a stored resource (409, naming it)."""


def resource_key(kind: str, name: str) -> str:
    """The protocol key of a resource: ``Kind/namespace/name``."""
    return f"{kind}/{NAMESPACE}/{name}"


@dataclass(frozen=True)
class NameRule:
    """What names of a kind look like (the kind's ``name_rule``)."""

    pattern: re.Pattern[str] = _NAME_RE
    max_length: int = MAX_NAME_LENGTH
    words: str = "lowercase alphanumerics, '-' and '.'"


DNS_NAMES = NameRule()
"""Resource names are DNS subdomains unless a kind says otherwise."""


def check_name(
    name: object,
    index: int | None = None,
    field: str = "metadata.name",
    rule: NameRule = DNS_NAMES,
) -> str:
    """``name`` if it is a valid resource name (by default a DNS subdomain), else
    ResourceError."""
    if not isinstance(name, str) or not name:
        raise ResourceError(index, field, "required, a non-empty string")
    if len(name) > rule.max_length or not rule.pattern.fullmatch(name):
        raise ResourceError(
            index,
            field,
            f"invalid name {name!r}: {rule.words}, at most {rule.max_length} characters",
        )
    return name


def server_annotations(body: Mapping[str, Any]) -> dict[str, str]:
    annotations = body.get("metadata", {}).get("annotations") or {}
    return {k: v for k, v in annotations.items() if k.startswith(SERVER_ANNOTATION_PREFIX)}


def set_server_annotation(body: dict[str, Any], key: str, value: str | None) -> None:
    """Write (or with ``None`` remove) a server-managed annotation of ``body``."""
    assert key.startswith(SERVER_ANNOTATION_PREFIX)
    metadata = body.setdefault("metadata", {})
    annotations = metadata.setdefault("annotations", {})
    if value is None:
        annotations.pop(key, None)
    else:
        annotations[key] = value
    if not annotations:
        metadata.pop("annotations")


@dataclass(frozen=True)
class Column:
    """One column of a kind's table: its header, how to get the cell from the resource's
    view (the JSON the API returns, status included), and whether only ``-o wide`` shows
    it. ``priority`` follows Kubernetes' Table: 0 always shown, 1 for wide."""

    name: str
    cell: Callable[[dict[str, Any], float], str]
    """``cell(view, now)``: the text of the cell (``now`` for ages)."""
    wide: bool = False
    type: str = "string"
    description: str = ""

    @property
    def priority(self) -> int:
        return 1 if self.wide else 0


class ViewContext(Protocol):
    """What a kind may read to build a status view or a table (the hub implements it)."""

    @property
    def store(self) -> HubStore: ...

    def node_status(self, name: str) -> dict[str, Any]: ...

    def targeted_nodes(self, body: Mapping[str, Any]) -> list[str]: ...

    def resource(self, kind: str, name: str) -> StoredResource | None: ...


class IngestContext(Protocol):
    """What a kind may use to apply an uplink record from a node (the hub implements it).

    Calls run inside the uplink's store transaction: the dedupe mark and every status
    write of a batch are committed together."""

    @property
    def store(self) -> HubStore: ...

    def resource(self, kind: str, name: str) -> StoredResource | None: ...

    def node_reported(self, node: str, record: dict[str, Any]) -> None: ...


class Kind:
    """The strategy of one resource kind; subclasses set the class attributes."""

    name: ClassVar[str]
    """``Device``: the ``kind`` field."""
    plural: ClassVar[str]
    singular: ClassVar[str]
    short_names: ClassVar[tuple[str, ...]] = ()
    categories: ClassVar[tuple[str, ...]] = ("all",)
    description: ClassVar[str] = ""
    spec_schema: ClassVar[Schema] = {"type": "object", "properties": {}}
    status_schema: ClassVar[Schema] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    uplink_kinds: ClassVar[frozenset[str]] = frozenset()
    """Uplink record kinds this kind's ``ingest`` applies (``status``, ``twin``, ...)."""
    columns: ClassVar[tuple[Column, ...]] = ()
    """The columns after NAME (and before AGE, which every kind has)."""
    name_rule: ClassVar[NameRule] = DNS_NAMES

    # --- Admission -------------------------------------------------------------------------

    def validate(self, spec: dict[str, Any], index: int | None) -> None:
        """Rules beyond the schema; raise ``ResourceError`` naming the field."""

    def admit(
        self, ctx: Any, body: dict[str, Any], index: int, batch: set[tuple[str, str]]
    ) -> None:
        """Checks that need the hub (other resources, the artifact store): ResourceError
        naming the field. ``batch`` holds the (kind, name) of every document of the same
        apply (a resource may name another applied with it)."""

    def admit_all(
        self, ctx: Any, bodies: list[tuple[int, dict[str, Any]]], batch: set[tuple[str, str]]
    ) -> None:
        """:meth:`admit` for every document of this kind in one apply (``(index, body)``
        in order); a kind whose checks compare documents with each other overrides it."""
        for index, body in bodies:
            self.admit(ctx, body, index, batch)

    def stamp(self, prev: dict[str, Any] | None, body: dict[str, Any], revision: int) -> None:
        """Set server-managed values in ``body`` (being stored at ``revision``; ``prev`` is
        the version it replaces). Called only when the resource changed."""

    # --- Targeting -------------------------------------------------------------------------

    def target(self, body: Mapping[str, Any]) -> Target | None:
        """Who this version of a resource is for; default: ``spec.nodeSelector`` (absent:
        every node). ``None``: no node."""
        spec = body.get("spec") or {}
        return selector_target(spec.get("nodeSelector"))

    # --- Status ----------------------------------------------------------------------------

    def status(self, ctx: ViewContext, stored: StoredResource) -> dict[str, Any] | None:
        """The status shown with the resource; ``None``: none."""
        return None

    def warnings(self, ctx: ViewContext, stored: StoredResource) -> list[str]:
        """What is valid but probably not what the operator meant (a reference to a
        resource that does not exist yet): returned with the apply's result, which
        ``edgectl apply`` prints, and shown in the status (``status.warnings``)."""
        return []

    def ingest(self, ctx: IngestContext, node: str, record: dict[str, Any]) -> str | None:
        """Apply an uplink record of one of ``uplink_kinds`` written by ``node``; returns why
        it was refused (the record is dropped, still acknowledged), else ``None``."""
        return f"kind {self.name} takes no uplink records"

    # --- Tables ----------------------------------------------------------------------------

    def table_columns(self, wide: bool) -> list[Column]:
        """NAME, the kind's columns, AGE, then (with ``wide``) the wide columns."""
        shown = [c for c in self.columns if not c.wide]
        extra = [c for c in self.columns if c.wide] if wide else []
        return [NAME_COLUMN, *shown, AGE_COLUMN, *extra]

    def table(self, views: list[dict[str, Any]], wide: bool, now: float) -> list[list[str]]:
        """The header and one row per resource view, as ``edgectl get`` prints them.
        Every cell is made printable (``limits.printable``): what operators apply holds no
        control characters, but what nodes and devices report (a version, a device's
        state) may, and must not steer the operator's terminal."""
        columns = self.table_columns(wide)
        return [
            [c.name for c in columns],
            *([printable(c.cell(v, now)) for c in columns] for v in views),
        ]

    @property
    def list_kind(self) -> str:
        return f"{self.name}List"


def condition(
    kind: str, ok: bool, reason: str, message: str, since: float | None = None
) -> dict[str, Any]:
    """A Kubernetes condition (``kubectl wait --for=condition=Ready`` reads them);
    ``since``: when it last changed, if known."""
    entry: dict[str, Any] = {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
    }
    if since is not None:
        entry["lastTransitionTime"] = iso_time(since)
    return entry


def ready_condition(ready: bool, since: float | None) -> dict[str, Any]:
    """A Node's Ready condition: True while its link is up."""
    if ready:
        return condition("Ready", True, "LinkUp", "the node is connected", since)
    return condition("Ready", False, "LinkDown", "the node is not connected", since)


def iso_time(ts: float) -> str:
    """A Unix time as the API shows times: ISO 8601, UTC, whole seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def name_cell(view: dict[str, Any], now: float) -> str:
    return str(view["metadata"]["name"])


def age_cell(view: dict[str, Any], now: float) -> str:
    """Seconds since ``metadata.creationTimestamp`` in kubectl's short form (5s, 3m, 2h, 4d).

    The timestamp is UTC; ``calendar.timegm`` reads it as UTC whatever the local zone
    (``time.mktime`` would apply the local zone and its daylight saving time)."""
    created = view["metadata"].get("creationTimestamp")
    if not created:
        return "<unknown>"
    try:
        then = calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return "<unknown>"
    return short_duration(now - then)


def short_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


NAME_COLUMN = Column("NAME", name_cell, description="metadata.name")
AGE_COLUMN = Column("AGE", age_cell, description="time since creation")


def labels_cell(view: dict[str, Any], now: float) -> str:
    labels = view["metadata"].get("labels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def selector_text(value: Any) -> str:
    if value is None:
        return "<all>"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "<all>"
    return str(value) or "<all>"


def spec_cell(field: str, default: Any = None) -> Callable[[dict[str, Any], float], str]:
    def cell(view: dict[str, Any], now: float) -> str:
        return dash(view.get("spec", {}).get(field, default))

    return cell


def status_cell(*path: str) -> Callable[[dict[str, Any], float], str]:
    def cell(view: dict[str, Any], now: float) -> str:
        value: Any = view.get("status") or {}
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return dash(value)

    return cell


__all__ = [
    "API_VERSION",
    "Column",
    "IngestContext",
    "Kind",
    "ResourceError",
    "Selector",
    "ViewContext",
    "check_name",
]
