"""KubeEdge device IDs of edgenode devices, the reversible name mapping and the index
(devices/kubeedge/ids.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgenode.devices.config import DEVICE_NAME_PATTERN
from edgenode.devices.kubeedge.ids import (
    DeviceIndex,
    KubeEdgeSpec,
    KubeEdgeSpecError,
    device_id,
    device_id_from_name,
    device_id_of,
    edgenode_name,
    id_conflict,
    kubeedge_spec,
    name_conflict,
)
from edgenode.devices.kubeedge.topics import DeviceId


def test_default_namespace_when_absent():
    assert device_id("lamp", None) == DeviceId("default", "lamp")
    assert device_id("lamp", {"node": "pi-1"}) == DeviceId("default", "lamp")
    assert device_id("lamp_2", {}) == DeviceId("default", "lamp_2")  # native names kept


def test_spec_kubeedge():
    spec = {"kubeedge": {"namespace": "line-a", "name": "thermo", "types": {"t": "float"}}}
    assert kubeedge_spec("line-a_thermo", spec) == KubeEdgeSpec(
        DeviceId("line-a", "thermo"), {"t": "float"}
    )
    assert device_id("pump", {"kubeedge": {"namespace": "plant"}}) == DeviceId("plant", "pump")
    assert device_id("Pump_1", {"kubeedge": {}}) == DeviceId("default", "Pump_1")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("line-a", "spec.kubeedge"),
        ({"namespace": "Line_A"}, "spec.kubeedge.namespace"),
        ({"namespace": ""}, "spec.kubeedge.namespace"),
        ({"namespace": "x" * 64}, "spec.kubeedge.namespace"),
        ({"name": "a/b"}, "spec.kubeedge.name"),
        ({"name": "+"}, "spec.kubeedge.name"),
        ({"name": 5}, "spec.kubeedge.name"),
        ({"nmespace": "x"}, "spec.kubeedge.nmespace"),
        ({"types": ["int"]}, "spec.kubeedge.types"),
        ({"types": {"t": "double"}}, "spec.kubeedge.types.t"),
        ({"types": {"t": "deleted"}}, "spec.kubeedge.types.t"),
        ({"types": {"bad key": "int"}}, "spec.kubeedge.types"),
        ({"types": {f"k{i}": "int" for i in range(1025)}}, "spec.kubeedge.types"),
    ],
)
def test_bad_spec_kubeedge(raw, field):
    with pytest.raises(KubeEdgeSpecError) as caught:
        kubeedge_spec("lamp", {"kubeedge": raw})
    assert caught.value.field == field


def test_device_id_of_a_resource():
    body = {"metadata": {"name": "x"}, "spec": {"kubeedge": {"namespace": "n"}}}
    assert device_id_of(body) == DeviceId("n", "x")
    assert device_id_of({"metadata": {"name": "y"}}) == DeviceId("default", "y")


def test_edgenode_names():
    assert edgenode_name(DeviceId("default", "thermo")) == "thermo"
    assert edgenode_name(DeviceId("line-a", "thermo")) == "line-a_thermo"
    assert edgenode_name(DeviceId("line-a", "t.1")) == "line-a_t.1"
    for bad in [DeviceId("Line", "x"), DeviceId("a", "X"), DeviceId("a", "x_y")]:
        with pytest.raises(ValueError, match="Kubernetes"):
            edgenode_name(bad)
    with pytest.raises(ValueError, match="128 characters"):
        edgenode_name(DeviceId("n" * 63, "x" * 70))


namespaces = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
names = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,40}[a-z0-9])?", fullmatch=True)


@given(namespaces, names)
def test_the_name_mapping_is_reversible(namespace, name):
    device = DeviceId(namespace, name)
    mapped = edgenode_name(device)
    assert DEVICE_NAME_PATTERN.match(mapped)
    assert device_id_from_name(mapped) == device


@given(namespaces, names, namespaces, names)
def test_two_kubeedge_devices_never_share_an_edgenode_name(ns1, n1, ns2, n2):
    if (ns1, n1) != (ns2, n2):
        assert edgenode_name(DeviceId(ns1, n1)) != edgenode_name(DeviceId(ns2, n2))


def test_conflicts():
    line_a = DeviceId("line-a", "thermo")
    others = [("thermo", DeviceId("default", "thermo")), ("legacy", line_a)]
    message = id_conflict("line-a_thermo", line_a, others)
    assert message is not None
    assert "device/legacy" in message
    assert "line-a/thermo" in message
    assert id_conflict("legacy", line_a, others) is None  # itself
    assert id_conflict("x", DeviceId("default", "x"), others) is None

    native = {"metadata": {"name": "line-a_thermo"}, "spec": {"node": "pi-1"}}
    message = name_conflict("line-a_thermo", line_a, native)
    assert message is not None
    assert "KubeEdge default/line-a_thermo" in message
    same = {
        "metadata": {"name": "line-a_thermo"},
        "spec": {"kubeedge": {"namespace": "line-a", "name": "thermo"}},
    }
    assert name_conflict("line-a_thermo", line_a, same) is None
    assert name_conflict("line-a_thermo", line_a, None) is None
    broken = {"metadata": {"name": "line-a_thermo"}, "spec": {"kubeedge": "nonsense"}}
    assert "not a KubeEdge device" in (name_conflict("line-a_thermo", line_a, broken) or "")


def test_index():
    index = DeviceIndex.from_specs(
        {
            "thermo": None,
            "line-a_thermo": {"kubeedge": {"namespace": "line-a", "name": "thermo"}},
            "copy": {"kubeedge": {"namespace": "line-a", "name": "thermo"}},  # a clash
            "broken": {"kubeedge": 5},  # served under default/broken
        }
    )
    assert index.name_of(DeviceId("default", "thermo")) == "thermo"
    assert index.name_of(DeviceId("line-a", "thermo")) == "copy"  # first by name keeps it
    assert index.duplicates == (("copy", "line-a_thermo", DeviceId("line-a", "thermo")),)
    assert index.name_of(DeviceId("default", "broken")) == "broken"
    assert index.name_of(DeviceId("default", "nobody")) is None
    assert index.spec_of("thermo") == KubeEdgeSpec(DeviceId("default", "thermo"))
    assert index.spec_of("line-a_thermo") is None
    assert [name for name, _ in index] == ["broken", "copy", "thermo"]
    assert len(index) == 3


def test_membership_changes():
    before = DeviceIndex.from_specs({"a": None, "b": None, "c": None})
    after = DeviceIndex.from_specs({"a": None, "c": {"kubeedge": {"namespace": "x"}}, "d": None})
    added, removed = after.changes_since(before)
    assert added == [("c", DeviceId("x", "c")), ("d", DeviceId("default", "d"))]
    assert removed == [DeviceId("default", "b"), DeviceId("default", "c")]
    assert after.changes_since(after) == ([], [])
