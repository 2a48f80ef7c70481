"""Which KubeEdge device ID (``<namespace>/<name>``) an edgenode device is served under.

A Device resource may say it in ``spec.kubeedge``::

    spec:
      kubeedge:
        namespace: line-a          # default: "default"
        name: thermo               # default: the resource's name
        types: {temperature: float, power: boolean}   # optional declared types

A device without ``spec.kubeedge`` (and every ``[[device]]`` of a node's configuration)
is served as ``default/<its name>``.

KubeEdge names are namespaced, edgenode's are not. A translated KubeEdge Device
(:mod:`~edgenode.devices.kubeedge.crd`) gets the edgenode name :func:`edgenode_name`:
its own name in the ``default`` namespace, ``<namespace>_<name>`` in any other.
Kubernetes names and namespaces never contain ``_``, so the mapping is reversible
(:func:`device_id_from_name`) and two KubeEdge devices never map to one edgenode name;
``line-a/thermo`` and ``line-b/thermo`` become ``line-a_thermo`` and ``line-b_thermo``.
What remains possible is a clash with a device that was not translated (a native
``line-a_thermo``, or one whose ``spec.kubeedge`` names the same ID): the hub refuses
the second with 409 naming the first (:func:`id_conflict`).

Pure functions and a small immutable index; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from edgenode.devices.kubeedge import values
from edgenode.devices.kubeedge.requests import MAX_PROPERTIES
from edgenode.devices.kubeedge.topics import DEFAULT_NAMESPACE, DeviceId

SPEC_FIELD: Final = "kubeedge"
SPEC_FIELDS: Final = frozenset({"namespace", "name", "types"})
NAME_SEPARATOR: Final = "_"
"""Between namespace and name in an edgenode name; never in a Kubernetes name."""

# Kubernetes: a namespace is a DNS-1123 label, a name a DNS-1123 subdomain.
NAMESPACE_PATTERN: Final = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
KUBE_NAME_PATTERN: Final = re.compile(r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?")
# A name served on the KubeEdge topics: a Kubernetes name, or any edgenode device name
# (native devices keep theirs: upper case and "_" are fine in one topic level).
TOPIC_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
# edgenode's device names (edgenode.devices.config.DEVICE_NAME_PATTERN).
EDGENODE_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class KubeEdgeSpecError(ValueError):
    """A bad ``spec.kubeedge``: ``field`` is the path (``spec.kubeedge.types.x``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class KubeEdgeSpec:
    """How a device is served on the KubeEdge topics: its ID and declared types."""

    device: DeviceId
    types: Mapping[str, str] = field(default_factory=dict)


def valid_namespace(namespace: str) -> bool:
    return NAMESPACE_PATTERN.fullmatch(namespace) is not None


def _check_types(raw: Any) -> dict[str, str]:
    where = f"spec.{SPEC_FIELD}.types"
    if not isinstance(raw, Mapping):
        raise KubeEdgeSpecError(where, "must be a map of property name to type")
    if len(raw) > MAX_PROPERTIES:
        raise KubeEdgeSpecError(where, f"{len(raw)} properties, over {MAX_PROPERTIES}")
    types: dict[str, str] = {}
    for key, value_type in raw.items():
        if not isinstance(key, str) or not values.valid_twin_key(key):
            raise KubeEdgeSpecError(
                where, f"{key!r} is not a KubeEdge property name (1-128 of a-z A-Z 0-9 -_.,:/@#)"
            )
        if value_type not in values.DECLARABLE_TYPES:
            allowed = ", ".join(sorted(values.DECLARABLE_TYPES))
            raise KubeEdgeSpecError(
                f"{where}.{key}", f"must be one of {allowed}, not {value_type!r}"
            )
        types[key] = value_type
    return types


def kubeedge_spec(name: str, spec: Mapping[str, Any] | None) -> KubeEdgeSpec:
    """The KubeEdge ID and types of the device ``name`` from its Device ``spec`` (None:
    a device of the node's configuration); KubeEdgeSpecError for a bad ``spec.kubeedge``
    (the hub's validation calls this too)."""
    raw = None if spec is None else spec.get(SPEC_FIELD)
    if raw is None:
        return KubeEdgeSpec(DeviceId(DEFAULT_NAMESPACE, name))
    where = f"spec.{SPEC_FIELD}"
    if not isinstance(raw, Mapping):
        raise KubeEdgeSpecError(where, "must be a map (namespace, name, types)")
    unknown = sorted(str(key) for key in raw if key not in SPEC_FIELDS)
    if unknown:
        raise KubeEdgeSpecError(f"{where}.{unknown[0]}", "unknown field")
    namespace = raw.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or not valid_namespace(namespace):
        raise KubeEdgeSpecError(
            f"{where}.namespace",
            f"must be a Kubernetes namespace (1-63 of a-z 0-9 -), not {namespace!r}",
        )
    kube_name = raw.get("name", name)
    if not isinstance(kube_name, str) or TOPIC_NAME_PATTERN.fullmatch(kube_name) is None:
        raise KubeEdgeSpecError(
            f"{where}.name",
            f"must be 1-253 of A-Z a-z 0-9 . _ - starting with a letter or digit, "
            f"not {kube_name!r}",
        )
    types = _check_types(raw["types"]) if "types" in raw else {}
    return KubeEdgeSpec(DeviceId(namespace, kube_name), types)


def device_id(name: str, spec: Mapping[str, Any] | None) -> DeviceId:
    """The KubeEdge ID of the device ``name`` (see :func:`kubeedge_spec`)."""
    return kubeedge_spec(name, spec).device


def device_id_of(resource: Mapping[str, Any]) -> DeviceId:
    """The KubeEdge ID of a Device resource body (``metadata.name``, ``spec``)."""
    metadata = resource.get("metadata") or {}
    spec = resource.get("spec")
    return device_id(str(metadata.get("name", "")), spec if isinstance(spec, Mapping) else None)


def edgenode_name(device: DeviceId) -> str:
    """The edgenode name of a KubeEdge device: ``name`` in the default namespace, else
    ``<namespace>_<name>``; ValueError if it is not a Kubernetes ID or the result is
    longer than edgenode's 128 characters."""
    if not valid_namespace(device.namespace):
        raise ValueError(f"namespace {device.namespace!r} is not a Kubernetes namespace")
    if KUBE_NAME_PATTERN.fullmatch(device.name) is None:
        raise ValueError(f"name {device.name!r} is not a Kubernetes name")
    name = (
        device.name
        if device.namespace == DEFAULT_NAMESPACE
        else f"{device.namespace}{NAME_SEPARATOR}{device.name}"
    )
    if EDGENODE_NAME_PATTERN.fullmatch(name) is None:
        raise ValueError(
            f"device {device} maps to the edgenode name {name[:40]!r}…, longer than "
            f"edgenode's 128 characters: shorten its name or namespace"
        )
    return name


def device_id_from_name(name: str) -> DeviceId:
    """The KubeEdge ID an :func:`edgenode_name` came from (the reverse mapping)."""
    namespace, sep, rest = name.partition(NAME_SEPARATOR)
    return DeviceId(namespace, rest) if sep else DeviceId(DEFAULT_NAMESPACE, name)


def id_conflict(name: str, device: DeviceId, others: Iterable[tuple[str, DeviceId]]) -> str | None:
    """Why the device ``name`` may not be served as ``device`` (the hub answers 409 with
    it), or None: another device already has that KubeEdge ID."""
    for other_name, other_id in others:
        if other_name != name and other_id == device:
            return (
                f"device/{other_name} is already served to KubeEdge clients as {device}; "
                f"device/{name} cannot be too (set spec.kubeedge on one of them)"
            )
    return None


def name_conflict(name: str, device: DeviceId, existing: Mapping[str, Any] | None) -> str | None:
    """Why a translated KubeEdge device may not become the edgenode Device ``name``, or
    None: a Device of that name exists and is served under another KubeEdge ID (the hub
    answers 409 naming it). Applying the same KubeEdge device again is no conflict."""
    if existing is None:
        return None
    try:
        other = device_id_of(existing)
    except KubeEdgeSpecError:
        other = None
    if other == device:
        return None
    shown = "a device that is not a KubeEdge device" if other is None else f"KubeEdge {other}"
    return (
        f"KubeEdge device {device} maps to device/{name}, which already exists as {shown}; "
        f"rename one of them"
    )


class DeviceIndex:
    """The KubeEdge IDs of the devices one node serves, both ways.

    Built from ``(edgenode name, KubeEdgeSpec)`` pairs. Two devices with one ID cannot
    both be served: the first by name keeps it, the others are listed in
    :attr:`duplicates` (the hub refuses such Devices; this covers a node's own
    configuration).
    """

    __slots__ = ("_by_id", "_by_name", "duplicates")

    def __init__(self, devices: Iterable[tuple[str, KubeEdgeSpec]] = ()) -> None:
        self._by_name: dict[str, KubeEdgeSpec] = {}
        self._by_id: dict[DeviceId, str] = {}
        duplicates: list[tuple[str, str, DeviceId]] = []
        for name, spec in sorted(devices, key=lambda item: item[0]):
            kept = self._by_id.get(spec.device)
            if kept is not None:
                duplicates.append((kept, name, spec.device))
                continue
            self._by_name[name] = spec
            self._by_id[spec.device] = name
        self.duplicates: tuple[tuple[str, str, DeviceId], ...] = tuple(duplicates)
        """(kept, dropped, ID) for each device left out."""

    @classmethod
    def from_specs(cls, specs: Mapping[str, Mapping[str, Any] | None]) -> DeviceIndex:
        """From Device specs by name (None: a configured device); devices with a bad
        ``spec.kubeedge`` are served under ``default/<name>``."""
        entries: list[tuple[str, KubeEdgeSpec]] = []
        for name, spec in specs.items():
            try:
                entries.append((name, kubeedge_spec(name, spec)))
            except KubeEdgeSpecError:
                entries.append((name, kubeedge_spec(name, None)))
        return cls(entries)

    def name_of(self, device: DeviceId) -> str | None:
        """The edgenode name served as ``device`` (None: none here)."""
        return self._by_id.get(device)

    def spec_of(self, name: str) -> KubeEdgeSpec | None:
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[tuple[str, KubeEdgeSpec]]:
        return iter(sorted(self._by_name.items()))

    def __len__(self) -> int:
        return len(self._by_name)

    def changes_since(
        self, before: DeviceIndex
    ) -> tuple[list[tuple[str, DeviceId]], list[DeviceId]]:
        """(added, removed) since ``before``, for ``membership/updated``: a device whose
        ID changed is removed under the old one and added under the new one."""
        added = [(name, spec.device) for name, spec in self if before.name_of(spec.device) != name]
        removed = [spec.device for name, spec in before if self.name_of(spec.device) != name]
        return added, removed
