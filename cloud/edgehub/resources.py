"""Kubernetes-shaped resources of the hub: parsing and validation of what operators apply.

Every resource has ``apiVersion: edgenode.io/v1``, a ``kind`` (Node, Device, Config, Route),
``metadata`` (name, labels, annotations) and a ``spec``; ``status`` is owned by nodes and
ignored on apply. Validation refuses up front what a node could not apply (twin limits,
MQTT filters, selectors) and names the document index and the field in every error.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from edgehub.selectors import SelectorError, check_label_key, check_label_value, selector_from_spec
from edgenode.errors import TopicError, TwinError
from edgenode.router import validate_filter, validate_topic
from edgenode.twin import check_limits

API_VERSION = "edgenode.io/v1"
NAMESPACE = "default"
"""One namespace for now; it is part of the protocol key ``Kind/namespace/name``."""
KINDS = ("Node", "Device", "Config", "Route")
PLURALS = {kind: kind.lower() + "s" for kind in KINDS}
MAX_NAME_LENGTH = 253
MAX_RESOURCE_BYTES = 256 * 1024
"""Compact JSON size of one resource (spec and metadata)."""
MAX_DOCUMENTS = 1000
"""Documents in one apply."""
MAX_LABELS = 64
MAX_ANNOTATION_BYTES = 64 * 1024
MAX_CONFIG_ENTRIES = 4096
MIN_PRIORITY, MAX_PRIORITY, DEFAULT_PRIORITY = 0, 9, 5
MAX_TTL_SECONDS = 365 * 24 * 3600

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_SERVER_METADATA = {"resourceVersion", "generation", "creationTimestamp", "uid"}
_METADATA_FIELDS = {"name", "namespace", "labels", "annotations"} | _SERVER_METADATA
_SPEC_FIELDS: dict[str, set[str]] = {
    "Node": {"description"},
    "Device": {"node", "desired", "description", "model"},
    "Config": {"data", "nodeSelector"},
    "Route": {"from", "to", "priority", "ttl", "nodeSelector"},
}


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


def resolve_kind(text: str) -> str:
    """``node``, ``nodes``, ``Node``, ``NODES`` → ``Node``; ValueError for unknown kinds."""
    lowered = text.lower()
    for kind in KINDS:
        if lowered in (kind.lower(), PLURALS[kind]):
            return kind
    raise ValueError(f"unknown kind {text!r} (known: {', '.join(KINDS)})")


def resource_key(kind: str, name: str) -> str:
    """The protocol key of a resource."""
    return f"{kind}/{NAMESPACE}/{name}"


def check_name(name: object, index: int | None = None, field: str = "metadata.name") -> str:
    if not isinstance(name, str) or not name:
        raise ResourceError(index, field, "required, a non-empty string")
    if len(name) > MAX_NAME_LENGTH or not _NAME_RE.match(name):
        raise ResourceError(
            index,
            field,
            f"invalid name {name!r}: lowercase alphanumerics, '-' and '.', "
            f"at most {MAX_NAME_LENGTH} characters",
        )
    return name


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases: an alias bomb would expand without bound."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases are not accepted", event.start_mark
            )
        return super().compose_node(parent, index)


def parse_documents(text: str) -> list[Any]:
    """Parse multi-document YAML (JSON is YAML too); a JSON list or ``{"items": [...]}``
    is flattened. Empty documents are skipped. ResourceError on syntax errors."""
    docs: list[Any] = []
    try:
        for doc in yaml.load_all(text, Loader=_NoAliasLoader):
            if doc is None:
                continue
            if isinstance(doc, list):
                docs.extend(doc)
            elif isinstance(doc, dict) and set(doc) == {"items"} and isinstance(doc["items"], list):
                docs.extend(doc["items"])
            else:
                docs.append(doc)
            if len(docs) > MAX_DOCUMENTS:
                raise ResourceError(None, "", f"more than {MAX_DOCUMENTS} documents")
    except yaml.YAMLError as exc:
        raise ResourceError(len(docs), "", f"malformed YAML/JSON: {exc}") from None
    return docs


def _string_map(value: object, index: int, field: str, *, labels: bool = False) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ResourceError(index, field, "must be a map of strings")
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise ResourceError(index, f"{field}.{key}", "keys and values must be strings")
        if labels:
            try:
                check_label_key(key)
                check_label_value(val)
            except SelectorError as exc:
                raise ResourceError(index, f"{field}.{key}", str(exc)) from None
    return dict(value)


def _check_selector(spec: dict[str, Any], index: int) -> None:
    if "nodeSelector" in spec:
        try:
            selector_from_spec(spec["nodeSelector"])
        except SelectorError as exc:
            raise ResourceError(index, "spec.nodeSelector", str(exc)) from None


def _validate_spec(kind: str, spec: dict[str, Any], index: int) -> None:
    for field in spec:
        if field not in _SPEC_FIELDS[kind]:
            raise ResourceError(
                index,
                f"spec.{field}",
                f"unknown field for {kind} (known: {', '.join(sorted(_SPEC_FIELDS[kind]))})",
            )
    for text_field in ("description", "model"):
        if text_field in spec and not isinstance(spec[text_field], str):
            raise ResourceError(index, f"spec.{text_field}", "must be a string")
    if kind == "Device":
        check_name(spec.get("node"), index, "spec.node")
        desired = spec.get("desired", {})
        if not isinstance(desired, dict):
            raise ResourceError(index, "spec.desired", "must be a map")
        try:
            check_limits(desired)
        except TwinError as exc:
            raise ResourceError(index, "spec.desired", str(exc)) from None
    elif kind == "Config":
        data = spec.get("data", {})
        _string_map(data, index, "spec.data")
        if len(data) > MAX_CONFIG_ENTRIES:
            raise ResourceError(index, "spec.data", f"more than {MAX_CONFIG_ENTRIES} entries")
        _check_selector(spec, index)
    elif kind == "Route":
        source = spec.get("from")
        if not isinstance(source, str):
            raise ResourceError(index, "spec.from", "required, an MQTT topic filter")
        try:
            validate_filter(source)
        except TopicError as exc:
            raise ResourceError(index, "spec.from", str(exc)) from None
        target = spec.get("to")
        if target != "upstream":
            if not isinstance(target, str) or not target.startswith("topic:"):
                raise ResourceError(index, "spec.to", "required: 'upstream' or 'topic:<topic>'")
            try:
                validate_topic(target[len("topic:") :])
            except TopicError as exc:
                raise ResourceError(index, "spec.to", str(exc)) from None
        priority = spec.get("priority", DEFAULT_PRIORITY)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ResourceError(index, "spec.priority", "must be an integer")
        if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise ResourceError(
                index, "spec.priority", f"must be in [{MIN_PRIORITY}, {MAX_PRIORITY}]"
            )
        if "ttl" in spec:
            ttl = spec["ttl"]
            if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= MAX_TTL_SECONDS:
                raise ResourceError(
                    index, "spec.ttl", f"must be whole seconds in [1, {MAX_TTL_SECONDS}]"
                )
        _check_selector(spec, index)


def validate_document(doc: object, index: int) -> dict[str, Any]:
    """Validate one document; returns the normalized resource (apiVersion, kind,
    metadata with name/labels/annotations, spec). Status and server-set metadata are
    dropped (nodes own status). ResourceError names ``index`` and the field."""
    if not isinstance(doc, dict):
        raise ResourceError(index, "", f"a document must be a map, got {type(doc).__name__}")
    for field in doc:
        if field not in ("apiVersion", "kind", "metadata", "spec", "status"):
            raise ResourceError(index, str(field), "unknown field")
    if doc.get("apiVersion") != API_VERSION:
        raise ResourceError(index, "apiVersion", f"must be {API_VERSION!r}")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise ResourceError(index, "kind", f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    metadata = doc.get("metadata")
    if not isinstance(metadata, dict):
        raise ResourceError(index, "metadata", "required, a map")
    for field in metadata:
        if field not in _METADATA_FIELDS:
            raise ResourceError(index, f"metadata.{field}", "unknown field")
    name = check_name(metadata.get("name"), index)
    if metadata.get("namespace", NAMESPACE) != NAMESPACE:
        raise ResourceError(index, "metadata.namespace", f"only {NAMESPACE!r} exists")
    labels = _string_map(metadata.get("labels", {}), index, "metadata.labels", labels=True)
    if len(labels) > MAX_LABELS:
        raise ResourceError(index, "metadata.labels", f"more than {MAX_LABELS} labels")
    annotations = _string_map(metadata.get("annotations", {}), index, "metadata.annotations")
    spec = doc.get("spec", {})
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise ResourceError(index, "spec", "must be a map")
    _validate_spec(kind, spec, index)
    resource: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }
    if annotations:
        resource["metadata"]["annotations"] = annotations
    try:
        size = len(json.dumps(resource, separators=(",", ":"), allow_nan=False))
    except ValueError as exc:
        raise ResourceError(index, "spec", f"not JSON: {exc}") from None
    except TypeError as exc:
        raise ResourceError(index, "spec", f"not JSON: {exc}") from None
    if size > MAX_RESOURCE_BYTES:
        raise ResourceError(index, "", f"resource is {size} bytes, more than {MAX_RESOURCE_BYTES}")
    return resource
