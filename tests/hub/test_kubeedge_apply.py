"""KubeEdge at the hub (issue 16): KubeEdge Device manifests apply unchanged (translated,
with what is ignored said), DeviceModels are skipped, names never silently merge (409),
``spec.kubeedge`` is checked, and desired values must fit their declared types."""

from __future__ import annotations

import pytest

from hub.conftest import RunningHub

KUBEEDGE = """
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  nodeName: pi-1
  protocol: {{protocolName: modbus}}
  properties:
  - name: target
    desired: {{value: "21", metadata: {{type: int}}}}
"""
MODEL = """
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: thermostat-model, namespace: line-a}
spec: {protocol: modbus}
"""


def device(name: str, spec: str) -> str:
    return f"apiVersion: edgenode.io/v1\nkind: Device\nmetadata: {{name: {name}}}\nspec: {spec}\n"


def test_a_manifest_applies_as_devices_in_document_order(hub: RunningHub):
    text = "---".join(
        [
            KUBEEDGE.format(name="thermo", namespace="line-a"),
            MODEL,
            KUBEEDGE.format(name="thermo", namespace="default"),
        ]
    )
    status, body = hub.apply(text)
    assert status == 200, body
    results = body["results"]
    assert [(r["kind"], r["name"], r["action"]) for r in results] == [
        ("Device", "line-a_thermo", "created"),
        ("DeviceModel", "thermostat-model", "skipped"),
        ("Device", "thermo", "created"),
    ]
    assert results[0]["kubeedge"] == "line-a/thermo"
    assert results[0]["ignored"] == ["spec.protocol"]
    assert "DeviceModel" in results[1]["reason"]
    status, view = hub.call("GET", "/v1/devices/line-a_thermo")
    assert status == 200
    assert view["spec"]["desired"] == {"target": 21}
    assert view["spec"]["kubeedge"] == {
        "namespace": "line-a",
        "name": "thermo",
        "types": {"target": "int"},
    }
    # Applying the same manifest again changes nothing.
    status, body = hub.apply(text)
    assert [r["action"] for r in body["results"]] == ["unchanged", "skipped", "unchanged"]


def test_edgectl_apply_says_what_a_manifest_became(hub: RunningHub):
    text = KUBEEDGE.format(name="thermo", namespace="line-a") + "---" + MODEL
    result = hub.ctl("apply", "-f", "-", stdin=text)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "device/line-a_thermo created (KubeEdge device line-a/thermo; ignored: spec.protocol)"
    )
    assert lines[1].startswith("devicemodel/thermostat-model skipped: a DeviceModel")


LINE_A = KUBEEDGE.format(name="thermo", namespace="line-a")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (LINE_A.replace("v1beta1", "v1alpha2"), "apiVersion"),
        (LINE_A.replace("nodeName: pi-1", "x: 1"), "spec.nodeName"),
        (KUBEEDGE.format(name="Thermo", namespace="line-a"), "metadata.name"),
        (LINE_A.replace('"21"', '"warm"'), "spec.properties[0].desired.value"),
    ],
)
def test_a_manifest_that_cannot_apply_is_refused_naming_the_field(hub, text, field):
    status, body = hub.apply(text)
    assert status == 422, body
    assert body["field"] == field
    assert hub.call("GET", "/v1/devices")[1]["items"] == []


def test_names_never_silently_merge(hub: RunningHub):
    status, body = hub.apply(device("line-a_thermo", "{node: pi-1}"))
    assert status == 200, body
    status, body = hub.apply(KUBEEDGE.format(name="thermo", namespace="line-a"))
    assert status == 409, body
    assert "device/line-a_thermo" in body["error"]
    assert "already exists" in body["error"]
    # Two Devices of one node with one KubeEdge ID: the second is refused, naming the first.
    status, body = hub.apply(device("a", "{node: pi-1, kubeedge: {name: x}}"))
    assert status == 200, body
    status, body = hub.apply(device("b", "{node: pi-1, kubeedge: {name: x}}"))
    assert status == 409, body
    assert body["field"] == "spec.kubeedge"
    assert "device/a" in body["error"]
    # ... also within one apply, and against a plain Device's default ID.
    status, body = hub.apply(
        device("c", "{node: pi-2, kubeedge: {name: y}}")
        + "---\n"
        + device("d", "{node: pi-2, kubeedge: {name: y}}")
    )
    assert status == 409, body
    status, body = hub.apply(device("lamp", "{node: pi-1}"))
    assert status == 200, body
    status, body = hub.apply(device("e", "{node: pi-1, kubeedge: {name: lamp}}"))
    assert status == 409, body
    # Changing the one that holds an ID is no clash with itself.
    status, body = hub.apply(device("a", "{node: pi-1, kubeedge: {name: x}, model: m}"))
    assert status == 200, body


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ("{node: n, kubeedge: {namespace: Line_A}}", "spec.kubeedge.namespace", "namespace"),
        ("{node: n, kubeedge: {types: {t: double}}}", "spec.kubeedge.types.t", "must be one of"),
        ("{node: n, kubeedge: {zone: 1}}", "spec.kubeedge.zone", "unknown field"),
        ("{node: n, kubeedge: {name: 'a/b'}}", "spec.kubeedge.name", "must be"),
        ("{node: n, desired: {t: warm}, kubeedge: {types: {t: int}}}", "spec.desired", "not a int"),
    ],
)  # fmt: skip
def test_spec_kubeedge_is_checked(hub, spec, field, words):
    status, body = hub.apply(device("thermo", spec))
    assert status == 422, body
    assert body["field"] == field
    assert words in body["error"]


def test_twin_set_refuses_a_value_of_the_wrong_type(hub: RunningHub):
    status, body = hub.apply(device("thermo", "{node: n, kubeedge: {types: {t: int}}}"))
    assert status == 200, body
    status, body = hub.call("PATCH", "/v1/devices/thermo/desired", {"t": "warm"})
    assert status in (400, 422), body
    assert "not a int" in body["error"]
    status, body = hub.call("PATCH", "/v1/devices/thermo/desired", {"t": 5})
    assert status == 200, body


def test_device_names_may_hold_underscores_up_to_128_characters(hub: RunningHub):
    status, body = hub.apply(device("line-a_" + "x" * 121, "{node: n}"))
    assert status == 200, body
    status, body = hub.apply(device("line-a_" + "x" * 122, "{node: n}"))
    assert status == 422, body
    assert "at most 128" in body["error"]
    status, body = hub.apply(device("_x", "{node: n}"))
    assert status == 422, body
    # Other kinds keep DNS names.
    status, body = hub.apply("apiVersion: edgenode.io/v1\nkind: Node\nmetadata: {name: a_b}\n")
    assert status == 422, body
