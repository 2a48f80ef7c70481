"""Kubernetes-shaped resources of the hub: parsing and validation of what operators apply.

Every resource has ``apiVersion: edgenode.io/v1``, a ``kind`` (one of the kind registry's:
Node, Device, Config, Route, ...), ``metadata`` (name, labels, annotations) and a ``spec``;
``status`` is owned by nodes and ignored on apply. What is common to every kind is checked
here (envelope, metadata, size); the spec is checked against the kind's schema and its own
rules (``edgehub.kinds``). Every error names the document index and the field.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from edgehub.kinds import REGISTRY, Registry
from edgehub.kinds.base import (
    API_VERSION,
    MAX_NAME_LENGTH,
    NAMESPACE,
    SERVER_ANNOTATION_PREFIX,
    ResourceError,
    check_name,
    resource_key,
)
from edgehub.kinds.schema import SchemaError, check
from edgehub.limits import (
    MAX_DEPTH,
    InputError,
    check_integer_literal,
    check_value,
    text_problem,
    too_deep,
)
from edgehub.selectors import SelectorError, check_label_key, check_label_value

MAX_RESOURCE_BYTES = 256 * 1024
"""Compact JSON size of one resource (spec and metadata)."""
MAX_DOCUMENTS = 1000
"""Documents in one apply."""
MAX_LABELS = 64
MAX_ANNOTATION_BYTES = 64 * 1024

_SERVER_METADATA = {"resourceVersion", "generation", "creationTimestamp", "uid"}
_METADATA_FIELDS = {"name", "namespace", "labels", "annotations"} | _SERVER_METADATA

__all__ = [
    "API_VERSION",
    "MAX_NAME_LENGTH",
    "NAMESPACE",
    "ResourceError",
    "check_name",
    "parse_documents",
    "resolve_kind",
    "resource_key",
    "validate_document",
]


def resolve_kind(text: str, registry: Registry = REGISTRY) -> str:
    """``node``, ``nodes``, ``Node``, ``NODES``, ``no`` → ``Node``; ValueError for unknown
    kinds."""
    return registry.resolve(text).name


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases (an alias bomb would expand without bound),
    nested at most ``MAX_DEPTH`` levels (PyYAML composes recursively: deeper input would
    hit Python's recursion limit) and with integer literals measured before they are
    converted (``limits.MAX_INTEGER_DIGITS``)."""

    _depth = 0

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # The scanner reads up to 1024 characters ahead and does work per open flow
        # level for each: 900 nested '[' alone cost 0.5 s of the event loop. Stop at the
        # bound here, before the composer would.
        if self.flow_level >= MAX_DEPTH:
            raise yaml.scanner.ScannerError(None, None, too_deep(), self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases are not accepted", event.start_mark
            )
        if not self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, too_deep(), event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A scalar PyYAML cannot build (``2024-13-45`` read as a date, ``!!int abc``,
        ``!!bool maybe``) is malformed input at its line, not an error of the hub."""
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, ArithmeticError, LookupError, AttributeError, TypeError) as exc:
            shown = repr(node.value)[:80] if isinstance(node, yaml.ScalarNode) else node.tag
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown} as {node.tag}: {exc}", node.start_mark
            ) from None

    def construct_bounded_int(self, node: yaml.ScalarNode) -> Any:
        try:
            check_integer_literal(str(node.value))
        except InputError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, exc.message, node.start_mark
            ) from None
        return self.construct_yaml_int(node)


_NoAliasLoader.add_constructor("tag:yaml.org,2002:int", _NoAliasLoader.construct_bounded_int)


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
    """A map of strings; its keys and values are text (``limits.text_problem``)."""
    if not isinstance(value, dict):
        raise ResourceError(index, field, "must be a map of strings")
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise ResourceError(index, f"{field}.{key}", "keys and values must be strings")
        if (problem := text_problem(key)) is not None:
            raise ResourceError(index, field, f"key {key[:64]!r}: {problem}")
        if (problem := text_problem(val)) is not None:
            raise ResourceError(index, f"{field}.{key}", problem)
        if labels:
            try:
                check_label_key(key)
                check_label_value(val)
            except SelectorError as exc:
                raise ResourceError(index, f"{field}.{key}", str(exc)) from None
    return dict(value)


def validate_document(doc: object, index: int, registry: Registry = REGISTRY) -> dict[str, Any]:
    """Validate one document; returns the normalized resource (apiVersion, kind,
    metadata with name/labels/annotations, spec). Status, server-set metadata and
    server-managed annotations (``edgenode.io/...``) are dropped (nodes own status, the
    hub stamps the rest). ResourceError names ``index`` and the field."""
    if not isinstance(doc, dict):
        raise ResourceError(index, "", f"a document must be a map, got {type(doc).__name__}")
    try:
        check_value(doc)
    except InputError as exc:
        raise ResourceError(index, exc.field, exc.message) from None
    for field in doc:
        if field not in ("apiVersion", "kind", "metadata", "spec", "status"):
            raise ResourceError(index, str(field), "unknown field")
    if doc.get("apiVersion") != API_VERSION:
        raise ResourceError(index, "apiVersion", f"must be {API_VERSION!r}")
    kind_name = doc.get("kind")
    kind = registry.find(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        known = ", ".join(registry.names())
        raise ResourceError(index, "kind", f"unknown kind {kind_name!r} (known: {known})")
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
    annotations = {
        key: value
        for key, value in _string_map(
            metadata.get("annotations", {}), index, "metadata.annotations"
        ).items()
        if not key.startswith(SERVER_ANNOTATION_PREFIX)
    }
    spec = doc.get("spec", {})
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise ResourceError(index, "spec", "must be a map")
    try:
        check(
            spec,
            kind.spec_schema,
            "spec",
            unknown=lambda path, node: (
                f"unknown field for {kind.name} "
                f"(known: {', '.join(sorted(node.get('properties', {})))})"
                if path == "spec"
                else f"unknown field (known: {', '.join(sorted(node.get('properties', {})))})"
            ),
        )
    except SchemaError as exc:
        raise ResourceError(index, exc.field, exc.message) from None
    kind.validate(spec, index)
    resource: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": kind.name,
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
