"""Label selectors, as kubectl writes them: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
``k notin (a,b)``, ``k`` (exists) and ``!k`` (absent), joined by commas (all must hold).

Used by ``get -l``, by Config/Route ``spec.nodeSelector`` and by targeting. A selector is
parsed once into requirements; matching is a pure function of a node's labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MAX_SELECTOR_LENGTH = 4096
"""Longest selector string accepted (bounded parsing work on hostile input)."""
MAX_LABEL_KEY_LENGTH = 253
MAX_LABEL_VALUE_LENGTH = 63

_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SET_RE = re.compile(r"^\s*(\S+)\s+(in|notin)\s+\(([^()]*)\)\s*$")


class SelectorError(ValueError):
    """A selector (or a label key/value) that does not parse; the message says why."""


def check_label_key(key: str) -> None:
    """Raise SelectorError unless ``key`` is a valid label key (``[prefix/]name``)."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_LABEL_KEY_LENGTH:
        raise SelectorError(f"invalid label key {key!r}: 1 to {MAX_LABEL_KEY_LENGTH} characters")
    if not _KEY_RE.fullmatch(key):
        raise SelectorError(
            f"invalid label key {key!r}: alphanumerics, '-', '_', '.', optional 'prefix/'"
        )


def check_label_value(value: str) -> None:
    """Raise SelectorError unless ``value`` is a valid label value (may be empty)."""
    if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE_LENGTH:
        raise SelectorError(
            f"invalid label value {value!r}: a string of at most "
            f"{MAX_LABEL_VALUE_LENGTH} characters"
        )
    if not _VALUE_RE.fullmatch(value):
        raise SelectorError(f"invalid label value {value!r}: alphanumerics, '-', '_', '.'")


@dataclass(frozen=True)
class Requirement:
    """One condition on one label key."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "absent"
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "exists":
            return value is not None
        if self.op == "absent":
            return value is None
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        # "!=" and "notin" hold for nodes without the label, as in Kubernetes.
        return value is None or value not in self.values


@dataclass(frozen=True)
class Selector:
    """All requirements must hold; the empty selector matches every node."""

    requirements: tuple[Requirement, ...]
    text: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses (``a in (x,y),b=c`` is two terms)."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
            if depth > 1:
                raise SelectorError(f"invalid selector {text!r}: nested parentheses")
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"invalid selector {text!r}: unbalanced ')'")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise SelectorError(f"invalid selector {text!r}: unbalanced '('")
    parts.append("".join(current))
    return parts


def _parse_term(term: str, text: str) -> Requirement:
    stripped = term.strip()
    if not stripped:
        raise SelectorError(f"invalid selector {text!r}: empty term")
    match = _SET_RE.match(stripped)
    if match:
        key, op, raw = match.group(1), match.group(2), match.group(3)
        values = [v.strip() for v in raw.split(",")]
        if not values or any(v == "" for v in values):
            raise SelectorError(f"invalid selector {text!r}: empty value in ({raw})")
        check_label_key(key)
        for v in values:
            check_label_value(v)
        return Requirement(key, op, frozenset(values))
    for op in ("!=", "==", "="):
        if op in stripped:
            key, _, value = stripped.partition(op)
            key, value = key.strip(), value.strip()
            check_label_key(key)
            check_label_value(value)
            return Requirement(key, "!=" if op == "!=" else "=", frozenset([value]))
    if stripped.startswith("!"):
        key = stripped[1:].strip()
        check_label_key(key)
        return Requirement(key, "absent", frozenset())
    check_label_key(stripped)
    return Requirement(stripped, "exists", frozenset())


def parse_selector(text: str) -> Selector:
    """Parse a selector string; SelectorError naming the problem when it is invalid."""
    if not isinstance(text, str):
        raise SelectorError(f"a selector must be a string, got {type(text).__name__}")
    if len(text) > MAX_SELECTOR_LENGTH:
        raise SelectorError(f"selector longer than {MAX_SELECTOR_LENGTH} characters")
    if not text.strip():
        return Selector((), text)
    return Selector(tuple(_parse_term(t, text) for t in _split_top_level(text)), text)


def selector_from_spec(value: object) -> Selector:
    """A ``nodeSelector`` field: a selector string, or a map of required label values."""
    if isinstance(value, str):
        return parse_selector(value)
    if isinstance(value, dict):
        requirements = []
        for key, val in sorted(value.items()):
            if not isinstance(key, str) or not isinstance(val, str):
                raise SelectorError("a nodeSelector map must have string keys and values")
            check_label_key(key)
            check_label_value(val)
            requirements.append(Requirement(key, "=", frozenset([val])))
        text = ",".join(f"{r.key}={next(iter(r.values))}" for r in requirements)
        return Selector(tuple(requirements), text)
    raise SelectorError("nodeSelector must be a selector string or a map of labels")
