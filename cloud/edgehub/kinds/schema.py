"""Structural schemas of resource specs: one declaration per kind, used three ways.

A schema is a plain dict in the OpenAPI v3 subset that Kubernetes calls *structural*
(``type``, ``properties``, ``required``, ``additionalProperties``, ``items``,
``minimum``/``maximum``, ``maxLength``, ``maxItems``, ``maxProperties``, ``enum``,
``description`` and ``x-kubernetes-preserve-unknown-fields``, plus our ``x-edgenode-data``
below), so that the same dict is

- checked against what operators apply (:func:`check`, errors naming the field path),
- published in the hub's OpenAPI documents (``openapi.py``) for clients and ``kubectl
  explain``,
- and the only place a kind lists its fields.

The checker is deliberately small: it covers exactly the subset above, gives errors in the
hub's own wording (``spec.priority: must be in [0, 9]``) and never recurses on the value
(an explicit stack, so hostile nesting costs no Python recursion). Semantic checks that a
schema cannot express (MQTT filters, selectors, twin limits) stay in each kind's
``validate``.

Strings are *text* (shown by ``edgectl``, kubectl, dashboards): control characters other
than tab and newline, and bidirectional overrides, are refused (``limits.text_problem``),
in map keys too. A string schema marked ``x-edgenode-data: true`` is *data* (a Config
value: a PEM file with CRLF line ends, bytes for a device) and keeps any character; free-
form JSON (``x-kubernetes-preserve-unknown-fields``) is data as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from edgehub.limits import text_problem

Schema = dict[str, Any]

PRESERVE: Final = "x-kubernetes-preserve-unknown-fields"
DATA: Final = "x-edgenode-data"
"""On a string schema: data, any character allowed (not text a terminal shows)."""

_TYPE_WORDS: Final = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "object": "a map",
    "array": "a list",
}


class SchemaError(ValueError):
    """A value does not fit its schema: ``field`` is the dotted path, ``message`` why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def _is_type(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    raise ValueError(f"schema type {kind!r} is not supported")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def check(
    value: Any,
    schema: Schema,
    path: str,
    *,
    unknown: Callable[[str, Schema], str] | None = None,
) -> None:
    """Raise :class:`SchemaError` at the first place ``value`` does not fit ``schema``.

    ``unknown(path, schema)`` words the error for a field the schema does not list (the
    default names the known fields).
    """
    stack: list[tuple[Any, Schema, str]] = [(value, schema, path)]
    while stack:
        item, node, where = stack.pop()
        if node.get(PRESERVE) and "type" not in node:
            continue  # free-form JSON: checked by the kind's own rules, if any
        kind = node.get("type")
        if kind is not None and not _is_type(item, kind):
            raise SchemaError(where, f"must be {_TYPE_WORDS[kind]}")
        if "enum" in node and item not in node["enum"]:
            allowed = ", ".join(repr(v) for v in node["enum"])
            raise SchemaError(where, f"must be one of {allowed}")
        if kind in ("integer", "number"):
            low, high = node.get("minimum"), node.get("maximum")
            if (low is not None and item < low) or (high is not None and item > high):
                raise SchemaError(where, f"must be in [{low}, {high}]")
        elif kind == "string":
            limit = node.get("maxLength")
            if limit is not None and len(item) > limit:
                raise SchemaError(where, f"longer than {limit} characters")
            if node.get("minLength") and not item:
                raise SchemaError(where, "must not be empty")
            if not node.get(DATA) and (problem := text_problem(item)) is not None:
                raise SchemaError(where, problem)
        elif kind == "array":
            limit = node.get("maxItems")
            if limit is not None and len(item) > limit:
                raise SchemaError(where, f"more than {limit} items")
            items = node.get("items")
            if items is not None:
                stack.extend(
                    (v, items, _join(where, i)) for i, v in reversed(list(enumerate(item)))
                )
        elif kind == "object":
            _check_object(item, node, where, stack, unknown)


def _check_object(
    item: dict[Any, Any],
    node: Schema,
    where: str,
    stack: list[tuple[Any, Schema, str]],
    unknown: Callable[[str, Schema], str] | None,
) -> None:
    limit = node.get("maxProperties")
    if limit is not None and len(item) > limit:
        raise SchemaError(where, f"more than {limit} entries")
    properties: dict[str, Schema] = node.get("properties", {})
    extra = node.get("additionalProperties", PRESERVE in node)
    for key in node.get("required", ()):
        if key not in item:
            raise SchemaError(_join(where, key), "required")
    children: list[tuple[Any, Schema, str]] = []
    for key, child in item.items():
        if not isinstance(key, str):
            raise SchemaError(where, "keys must be strings")
        if (problem := text_problem(key)) is not None:
            raise SchemaError(where, f"key {key[:64]!r}: {problem}")
        if key in properties:
            children.append((child, properties[key], _join(where, key)))
        elif isinstance(extra, dict):
            children.append((child, extra, _join(where, key)))
        elif not extra:
            message = (
                unknown(where, node)
                if unknown is not None
                else f"unknown field (known: {', '.join(sorted(properties))})"
            )
            raise SchemaError(_join(where, key), message)
    stack.extend(reversed(children))


def string_map(description: str, *, max_entries: int | None = None, data: bool = False) -> Schema:
    """A map of strings to strings (labels, Config data, environment); with ``data`` the
    values are data (any character), not text."""
    value: Schema = {"type": "string", DATA: True} if data else {"type": "string"}
    schema: Schema = {
        "type": "object",
        "description": description,
        "additionalProperties": value,
    }
    if max_entries is not None:
        schema["maxProperties"] = max_entries
    return schema


NODE_SELECTOR: Final[Schema] = {
    "description": (
        "Which nodes receive this resource: a label selector string as kubectl writes "
        "it (env=prod,zone in (a,b)) or a map of required label values; absent: every node."
    ),
    PRESERVE: True,
}
"""``spec.nodeSelector``: a string or a map (checked by ``selector_from_spec``)."""
