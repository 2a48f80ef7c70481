"""An edgenode twin seen as KubeEdge's twin: a map of properties.

edgenode keeps one twin per device: ``desired`` and ``reported`` JSON documents with
per-key timestamps (the view ``DeviceTwin.view(now)`` returns). KubeEdge keeps, per
device, a flat map of properties, each with an ``expected`` value (= edgenode's desired),
an ``actual`` value (= edgenode's reported), a type and an ``optional`` flag. Here a
property is a top-level key of desired or reported; its values are written with
:func:`~edgenode.devices.kubeedge.values.to_text` and its type is the declared one when
the value is of it, else the value's own (:func:`~edgenode.devices.kubeedge.values.presented_type`).
A nested object is one property whose text is compact JSON.

Messages to devices carry no version counters (edgecore strips them from every result,
delta and document it publishes) and every property is ``optional`` (edgecore's default).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from edgenode.devices.kubeedge import values

ABSENT: Final[Any] = None
"""A property side that has no value (JSON null is never a top-level twin value)."""

TwinView = Mapping[str, Any]
"""The parsed JSON of ``DeviceTwin.view(now)`` (desired, reported, metadata, state...)."""
PropertyTypes = Mapping[str, str]
"""Declared types of properties, by name (a Device's ``spec.kubeedge.types``)."""


def parse_view(view: TwinView | bytes) -> TwinView:
    """A view as a mapping (``DeviceTwin.view`` returns bytes)."""
    if isinstance(view, bytes):
        parsed: TwinView = json.loads(view)
        return parsed
    return view


def epoch_ms(seconds: float) -> int:
    """KubeEdge's timestamps: milliseconds since the epoch (truncated, as Go's
    ``UnixNano() / 1e6``)."""
    return math.floor(seconds * 1000)


def _latest(stamps: Any) -> float | None:
    """The newest timestamp of a metadata entry (nested objects hold one per leaf)."""
    if type(stamps) in (int, float):
        return float(stamps)
    if type(stamps) is dict:
        found = [t for t in (_latest(v) for v in stamps.values()) if t is not None]
        return max(found) if found else None
    return None


@dataclass(frozen=True, slots=True)
class Property:
    """One KubeEdge property of an edgenode twin: JSON values (None: absent), their
    timestamps in seconds (None: unknown) and the type shown."""

    expected: Any
    actual: Any
    expected_at: float | None
    actual_at: float | None
    value_type: str

    def message(self) -> dict[str, Any]:
        """KubeEdge's ``MsgTwin`` without versions (as every device-facing message)."""
        body: dict[str, Any] = {}
        if self.expected is not ABSENT:
            body["expected"] = _twin_value(self.expected, self.expected_at)
        if self.actual is not ABSENT:
            body["actual"] = _twin_value(self.actual, self.actual_at)
        body["optional"] = True
        body["metadata"] = {"type": self.value_type}
        return body


def _twin_value(value: Any, at: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {"value": values.to_text(value)}
    if at is not None:
        body["metadata"] = {"timestamp": epoch_ms(at)}
    return body


def section(view: TwinView, name: str) -> Mapping[str, Any]:
    """``view[name]`` if it is an object, else an empty one."""
    section = view.get(name)
    return section if isinstance(section, Mapping) else {}


def properties(view: TwinView | bytes, types: PropertyTypes | None = None) -> dict[str, Property]:
    """The properties of a twin view, desired's keys first, then reported-only ones."""
    view = parse_view(view)
    desired = section(view, "desired")
    reported = section(view, "reported")
    metadata = section(view, "metadata")
    desired_meta = section(metadata, "desired")
    reported_meta = section(metadata, "reported")
    declared = types or {}
    found: dict[str, Property] = {}
    for key in [*desired, *(k for k in reported if k not in desired)]:
        expected = desired.get(key, ABSENT)
        actual = reported.get(key, ABSENT)
        shown_by = expected if expected is not ABSENT else actual
        found[key] = Property(
            expected,
            actual,
            _latest(desired_meta.get(key)) if expected is not ABSENT else None,
            _latest(reported_meta.get(key)) if actual is not ABSENT else None,
            values.presented_type(shown_by, declared.get(key)),
        )
    return found


def twin_map(props: Mapping[str, Property]) -> dict[str, Any]:
    """A ``twin`` map of messages, keys sorted (Go's encoding/json sorts map keys)."""
    return {key: props[key].message() for key in sorted(props)}


def delta(
    view: TwinView | bytes, types: PropertyTypes | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """(twin, delta) of KubeEdge's delta message: ``twin`` holds every property that has
    an expected value, ``delta`` the expected text of each property edgenode's delta names
    (what reported still lacks of desired, so both APIs agree on what is pending)."""
    view = parse_view(view)
    props = properties(view, types)
    pending = section(view, "delta")
    twin = twin_map({k: p for k, p in props.items() if p.expected is not ABSENT})
    wanted = {k: values.to_text(props[k].expected) for k in sorted(pending) if k in props}
    return twin, wanted
