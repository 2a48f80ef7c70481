"""Kubernetes-shaped resources of the hub: parsing and validation of what operators apply.

Every resource has ``apiVersion: edgenode.io/v1``, a ``kind`` (one of the kind registry's:
Node, Device, Config, Route, ...), ``metadata`` (name, labels, annotations) and a ``spec``;
``status`` is owned by nodes and ignored on apply. What is common to every kind is checked
here (envelope, metadata, size); the spec is checked against the kind's schema and its own
rules (``edgehub.kinds``). Every error names the document index and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Final

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


class _BoundedConstructor:
    """What both loaders build values with: a scalar PyYAML cannot build (``2024-13-45``
    read as a date, ``!!int abc``, ``!!bool maybe``) is reported as malformed input at
    its line, not raised as an error of the hub; integers go through
    :func:`_construct_bounded_int`."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        except yaml.YAMLError:
            raise
        except (ValueError, ArithmeticError, LookupError, AttributeError, TypeError) as exc:
            shown = repr(node.value)[:80] if isinstance(node, yaml.ScalarNode) else node.tag
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown} as {node.tag}: {exc}", node.start_mark
            ) from None


def _construct_bounded_int(loader: Any, node: yaml.ScalarNode) -> Any:
    """An integer literal measured before it is converted (``limits.MAX_INTEGER_DIGITS``:
    Python 3.11 refuses more than 4300 digits, and YAML's hex and base-60 integers cost
    quadratic time)."""
    try:
        check_integer_literal(str(node.value))
    except InputError as exc:
        raise yaml.constructor.ConstructorError(None, None, exc.message, node.start_mark) from None
    return loader.construct_yaml_int(node)


class _NoAliasLoader(_BoundedConstructor, yaml.SafeLoader):
    """The pure loader: SafeLoader without anchors/aliases (an alias bomb would expand
    without bound), nested at most ``MAX_DEPTH`` levels (PyYAML composes recursively:
    deeper input would hit Python's recursion limit)."""

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


_NoAliasLoader.add_constructor("tag:yaml.org,2002:int", _construct_bounded_int)

if yaml.__with_libyaml__:

    class _FastBoundedLoader(_BoundedConstructor, yaml.CSafeLoader):
        """libyaml's loader with the same constructors; its aliases and nesting are
        refused by :func:`iter_documents`' scan of the events before it composes."""

    _FastBoundedLoader.add_constructor("tag:yaml.org,2002:int", _construct_bounded_int)


PARSE_PROGRESS: Final = object()
"""Yielded by :func:`iter_documents` between documents and within long stretches of
parsing, so that a caller on an event loop can let other work run (``api.py``)."""
PROGRESS_EVENTS = 250
"""YAML events scanned between two ``PARSE_PROGRESS`` marks."""
_FAST_LOADER: Final = _FastBoundedLoader if yaml.__with_libyaml__ else None
"""libyaml's loader (ten times faster than PyYAML's pure one) when PyYAML was built with
it, as its wheels are; the pure ``_NoAliasLoader`` otherwise."""


def iter_documents(text: str) -> Iterator[Any]:
    """The documents of multi-document YAML (JSON is YAML too), with ``PARSE_PROGRESS``
    marks in between; a JSON list or ``{"items": [...]}`` is flattened and empty documents
    are skipped. ResourceError on syntax errors, aliases and too many documents."""
    count = 0
    try:
        if _FAST_LOADER is not None:
            # libyaml composes in C, where no hook can refuse an alias or deep nesting:
            # scan the events first (an alias bomb or 1000 levels are refused before
            # anything is built).
            depth = 0
            for number, event in enumerate(yaml.parse(text, Loader=_FAST_LOADER)):
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > MAX_DEPTH:
                        mark = event.start_mark
                        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
                        raise ResourceError(count, "", f"malformed YAML/JSON: {where}{too_deep()}")
                elif isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
                elif isinstance(event, yaml.DocumentEndEvent):
                    count += 1  # where a syntax error of the scan is reported
                elif isinstance(event, yaml.AliasEvent):
                    raise ResourceError(count, "", f"YAML aliases are not accepted{_at(event)}")
                if number % PROGRESS_EVENTS == 0:
                    yield PARSE_PROGRESS
        count = 0
        loader = _NoAliasLoader if _FAST_LOADER is None else _FAST_LOADER
        for doc in yaml.load_all(text, Loader=loader):
            yield PARSE_PROGRESS
            if doc is None:
                continue
            if isinstance(doc, list):
                items = doc
            elif isinstance(doc, dict) and set(doc) == {"items"} and isinstance(doc["items"], list):
                items = doc["items"]
            else:
                items = [doc]
            count += len(items)
            if count > MAX_DOCUMENTS:
                raise ResourceError(None, "", f"more than {MAX_DOCUMENTS} documents")
            yield from items
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(exc):  # libyaml's own limit (1000) came first
            raise ResourceError(count, "", f"malformed YAML/JSON: {too_deep()}") from None
        raise ResourceError(count, "", f"malformed YAML/JSON: {yaml_problem(exc)}") from None


def _at(event: yaml.Event) -> str:
    mark = event.start_mark
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""


def parse_documents(text: str) -> list[Any]:
    """:func:`iter_documents` as a list (no progress marks)."""
    return [doc for doc in iter_documents(text) if doc is not PARSE_PROGRESS]


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line, where in the text and what: ``line 3, column 7: mapping
    values are not allowed here``. PyYAML's own text names the stream ("<unicode
    string>"), which means nothing to whoever sent the file: the client names the file."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid"
        if exc.problem and exc.context:
            what = f"{exc.problem} ({exc.context})"
        if mark is None:
            return what
        return f"line {mark.line + 1}, column {mark.column + 1}: {what}"
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character {exc.position + 1}: {exc.reason}"
    return " ".join(str(exc).replace('in "<unicode string>", ', "").split())


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
    name = check_name(metadata.get("name"), index, rule=kind.name_rule)
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
