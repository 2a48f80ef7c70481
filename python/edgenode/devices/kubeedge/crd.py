"""KubeEdge's Device manifests (``devices.kubeedge.io/v1beta1``) as edgenode Devices.

:func:`translate` turns one parsed KubeEdge document into an edgenode resource, so that
existing manifests apply unchanged (``edgectl apply``, and ``kubectl apply`` once the hub
serves the group)::

    apiVersion: devices.kubeedge.io/v1beta1     apiVersion: edgenode.io/v1
    kind: Device                                kind: Device
    metadata:                                   metadata:
      name: thermo                                name: line-a_thermo   (ids.edgenode_name)
      namespace: line-a                           labels: {...}  annotations: {...}
      labels: {description: hall-3, ...}        spec:
    spec:                                         node: pi-1
      nodeName: pi-1                              model: thermostat-model
      deviceModelRef: {name: thermostat-model}    description: hall-3
      properties:                                 desired: {target: 23}
      - name: target                              kubeedge:
        desired:                                    namespace: line-a
          value: "23"                               name: thermo
          metadata: {type: int}                     types: {target: int}

Each property's ``desired.value`` (a string) becomes a JSON value of its declared type
(``metadata.type``; ``string`` when absent, as KubeEdge's default; ``double`` reads as
``float``, types are compared in lower case as mappers do); an empty value sets no
desired value but keeps the type. What only a mapper reads (the protocol and its config,
property visitors, report and collect cycles, push methods, methods, state reporting)
and what the API server owns (uid, resourceVersion, status...) is ignored and listed in
:attr:`Translation.ignored`, so ``edgectl apply`` can say so. ``DeviceModel`` and
``DeviceStatus`` documents have nothing for edgenode: :class:`Skipped`.

Pure; bounded (at most ``MAX_PROPERTIES`` properties, values within the twin's limits,
which the hub checks on the result as on any Device).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from edgenode.devices.kubeedge import ids, values
from edgenode.devices.kubeedge.requests import MAX_PROPERTIES
from edgenode.devices.kubeedge.topics import DEFAULT_NAMESPACE, DeviceId

GROUP: Final = "devices.kubeedge.io"
API_VERSION: Final = f"{GROUP}/v1beta1"
EDGENODE_API_VERSION: Final = "edgenode.io/v1"
SKIPPED_KINDS: Final = {
    "DeviceModel": "a DeviceModel describes properties for mappers; edgenode needs none "
    "(declare types on the Device's properties: desired.metadata.type)",
    "DeviceStatus": "a DeviceStatus is written by KubeEdge's cloudcore; edgenode keeps "
    "reported state in the Device's status",
}
TYPE_ALIASES: Final = {"double": values.FLOAT}
"""Property types of DeviceModels that twins spell differently."""
DOCUMENT: Final = "(document)"
"""The field named by errors about the document as a whole."""
LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
DESCRIPTION_LABEL: Final = "description"
"""KubeEdge's cloudcore takes a device's description from this label."""

_METADATA_USED: Final = frozenset({"name", "namespace", "labels", "annotations"})
_SPEC_USED: Final = frozenset({"nodeName", "deviceModelRef", "properties"})
_PROPERTY_USED: Final = frozenset({"name", "desired"})


class CrdError(ValueError):
    """A KubeEdge document that cannot become an edgenode resource; ``field`` is the
    path in the document (``spec.properties[2].desired.value``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Translation:
    """The edgenode Device for a KubeEdge Device, its KubeEdge ID, and the paths of the
    KubeEdge document that were ignored."""

    resource: dict[str, Any]
    device: DeviceId
    ignored: tuple[str, ...]

    @property
    def name(self) -> str:
        return str(self.resource["metadata"]["name"])


@dataclass(frozen=True, slots=True)
class Skipped:
    """A KubeEdge document with nothing for edgenode (applies as a no-op, said so)."""

    kind: str
    name: str
    reason: str


def is_kubeedge_document(doc: Any) -> bool:
    """True for a document of KubeEdge's device API group (any version)."""
    if not isinstance(doc, Mapping):
        return False
    api_version = doc.get("apiVersion")
    return isinstance(api_version, str) and api_version.startswith(f"{GROUP}/")


def _map(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CrdError(where, "must be a map")
    return value


def _string_map(value: Any, where: str) -> dict[str, str]:
    found = _map(value, where)
    for key, item in found.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise CrdError(f"{where}.{key}", "must be a string")
    return dict(found)


def _ignored(obj: Mapping[str, Any], used: frozenset[str], where: str) -> list[str]:
    return [f"{where}.{key}" for key in obj if key not in used]


def _property_type(metadata: Mapping[str, Any], where: str) -> str | None:
    raw = metadata.get("type")
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise CrdError(where, "must be a string")
    lowered = raw.lower()
    value_type = TYPE_ALIASES.get(lowered, lowered)
    if value_type not in values.DECLARABLE_TYPES:
        allowed = ", ".join(sorted(values.DECLARABLE_TYPES))
        raise CrdError(where, f"must be one of {allowed} (or double), not {raw!r}")
    return value_type


def _properties(raw: Any, ignored: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(desired, types) of ``spec.properties``."""
    where = "spec.properties"
    if raw is None:
        return {}, {}
    if not isinstance(raw, list):
        raise CrdError(where, "must be a list")
    if len(raw) > MAX_PROPERTIES:
        raise CrdError(where, f"{len(raw)} properties, over {MAX_PROPERTIES}")
    desired: dict[str, Any] = {}
    types: dict[str, str] = {}
    seen: set[str] = set()
    for index, prop in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(prop, Mapping):
            raise CrdError(at, "must be a map")
        name = prop.get("name")
        if not isinstance(name, str) or not values.valid_twin_key(name):
            raise CrdError(
                f"{at}.name",
                f"must be a property name (1-128 of a-z A-Z 0-9 -_.,:/@#), not {name!r}",
            )
        if name in seen:
            raise CrdError(f"{at}.name", f"{name!r} is the name of an earlier property")
        seen.add(name)
        ignored += _ignored(prop, _PROPERTY_USED, at)
        wanted = _map(prop.get("desired"), f"{at}.desired")
        ignored += _ignored(wanted, frozenset({"value", "metadata"}), f"{at}.desired")
        metadata = _map(wanted.get("metadata"), f"{at}.desired.metadata")
        ignored += _ignored(metadata, frozenset({"type"}), f"{at}.desired.metadata")
        value_type = _property_type(metadata, f"{at}.desired.metadata.type")
        if value_type is not None:
            types[name] = value_type
        value = wanted.get("value")
        if value is None or value == "":
            continue  # KubeEdge: no expected value
        if not isinstance(value, str):
            raise CrdError(f"{at}.desired.value", "must be a string (KubeEdge values are)")
        try:
            desired[name] = values.to_json(value, value_type or values.STRING)
        except ValueError as exc:
            raise CrdError(f"{at}.desired.value", str(exc)) from None
    return desired, types


def translate(doc: Any, *, keep_last_applied: bool = False) -> Translation | Skipped:
    """The edgenode resource for a KubeEdge document (:func:`is_kubeedge_document`);
    CrdError naming the field for anything that cannot be translated. ``keep_last_applied``
    keeps kubectl's ``last-applied-configuration`` annotation (the hub's Kubernetes API
    does: kubectl's next ``apply`` compares with it)."""
    if not isinstance(doc, Mapping):
        raise CrdError(DOCUMENT, f"must be a map, not {type(doc).__name__}")
    api_version = doc.get("apiVersion")
    kind = doc.get("kind")
    if api_version != API_VERSION:
        raise CrdError(
            "apiVersion",
            f"only {API_VERSION} is supported, not {api_version!r} "
            f"(KubeEdge 1.15 replaced v1alpha2; convert the manifest first)",
        )
    metadata = _map(doc.get("metadata"), "metadata")
    raw_name = metadata.get("name")
    if not isinstance(raw_name, str) or ids.KUBE_NAME_PATTERN.fullmatch(raw_name) is None:
        raise CrdError("metadata.name", f"must be a Kubernetes name, not {raw_name!r}")
    if kind in SKIPPED_KINDS:
        return Skipped(str(kind), raw_name, SKIPPED_KINDS[str(kind)])
    if kind != "Device":
        raise CrdError("kind", f"must be Device, DeviceModel or DeviceStatus, not {kind!r}")
    namespace = metadata.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or not ids.valid_namespace(namespace):
        raise CrdError("metadata.namespace", f"must be a Kubernetes namespace, not {namespace!r}")
    device = DeviceId(namespace, raw_name)
    try:
        name = ids.edgenode_name(device)
    except ValueError as exc:
        raise CrdError("metadata.name", str(exc)) from None
    ignored = _ignored(metadata, _METADATA_USED, "metadata")
    labels = _string_map(metadata.get("labels"), "metadata.labels")
    annotations = _string_map(metadata.get("annotations"), "metadata.annotations")
    if not keep_last_applied and annotations.pop(LAST_APPLIED, None) is not None:
        ignored.append(f"metadata.annotations.{LAST_APPLIED}")

    spec = _map(doc.get("spec"), "spec")
    ignored += _ignored(spec, _SPEC_USED, "spec")
    node = spec.get("nodeName")
    if not isinstance(node, str) or not node:
        raise CrdError("spec.nodeName", "is required: edgenode serves a device from one node")
    desired, types = _properties(spec.get("properties"), ignored)
    edgenode_spec: dict[str, Any] = {"node": node}
    model = _map(spec.get("deviceModelRef"), "spec.deviceModelRef").get("name")
    if model is not None:
        if not isinstance(model, str):
            raise CrdError("spec.deviceModelRef.name", "must be a string")
        edgenode_spec["model"] = model
    if DESCRIPTION_LABEL in labels:
        edgenode_spec["description"] = labels[DESCRIPTION_LABEL]
    edgenode_spec["desired"] = desired
    kubeedge: dict[str, Any] = {"namespace": namespace, "name": raw_name}
    if types:
        kubeedge["types"] = types
    edgenode_spec[ids.SPEC_FIELD] = kubeedge
    if "status" in doc:
        ignored.append("status")

    resource_metadata: dict[str, Any] = {"name": name}
    if labels:
        resource_metadata["labels"] = labels
    if annotations:
        resource_metadata["annotations"] = annotations
    resource = {
        "apiVersion": EDGENODE_API_VERSION,
        "kind": "Device",
        "metadata": resource_metadata,
        "spec": edgenode_spec,
    }
    return Translation(resource, device, tuple(ignored))


def to_kubeedge(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A KubeEdge ``Device`` for an edgenode Device resource (the hub's Kubernetes API
    serves these under ``devices.kubeedge.io``): its KubeEdge ID, node, model, and each
    desired value as a typed property. What edgenode does not keep (the protocol, property
    visitors...) comes from kubectl's ``last-applied-configuration`` when there is one, so
    a manifest applied again is unchanged. ``status.twins`` carries the reported values."""
    metadata = _map(resource.get("metadata"), "metadata")
    spec = _map(resource.get("spec"), "spec")
    name = str(metadata.get("name", ""))
    kubeedge = ids.kubeedge_spec(name, spec)
    annotations = dict(_map(metadata.get("annotations"), "metadata.annotations"))
    base: dict[str, Any] = {}
    text = annotations.get(LAST_APPLIED)
    if isinstance(text, str):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("kind") == "Device":
            base = parsed
    raw_base_spec = base.get("spec")
    base_spec: dict[str, Any] = raw_base_spec if isinstance(raw_base_spec, dict) else {}
    out_spec: dict[str, Any] = {k: v for k, v in base_spec.items() if k not in _SPEC_USED}
    out_spec["nodeName"] = spec.get("node")
    if spec.get("model") is not None:
        out_spec["deviceModelRef"] = {"name": spec["model"]}
    raw_desired = spec.get("desired")
    desired: dict[str, Any] = raw_desired if isinstance(raw_desired, dict) else {}
    by_name: dict[str, dict[str, Any]] = {
        str(p["name"]): p
        for p in base_spec.get("properties") or []
        if isinstance(p, dict) and isinstance(p.get("name"), str)
    }
    properties: list[dict[str, Any]] = []
    for key in [*by_name, *(k for k in desired if k not in by_name)]:
        prop = {k: v for k, v in by_name.get(key, {}).items() if k != "desired"}
        prop["name"] = key
        wanted: dict[str, Any] = {}
        if key in desired:
            wanted["value"] = values.to_text(desired[key])
        elif key in by_name:
            wanted["value"] = ""
        declared = kubeedge.types.get(key)
        if declared is not None:
            wanted["metadata"] = {"type": declared}
        prop["desired"] = wanted
        properties.append(prop)
    for key, declared in kubeedge.types.items():
        if key not in desired and key not in by_name:
            properties.append(
                {"name": key, "desired": {"value": "", "metadata": {"type": declared}}}
            )
    if properties:
        out_spec["properties"] = properties
    out_metadata: dict[str, Any] = {
        "name": kubeedge.device.name,
        "namespace": kubeedge.device.namespace,
    }
    for key in ("labels", "annotations"):
        if metadata.get(key):
            out_metadata[key] = dict(metadata[key])
    return {"apiVersion": API_VERSION, "kind": "Device", "metadata": out_metadata, "spec": out_spec}
