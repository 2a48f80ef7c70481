"""KubeEdge Device manifests translated to edgenode Devices (devices/kubeedge/crd.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edgenode.devices.kubeedge import crd
from edgenode.devices.kubeedge.crd import CrdError, Skipped, Translation, translate
from edgenode.devices.kubeedge.ids import kubeedge_spec
from edgenode.devices.kubeedge.topics import DeviceId

# Shaped like KubeEdge's own examples (a Modbus thermostat with a DeviceModel).
MANIFEST: dict[str, Any] = {
    "apiVersion": "devices.kubeedge.io/v1beta1",
    "kind": "Device",
    "metadata": {
        "name": "thermo",
        "namespace": "line-a",
        "uid": "0d3c…",
        "resourceVersion": "1234",
        "labels": {"description": "Hall 3 thermostat", "site": "north"},
        "annotations": {
            "owner": "ops",
            "kubectl.kubernetes.io/last-applied-configuration": "{...}",
        },
    },
    "spec": {
        "deviceModelRef": {"name": "thermostat-model"},
        "nodeName": "pi-1",
        "protocol": {
            "protocolName": "modbus",
            "configData": {"serialPort": "/dev/ttyS0", "baudRate": 9600},
        },
        "properties": [
            {
                "name": "target",
                "desired": {"value": "23", "metadata": {"type": "int", "timestamp": "1"}},
                "visitors": {
                    "protocolName": "modbus",
                    "configData": {"register": "HoldingRegister", "offset": 2},
                },
                "reportCycle": 10000,
                "collectCycle": 10000,
                "reportToCloud": True,
                "pushMethod": {"mqtt": {"address": "tcp://127.0.0.1:1883", "topic": "t"}},
            },
            {"name": "ratio", "desired": {"value": "0.5", "metadata": {"type": "DOUBLE"}}},
            {"name": "enabled", "desired": {"value": "true", "metadata": {"type": "boolean"}}},
            {"name": "label", "desired": {"value": "hall"}},
            {"name": "temperature", "desired": {"value": "", "metadata": {"type": "float"}}},
            {"name": "humidity"},
        ],
        "methods": [{"name": "reset", "propertyNames": ["target"]}],
        "stateReport": {"reportCycle": 30, "reportToCloud": True},
    },
    "status": {"reportToCloud": True},
}


def manifest(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(MANIFEST)
    for path, value in changes.items():
        target = doc
        *parents, last = path.split("__")
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return doc


def test_a_full_manifest():
    result = translate(MANIFEST)
    assert isinstance(result, Translation)
    assert result.device == DeviceId("line-a", "thermo")
    assert result.name == "line-a_thermo"
    assert result.resource == {
        "apiVersion": "edgenode.io/v1",
        "kind": "Device",
        "metadata": {
            "name": "line-a_thermo",
            "labels": {"description": "Hall 3 thermostat", "site": "north"},
            "annotations": {"owner": "ops"},
        },
        "spec": {
            "node": "pi-1",
            "model": "thermostat-model",
            "description": "Hall 3 thermostat",
            "desired": {"target": 23, "ratio": 0.5, "enabled": True, "label": "hall"},
            "kubeedge": {
                "namespace": "line-a",
                "name": "thermo",
                "types": {
                    "target": "int",
                    "ratio": "float",
                    "enabled": "boolean",
                    "temperature": "float",
                },
            },
        },
    }
    assert result.ignored == (
        "metadata.uid",
        "metadata.resourceVersion",
        "metadata.annotations.kubectl.kubernetes.io/last-applied-configuration",
        "spec.protocol",
        "spec.methods",
        "spec.stateReport",
        "spec.properties[0].visitors",
        "spec.properties[0].reportCycle",
        "spec.properties[0].collectCycle",
        "spec.properties[0].reportToCloud",
        "spec.properties[0].pushMethod",
        "spec.properties[0].desired.metadata.timestamp",
        "status",
    )
    # The node reads the same ID and types back from the resource.
    spec = kubeedge_spec(result.name, result.resource["spec"])
    assert spec.device == result.device
    assert spec.types["ratio"] == "float"


def test_the_default_namespace_keeps_the_name():
    result = translate(manifest(metadata__namespace=...))
    assert isinstance(result, Translation)
    assert result.name == "thermo"
    assert result.resource["spec"]["kubeedge"]["namespace"] == "default"


def test_a_minimal_device():
    doc = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "m"},
        "spec": {"nodeName": "pi-1"},
    }
    result = translate(doc)
    assert isinstance(result, Translation)
    assert result.resource == {
        "apiVersion": "edgenode.io/v1",
        "kind": "Device",
        "metadata": {"name": "m"},
        "spec": {"node": "pi-1", "desired": {}, "kubeedge": {"namespace": "default", "name": "m"}},
    }
    assert result.ignored == ()


@pytest.mark.parametrize("kind", ["DeviceModel", "DeviceStatus"])
def test_documents_with_nothing_for_edgenode_are_skipped(kind):
    doc = {"apiVersion": crd.API_VERSION, "kind": kind, "metadata": {"name": "m"}, "spec": {}}
    result = translate(doc)
    assert isinstance(result, Skipped)
    assert (result.kind, result.name) == (kind, "m")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"apiVersion": "devices.kubeedge.io/v1alpha2"}, "apiVersion"),
        ({"kind": "Pod"}, "kind"),
        ({"metadata__name": "Thermo"}, "metadata.name"),
        ({"metadata__name": ...}, "metadata.name"),
        ({"metadata__namespace": "Line_A"}, "metadata.namespace"),
        ({"metadata__name": "x" * 100, "metadata__namespace": "y" * 40}, "metadata.name"),
        ({"metadata__labels": {"a": 1}}, "metadata.labels.a"),
        ({"metadata__annotations": ["x"]}, "metadata.annotations"),
        ({"spec": "x"}, "spec"),
        ({"spec__nodeName": ...}, "spec.nodeName"),
        ({"spec__nodeName": ""}, "spec.nodeName"),
        ({"spec__deviceModelRef": {"name": 5}}, "spec.deviceModelRef.name"),
        ({"spec__properties": {"a": 1}}, "spec.properties"),
        ({"spec__properties": [5]}, "spec.properties[0]"),
        ({"spec__properties__1__name": ...}, "spec.properties[1].name"),
        ({"spec__properties__1__name": "target"}, "spec.properties[1].name"),
        ({"spec__properties__1__name": "bad name"}, "spec.properties[1].name"),
        ({"spec__properties__0__desired": "23"}, "spec.properties[0].desired"),
        ({"spec__properties__0__desired": {"value": 23}}, "spec.properties[0].desired.value"),
        (
            {"spec__properties__0__desired": {"value": "warm", "metadata": {"type": "int"}}},
            "spec.properties[0].desired.value",
        ),
        (
            {"spec__properties__0__desired": {"value": "1", "metadata": {"type": "bytes"}}},
            "spec.properties[0].desired.metadata.type",
        ),
        (
            {"spec__properties__0__desired": {"value": "1", "metadata": {"type": 1}}},
            "spec.properties[0].desired.metadata.type",
        ),
        ({"spec__properties": [{"name": f"p{i}"} for i in range(1025)]}, "spec.properties"),
    ],
)
def test_errors_name_the_field(changes, field):
    with pytest.raises(CrdError) as caught:
        translate(manifest(**changes))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_value_errors_say_kubeedges_reason():
    doc = manifest(spec__properties__0__desired={"value": "warm", "metadata": {"type": "int"}})
    with pytest.raises(CrdError, match="the value is not int or integer"):
        translate(doc)


def test_is_kubeedge_document():
    assert crd.is_kubeedge_document(MANIFEST)
    assert crd.is_kubeedge_document({"apiVersion": "devices.kubeedge.io/v1alpha2"})
    assert not crd.is_kubeedge_document({"apiVersion": "edgenode.io/v1"})
    assert not crd.is_kubeedge_document({"apiVersion": "devices.kubeedge.io"})
    assert not crd.is_kubeedge_document(["x"])


def test_the_input_is_not_changed():
    doc = copy.deepcopy(MANIFEST)
    translate(doc)
    assert doc == MANIFEST
