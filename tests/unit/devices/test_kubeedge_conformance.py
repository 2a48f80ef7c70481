"""Conformance: the cases of KubeEdge's own unit tests, transcribed onto edgenode's API.

Sources (kubeedge/kubeedge at 16cd8548, edgecore v1.16+ with ``<namespace>/<name>`` IDs):

- ``edge/pkg/devicetwin/dtcommon/util_test.go``
- ``edge/pkg/devicetwin/dttype/types_test.go``
- ``edge/pkg/devicetwin/dttype/types_helper_test.go`` (message shapes)
- ``edge/pkg/devicetwin/dtmanager/twin_test.go``

Each case names its source file, Go test function and case name, restates what the Go
test sets up in edgenode's terms (a KubeEdge twin of type ``deleted`` is a property that
does not exist; an ``expected`` value is desired, an ``actual`` one reported; the Go
contexts become a :class:`KubeEdgeNode` over real DeviceTwins of both backends) and
asserts what KubeEdge asserts, on what a device sees over MQTT.

Cases marked ``DELIBERATE DIFFERENCE`` assert edgenode's behaviour instead; each is a row
of the differences table in docs/kubeedge.md.

Not transcribed, because edgenode has no counterpart to what they test:

- dttype/types_test.go: TestUpdateCloudVersionIncrement, TestUpdateEdgeVersionIncrement,
  TestCompareWithCloud, TestUpdateCloudVersion, TestUpdateEdgeVersion, TestCompareVersion
  (the per-property ``{cloud, edge}`` version vectors of edgecore <-> cloudcore sync; they
  never reach a device, and edgenode syncs with its hub by revisions and per-document
  versions); TestUnmarshalConnectedInfo (edgehub's connection events);
  TestUnmarshalDeviceTwinDocument (the node never reads a document);
- dtmanager/twin_test.go: TestStart, the "msg not Message type" and "invalid message
  content" cases, TestDealGetTwin_DeviceFound's missing-channel case and
  TestDealGetTwin_MalformedPayload_NoCommChan's return value, TestDealUpdateResult_NilError
  (edgecore's goroutine and channel plumbing); TestDealTwinSync,
  TestDealTwinSync_DeviceNotInContext, TestDealVersion, and every case with
  ``dealType: SyncDealType`` (the cloud's ``twin/cloud_updated`` sync path: edgenode's
  desired comes from its hub, never from MQTT);
- dtcommon/util_test.go: TestDataToAny and the ``chan``/``func``/``struct{}`` cases of
  TestConvertDevice and TestConvertDeviceProperty (Go values no YAML or JSON manifest
  can hold, converted for the DMI gRPC API edgenode does not speak);
  TestConvertDeviceModel is transcribed as "a DeviceModel applies as a no-op".
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kubeedge_node import KubeEdgeNode, actual, body, one, update

from edgenode.devices import kubeedge as ke
from edgenode.devices.kubeedge import requests, values
from edgenode.devices.kubeedge.crd import CrdError, Skipped, Translation, translate
from edgenode.devices.kubeedge.topics import DeviceId

UTIL_TEST = "edge/pkg/devicetwin/dtcommon/util_test.go"
TYPES_TEST = "edge/pkg/devicetwin/dttype/types_test.go"
HELPER_TEST = "edge/pkg/devicetwin/dttype/types_helper_test.go"
TWIN_TEST = "edge/pkg/devicetwin/dtmanager/twin_test.go"

DEVICE_A = DeviceId("default", "DeviceA")
DEVICE_B = DeviceId("default", "DeviceB")
EVENT1 = "Event1"


def topic(device: DeviceId, suffix: str) -> str:
    return ke.device_topic(device, suffix)


@pytest.fixture
def node(core) -> KubeEdgeNode:
    """edgecore's context of the dtmanager tests: DeviceB exists with an empty twin,
    DeviceA exists with one property of type ``deleted`` (= no property at all)."""
    return KubeEdgeNode(core.DeviceTwin, {"DeviceA": None, "DeviceB": None})


def twin_update(node: KubeEdgeNode, device: DeviceId, twin: Any, event_id: str = EVENT1) -> list:
    payload = json.dumps({"event_id": event_id, "timestamp": 0, "twin": twin}).encode()
    return node.handle(topic(device, "twin/update"), payload, 1.0)


def result(replies: list) -> dict[str, Any]:
    return one(replies, "twin/update/result")


# ===================================================== dtcommon/util_test.go ====


@pytest.mark.parametrize(
    ("case", "value_type", "value", "reason"),
    [
        ("ValidateValueNilSuccessCase", "", "test", None),
        ("ValidateValueStringSuccessCase", "string", "test", None),
        ("ValidateValueIntErrorCase", "int", "test", "the value is not int or integer"),
        ("ValidateValueFloatErrorCase", "float", "test", "the value is not float"),
        ("ValidateValueBoolErrorCase", "boolean", "test", "the bool value must be true or false"),
        ("ValidateValueDeletedSuccessCase", "deleted", "test", None),
        ("ValidateValueNotSupportedErrorCase", "test", "test", "the value type is not allowed"),
        ("ValidateValueIntSuccessCase", "int", "10", None),
        ("ValidateValueFloatSuccessCase", "float", "10.10", None),
        ("ValidateValueBoolTrueSuccessCase", "boolean", "true", None),
        ("ValidateValueBoolFalseSuccessCase", "boolean", "false", None),
    ],
)
def test_util_validate_value(case, value_type, value, reason):
    """util_test.go :: TestValidateValue / <case>."""
    assert values.validate_value(value_type, value) == reason


@pytest.mark.parametrize(
    ("case", "key", "valid"),
    [("ValidateTwinKeyFailCase", "test^", False), ("ValidateTwinKeySuccessCase", "test123", True)],
)
def test_util_validate_twin_key(node, case, key, valid):
    """util_test.go :: TestValidateTwinKey / <case>: checked by the function and over MQTT."""
    assert values.valid_twin_key(key) is valid
    answer = result(twin_update(node, DEVICE_B, {key: {"actual": {"value": "v"}}}))
    assert ("code" not in answer) is valid
    if not valid:
        assert (answer["code"], answer["reason"]) == (400, requests.REASON_KEY)


def test_util_validate_twin_value_fail_case(node):
    """util_test.go :: TestValidateTwinValue / ValidateTwinValueFailCase: "test^".

    DELIBERATE DIFFERENCE: KubeEdge refuses twin values outside ``[a-zA-Z0-9-_.,:/@#]``
    or longer than 512 characters; edgenode takes any string, within its twin limits.
    """
    answer = result(twin_update(node, DEVICE_B, {"key1": actual("test^")}))
    assert "code" not in answer
    assert node.view("DeviceB", 1.0)["reported"] == {"key1": "test^"}


def test_util_validate_twin_value_success_case(node):
    """util_test.go :: TestValidateTwinValue / ValidateTwinValueSuccessCase: "test123"."""
    answer = result(twin_update(node, DEVICE_B, {"key1": actual("test123")}))
    assert "code" not in answer


def kubeedge_device(name: str, **spec: Any) -> dict[str, Any]:
    """A Device as the Go tests build it (``metadata.name`` and a spec), plus the
    ``spec.nodeName`` edgenode requires (see test_util_convert_device_without_node)."""
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name},
        "spec": {"nodeName": "node-1", **spec},
    }


def test_util_convert_device_nil_device():
    """util_test.go :: TestConvertDevice / "nil device": an error."""
    with pytest.raises(CrdError):
        translate(None)


@pytest.mark.parametrize(
    ("case", "name", "spec"),
    [
        ("empty ConfigData", "test-device-empty-config", {"protocol": {"configData": {}}}),
        ("nil DeviceModelRef", "test-device-no-model", {}),
        (
            "device with multiple properties",
            "test-device-multiple-props",
            {
                "properties": [
                    {"name": "temp", "visitors": {"configData": {"topic": "temperature"}}},
                    {"name": "humidity", "visitors": {"configData": {"topic": "humidity"}}},
                ]
            },
        ),
        (
            "use spec state config",
            "test-device-spec-state",
            {
                "stateReport": {"reportCycle": 30, "reportToCloud": True},
                "properties": [
                    {"name": "pressure", "visitors": {"configData": {"topic": "pressure"}}}
                ],
            },
        ),
    ],
)
def test_util_convert_device(case, name, spec):
    """util_test.go :: TestConvertDevice / <case>: converted; name, namespace and model
    reference kept; as many properties, with the same names."""
    converted = translate(kubeedge_device(name, **spec))
    assert isinstance(converted, Translation), case
    assert converted.device == DeviceId("default", name)
    assert "model" not in converted.resource["spec"]  # no deviceModelRef: empty
    properties = spec.get("properties", [])
    kinds = {p["name"] for p in properties}
    assert set(converted.resource["spec"].get("kubeedge", {}).get("types", {})) <= kinds
    for index in range(len(properties)):
        assert f"spec.properties[{index}].visitors" in converted.ignored


def test_util_convert_device_with_nil_property():
    """util_test.go :: TestConvertDevice / "device with nil property" (``properties: [{}]``).

    DELIBERATE DIFFERENCE: KubeEdge converts a property without a name; edgenode refuses
    it (the name is the twin key: a nameless property could never be set or reported).
    """
    with pytest.raises(CrdError) as caught:
        translate(kubeedge_device("test-device-nil-property", properties=[{}]))
    assert caught.value.field == "spec.properties[0].name"


def test_util_convert_device_without_node():
    """Every TestConvertDevice device has no ``spec.nodeName``.

    DELIBERATE DIFFERENCE: KubeEdge keeps a Device bound to no node (no node serves it);
    edgenode refuses it, as an edgenode Device needs the node that serves it.
    """
    doc = kubeedge_device("test-device-no-model")
    del doc["spec"]["nodeName"]
    with pytest.raises(CrdError) as caught:
        translate(doc)
    assert caught.value.field == "spec.nodeName"


@pytest.mark.parametrize(
    ("case", "name", "kind_meta"),
    [
        ("basic model conversion", "test-model", False),
        ("model with complex data", "test-model-complex", True),
    ],
)
def test_util_convert_device_model(case, name, kind_meta):
    """util_test.go :: TestConvertDeviceModel / <case>: no error, name and namespace kept.
    A DeviceModel has nothing for edgenode: it applies as a no-op, said so."""
    doc = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "metadata": {"name": name, "namespace": "default"},
    }
    doc["kind"] = "DeviceModel"
    converted = translate(doc)
    assert isinstance(converted, Skipped), case
    assert converted.name == name


def test_util_convert_device_property_nil_property():
    """util_test.go :: TestConvertDeviceProperty / "nil property": an error."""
    with pytest.raises(CrdError) as caught:
        translate(kubeedge_device("d", properties=[None]))
    assert caught.value.field == "spec.properties[0]"


def test_util_convert_device_property_visitor_config_data_conversion_error():
    """util_test.go :: TestConvertDeviceProperty / "visitor config data conversion error"
    (a map inside ``visitors.configData``).

    DELIBERATE DIFFERENCE: KubeEdge fails converting it for its DMI gRPC API; edgenode
    does not read visitors (only a mapper does) and ignores them, so it converts.
    """
    prop = {"name": "test-prop", "visitors": {"configData": {"bad": {}}}}
    converted = translate(kubeedge_device("d", properties=[prop]))
    assert isinstance(converted, Translation)
    assert converted.ignored == ("spec.properties[0].visitors",)


def test_util_convert_device_property_successful_conversion():
    """util_test.go :: TestConvertDeviceProperty / "successful conversion": name kept."""
    prop = {"name": "test-prop", "visitors": {"configData": {"validKey": "validValue"}}}
    converted = translate(kubeedge_device("d", properties=[prop]))
    assert isinstance(converted, Translation)
    assert converted.device == DeviceId("default", "d")


# ====================================================== dttype/types_test.go ====


def test_types_set_event_id():
    """types_test.go :: TestSetEventID / SetEventIDTest: a message carries the event_id."""
    event_id = str(uuid.uuid4())
    message = ke.error_result("t", event_id, 400, "r", 1.0)
    assert body(message)["event_id"] == event_id


def test_types_build_base_message(node):
    """types_test.go :: TestBuildBaseMessage / BuildBaseMessageTest: a node-initiated
    message has a non-empty event_id and a non-zero timestamp (epoch ms)."""
    assert ke.new_event_id()
    (delta,) = node.set_desired("DeviceB", {"key1": "ON"}, 1700000000.123)
    message = body(delta)
    assert message["event_id"]
    assert message["timestamp"] == 1700000000123


def test_types_marshal_membership_update():
    """types_test.go :: TestMarshalMembershipUpdate / MarshalMembershipUpdateTest: added
    and removed devices with id, name, description and state; their twins carry no
    versions. (KubeEdge turns properties of type ``deleted`` into null; an edgenode twin
    holds no deleted properties: a deletion removes the value.)"""
    added = ke.Member(DeviceId("default", "DeviceA"), "Sensor", "ON", twin={})
    removed = ke.Member(DeviceId("default", "DeviceB"), "Sensor", "ON")
    message = ke.membership_updated("node-1", [added], [removed], 1.0, "e")
    assert message is not None
    assert body(message)["added_devices"] == [
        {
            "id": "default/DeviceA",
            "name": "DeviceA",
            "description": "Sensor",
            "state": "ON",
            "twin": {},
        }
    ]
    assert body(message)["removed_devices"] == [
        {"id": "default/DeviceB", "name": "DeviceB", "description": "Sensor", "state": "ON"}
    ]
    full = ke.member(DEVICE_A, {"desired": {"k": "v"}, "reported": {"k": "w"}})
    assert "expected_version" not in json.dumps(full.message(with_twin=True))


def test_types_unmarshal_device_twin_update_wrong_input(node):
    """types_test.go :: TestUnmarshalDeviceTwinUpdate / UnmarshalDeviceTwinUpdateTest-WrongInput:
    an empty payload is ErrorUnmarshal (400)."""
    answer = one(node.handle(topic(DEVICE_B, "twin/update"), b"", 1.0), "twin/update/result")
    assert answer["code"] == 400
    assert answer["reason"].startswith(requests.REASON_UNMARSHAL)


def test_types_unmarshal_device_twin_update_empty_twin(node):
    """types_test.go :: TestUnmarshalDeviceTwinUpdate / UnmarshalDeviceTwinUpdateTest-EmptyTwin:
    ``{"event_id":"","timestamp":0,"twin":null}`` is ErrorUpdate (400)."""
    payload = b'{"event_id":"","timestamp":0,"twin":null}'
    answer = one(node.handle(topic(DEVICE_B, "twin/update"), payload, 1.0), "twin/update/result")
    assert (answer["code"], answer["reason"]) == (400, requests.REASON_NO_TWIN)


def test_types_unmarshal_device_twin_update_wrong_key_format(node):
    """types_test.go :: TestUnmarshalDeviceTwinUpdate /
    UnmarshalDeviceTwinUpdateTest-WrongKeyFormat: key ``key~`` is ErrorKey (400)."""
    answer = result(twin_update(node, DEVICE_B, {"key~": {}}))
    assert (answer["code"], answer["reason"]) == (400, requests.REASON_KEY)


@pytest.mark.parametrize(
    ("case", "expected", "actual_value"),
    [
        ("UnmarshalDeviceTwinUpdateTest-WrongExpectedValue", "value~", "value~"),
        ("UnmarshalDeviceTwinUpdateTest-WrongActualValue", "value", "value~"),
    ],
)
def test_types_unmarshal_device_twin_update_wrong_values(node, case, expected, actual_value):
    """types_test.go :: TestUnmarshalDeviceTwinUpdate / <case>: ErrorValue in KubeEdge.

    DELIBERATE DIFFERENCE: any string is a value in edgenode (see
    test_util_validate_twin_value_fail_case); the update is accepted.
    """
    twin = {"key1": {"expected": {"value": expected}, "actual": {"value": actual_value}}}
    answer = result(twin_update(node, DEVICE_B, twin))
    assert "code" not in answer, case
    assert node.view("DeviceB", 1.0)["reported"] == {"key1": actual_value}


def test_types_unmarshal_device_twin_update_right_key_format(node):
    """types_test.go :: TestUnmarshalDeviceTwinUpdate /
    UnmarshalDeviceTwinUpdateTest-RightKeyFormat: key1 with expected and actual "value"
    (and timestamps) is accepted."""
    twin = {
        "key1": {
            "expected": {"value": "value", "metadata": {"timestamp": 1}},
            "actual": {"value": "value", "metadata": {"timestamp": 1}},
        }
    }
    answer = result(twin_update(node, DEVICE_B, twin))
    assert answer["event_id"] == EVENT1
    assert answer["twin"]["key1"]["actual"]["value"] == "value"


# ============================================== dttype/types_helper_test.go ====


def test_helper_unmarshal_base_message(node):
    """types_helper_test.go :: TestUnmarshalBaseMessage / -WrongFormat ("" is an error)
    and -RightFormat (a marshalled empty BaseMessage reads): over twin/get."""
    (wrong,) = node.handle(topic(DEVICE_B, "twin/get"), b"", 1.0)
    assert body(wrong)["code"] == 400
    (right,) = node.handle(topic(DEVICE_B, "twin/get"), b'{"event_id":"","timestamp":0}', 1.0)
    assert body(right) == {"event_id": "", "timestamp": 1000, "twin": {}}


def test_helper_build_device_twin_result_get(node):
    """types_helper_test.go :: TestBuildDeviceTwinResult / Test1 (dealType 0, get): the
    properties without their versions (and none of type deleted)."""
    node.set_desired("DeviceB", {"updated": "x"}, 1.0)
    (reply,) = node.handle(topic(DEVICE_B, "twin/get"), b'{"event_id":"g"}', 2.0)
    twin = body(reply)["twin"]
    assert set(twin) == {"updated"}
    assert "expected_version" not in twin["updated"]
    assert "actual_version" not in twin["updated"]


def test_helper_build_error_result():
    """types_helper_test.go :: TestBuildErrorResult / BuildErrorResultTest: event_id,
    code and reason as given."""
    message = body(ke.error_result("t", "", 1, "", 1.0))
    assert (message["event_id"], message["code"], message["reason"]) == ("", 1, "")


def test_helper_build_device_twin_delta_test(node):
    """types_helper_test.go :: TestBuildDeviceTwinDelta / BuildDeviceTwinDeltaTest:
    "twin" ON/OFF and "expected" ON/(none) are in the delta; "actual" (no expected) and
    "deleted" are not; ``twin`` lists the properties that have an expected value."""
    node.set_desired("DeviceB", {"twin": "ON", "expected": "ON"}, 1.0)
    replies = twin_update(node, DEVICE_B, {"twin": actual("OFF"), "actual": actual("ON")})
    delta = one(replies, "twin/update/delta")
    assert delta["delta"] == {"expected": "ON", "twin": "ON"}
    assert set(delta["twin"]) == {"expected", "twin"}
    assert "expected_version" not in json.dumps(delta)


def test_helper_build_device_twin_test(node):
    """types_helper_test.go :: TestBuildDeviceTwinDelta / BuildDeviceTwinTest: expected
    and actual both ON: no delta (and none is published)."""
    node.set_desired("DeviceB", {"twins": "ON"}, 1.0)
    replies = twin_update(node, DEVICE_B, {"twins": actual("ON")})
    assert not [m for m in replies if m.topic.endswith("/delta")]


def test_helper_build_device_twin_document(node):
    """types_helper_test.go :: TestBuildDeviceTwinDocument / BuildDeviceTwinDocumentTest:
    ``{event_id, timestamp, twin: {name: {last, current}}}``."""
    replies = twin_update(node, DEVICE_B, {"SensorTag": actual("ON")})
    document = one(replies, "twin/update/document")
    assert set(document) == {"event_id", "timestamp", "twin"}
    assert set(document["twin"]["SensorTag"]) == {"last", "current"}


def test_helper_build_membership_get_result(node):
    """types_helper_test.go :: TestBuildMembershipGetResult / BuildMembershipGetResultTest:
    ``{event_id, timestamp, devices}``, each device without its twin."""
    node.set_desired("DeviceA", {"k": "v"}, 1.0)
    (reply,) = node.handle("$hw/events/node/pi-1/membership/get", b'{"event_id":"m"}', 2.0)
    message = body(reply)
    assert set(message) == {"event_id", "timestamp", "devices"}
    assert message["devices"] == [
        {"id": "default/DeviceA", "name": "DeviceA"},
        {"id": "default/DeviceB", "name": "DeviceB"},
    ]


# =================================================== dtmanager/twin_test.go ====


def test_twin_deal_twin_get_case_3_unmarshal_fails(node):
    """twin_test.go :: TestDealTwinGet / "Case 3: Success; Unmarshal twin info fails in
    DealGetTwin()": an empty payload is answered with an error result (400)."""
    (reply,) = node.handle(topic(DEVICE_B, "twin/get"), b"", 1.0)
    assert reply.topic == topic(DEVICE_B, "twin/get/result")
    assert body(reply)["code"] == 400


def test_twin_deal_twin_get_case_4(node):
    """twin_test.go :: TestDealTwinGet / "Case 4: ... DealGetTwin()": a get whose payload
    is a whole twin update (keyTwinUpdateFunc) reads as a BaseMessage; DeviceB exists, so
    its twin is the answer, with the request's event_id."""
    payload = update(
        {"key1": {"expected": {"value": "value"}, "metadata": {"type": "nil"}}}, EVENT1
    )
    (reply,) = node.handle(topic(DEVICE_B, "twin/get"), payload, 1.0)
    assert body(reply) == {"event_id": EVENT1, "timestamp": 1000, "twin": {}}


def test_twin_deal_get_twin_not_found(node):
    """twin_test.go :: DealGetTwin's not-found branch (exercised by TestDealTwinGet): 404
    ``Device <id> not found while getting twin``, on the device's own topic."""
    nobody = DeviceId("default", "DeviceC")
    (reply,) = node.handle(topic(nobody, "twin/get"), b'{"event_id":"x"}', 1.0)
    assert reply.topic == topic(nobody, "twin/get/result")
    assert (body(reply)["code"], body(reply)["reason"]) == (
        404,
        "Device default/DeviceC not found while getting twin",
    )


def test_twin_deal_twin_update_case_3_unmarshal_fails(node):
    """twin_test.go :: TestDealTwinUpdate / "Case 3: Success; Unmarshal update request
    body fails in Updated()": ``{"event_id":"Event1","timestamp":0,"twin":null}``.

    KubeEdge answers ErrorUpdate with event_id "" on ``$hw/events/device//twin/update/result``.
    DELIBERATE DIFFERENCE: edgenode answers on DeviceB's own result topic with "Event1".
    """
    payload = b'{"event_id":"Event1","timestamp":0,"twin":null}'
    (reply,) = node.handle(topic(DEVICE_B, "twin/update"), payload, 1.0)
    assert reply.topic == topic(DEVICE_B, "twin/update/result")
    assert body(reply)["event_id"] == EVENT1
    assert (body(reply)["code"], body(reply)["reason"]) == (400, requests.REASON_NO_TWIN)


def test_twin_deal_twin_update_case_4_unknown_device(core):
    """twin_test.go :: TestDealTwinUpdate / "Case 4: Success; Begin to update twin of the
    device in Updated()": DeviceA is not in the context: 404 "update rejected due to the
    device is not existed" with the request's event_id."""
    only_b = KubeEdgeNode(core.DeviceTwin, {"DeviceB": None})
    twin = {
        "key1": {
            "expected": {"value": "value"},
            "actual": {"value": "value"},
            "metadata": {"type": "nil"},
        }
    }
    answer = result(twin_update(only_b, DEVICE_A, twin))
    assert answer == {
        "event_id": EVENT1,
        "timestamp": 1000,
        "code": 404,
        "reason": requests.REASON_UPDATE_NOT_FOUND,
    }


def test_twin_deal_device_twin_case_1_msg_twin_nil(node):
    """twin_test.go :: TestDealDeviceTwin / "Case 1: msgTwin is nil": ErrorUpdate."""
    answer = result(twin_update(node, DEVICE_B, None))
    assert (answer["code"], answer["reason"]) == (400, requests.REASON_NO_TWIN)


def test_twin_deal_device_twin_case_2_success(node):
    """twin_test.go :: TestDealDeviceTwin / "Case 2: Success Case": key1 with an expected
    value and type ``deleted`` on a device whose twin lacks key1: success."""
    twin = {"key1": {"expected": {"value": "value"}, "metadata": {"type": "deleted"}}}
    answer = result(twin_update(node, DEVICE_B, twin))
    assert "code" not in answer
    assert answer["twin"] == {"key1": None}


def test_twin_deal_device_twin_result_error(node):
    """twin_test.go :: TestDealDeviceTwinResult / "dealTwinResult error": a new property
    of type "nil": 400 "the value type is not allowed"."""
    twin = {"DeviceB": {"expected": {"value": "value"}, "metadata": {"type": "nil"}}}
    answer = result(twin_update(node, DEVICE_B, twin))
    assert (answer["code"], answer["reason"]) == (400, "the value type is not allowed")


def test_twin_deal_device_twin_trans_error(node):
    """twin_test.go :: TestDealDeviceTwinTrans / "DeviceTwinTrans error": the database
    write fails: the result is an error with the store's reason (edgecore: code 500).
    (Inside edgenode's device layer a failed commit is not answered at all: the message
    stays unacknowledged and comes again, docs/device-api.md "Delivery".)"""
    view = node.view_bytes("DeviceB", 1.0)
    twin = {"key1": {"expected": {"value": "value"}, "metadata": {"type": "deleted"}}}
    payload = json.dumps({"event_id": EVENT1, "twin": twin}).encode()
    plan = ke.plan_update(DEVICE_B, payload, view, None, 1.0)
    answer = body(ke.update_refused(plan, 500, "failed DB Operation", 1.0))
    assert answer == {
        "event_id": EVENT1,
        "timestamp": 1000,
        "code": 500,
        "reason": "failed DB Operation",
    }


def test_twin_deal_twin_delete_case_4(node):
    """twin_test.go :: TestDealTwinDelete / "Case 4: hasTwinExpected is true; hasTwinActual
    is true" (RestDealType, msgTwin nil): KubeEdge deletes the property, expected and
    actual, bumping both edge versions.

    DELIBERATE DIFFERENCE: a device owns only reported: ``null`` removes the actual value;
    the expected value (desired, the hub's) stays, and nothing counts a version per property.
    """
    node.set_desired("DeviceA", {"key1": "string"}, 1.0)
    twin_update(node, DEVICE_A, {"key1": actual("string", "string")})
    answer = result(twin_update(node, DEVICE_A, {"key1": None}))
    view = node.view("DeviceA", 1.0)
    assert view["reported"] == {}
    assert view["desired"] == {"key1": "string"}
    assert answer["twin"]["key1"]["expected"]["value"] == "string"
    assert "actual" not in answer["twin"]["key1"]


def test_twin_deal_twin_compare_case_1_msg_twin_nil(node):
    """twin_test.go :: TestDealTwinCompare / "Case 1: msgTwin nil": a property of type
    deleted (absent) and a null: no error."""
    answer = result(twin_update(node, DEVICE_A, {"key1": None}))
    assert "code" not in answer


def test_twin_deal_twin_compare_case_2_actual_error(node):
    """twin_test.go :: TestDealTwinCompare / "Case 2: actualOk is false; actualErr is not
    nil": actual "string" of type int: "the value is not int or integer"."""
    twin = {"key1": {"actual": {"value": "string"}, "optional": False, "metadata": {"type": "int"}}}
    answer = result(twin_update(node, DEVICE_A, twin))
    assert (answer["code"], answer["reason"]) == (400, "the value is not int or integer")


def test_twin_deal_twin_compare_case_5_success(node):
    """twin_test.go :: TestDealTwinCompare / "Case 5: expectedOk is true; actualOk is true":
    expected and actual "string" of type string: accepted."""
    twin = {
        "key1": {
            "expected": {"value": "string"},
            "actual": {"value": "string"},
            "optional": False,
            "metadata": {"type": "string"},
            "actual_version": {},
        }
    }
    answer = result(twin_update(node, DEVICE_A, twin))
    assert "code" not in answer
    assert node.view("DeviceA", 1.0)["reported"] == {"key1": "string"}


def test_twin_deal_twin_add_case_1_msg_twin_nil(node):
    """twin_test.go :: TestDealTwinAdd / "Case 1: msgTwin nil": KubeEdge refuses with
    "the request body is wrong".

    DELIBERATE DIFFERENCE: deleting a property that does not exist changes nothing and is
    accepted: QoS 1 delivers at least once, and a redelivered delete must not turn into an
    error.
    """
    answer = result(twin_update(node, DEVICE_A, {"key1": None}))
    assert "code" not in answer
    assert answer["twin"] == {"key1": None}


def test_twin_deal_twin_add_case_5_actual_error(node):
    """twin_test.go :: TestDealTwinAdd / "Case 5: msgTwin.Actual is not nil; ValidateValue()
    returns error; dealType=0": "the value is not int or integer"."""
    twin = {
        "key1": {
            "actual": {"value": "string"},
            "optional": True,
            "metadata": {"type": "int"},
            "expected_version": {},
            "actual_version": {},
        }
    }
    answer = result(twin_update(node, DEVICE_A, twin))
    assert (answer["code"], answer["reason"]) == (400, "the value is not int or integer")


def test_twin_deal_twin_add_case_7_no_values(node):
    """twin_test.go :: TestDealTwinAdd / "Case 7: msgTwin.Expected is nil; msgTwin.Actual is
    nil": no error (a property with nothing to write)."""
    twin = {"key1": {"expected_version": {}, "actual_version": {}}}
    answer = result(twin_update(node, DEVICE_A, twin))
    assert answer["twin"] == {"key1": {"optional": True, "metadata": {"type": "string"}}}


def test_twin_deal_msg_twin_case_1_invalid_device_id(node):
    """twin_test.go :: TestDealMsgTwin / "Case1: invalid device id": DeviceC is unknown
    (over MQTT edgecore answers 404 before DealMsgTwin is reached)."""
    twin = {"DeviceB": {"expected": {"value": "value"}, "metadata": {"type": "nil"}}}
    answer = result(twin_update(node, DeviceId("default", "DeviceC"), twin))
    assert answer["code"] == 404


def test_twin_deal_msg_twin_case_2_compare_error(node):
    """twin_test.go :: TestDealMsgTwin / "Case 2: dealTwinCompare error": property
    DeviceA (deleted) updated with expected and actual "string" of type int: "the value is
    not int or integer", and nothing changes."""
    twin = {
        "DeviceA": {
            "expected": {"value": "string"},
            "actual": {"value": "string"},
            "optional": False,
            "metadata": {"type": "int"},
            "actual_version": {},
        }
    }
    answer = result(twin_update(node, DEVICE_A, twin))
    assert (answer["code"], answer["reason"]) == (400, "the value is not int or integer")
    assert node.view("DeviceA", 1.0)["version"] == {"desired": 0, "reported": 0}


def test_twin_deal_msg_twin_case_3_success(node):
    """twin_test.go :: TestDealMsgTwin / "Case 3: Success case": property DeviceA (deleted)
    set to null: success, nothing changes."""
    answer = result(twin_update(node, DEVICE_A, {"DeviceA": None}))
    assert "code" not in answer
    assert node.view("DeviceA", 1.0)["version"] == {"desired": 0, "reported": 0}


def test_twin_deal_get_twin_device_found(node):
    """twin_test.go :: TestDealGetTwin_DeviceFound / "device found with CommChan - Send
    succeeds": a get with event_id Event1 is answered on the device's get/result topic."""
    (reply,) = node.handle(topic(DEVICE_B, "twin/get"), b'{"event_id":"Event1"}', 1.0)
    assert reply.topic == topic(DEVICE_B, "twin/get/result")
    assert body(reply)["event_id"] == EVENT1


def test_twin_deal_get_twin_malformed_payload(node):
    """twin_test.go :: TestDealGetTwin_MalformedPayload_NoCommChan: ``{bad json}`` takes
    the error branch: a 400 result."""
    (reply,) = node.handle(topic(DEVICE_B, "twin/get"), b"{bad json}", 1.0)
    assert body(reply)["code"] == 400


# ============================================ known KubeEdge bugs (issue 16) ====


def test_bug_an_actual_without_value_does_not_crash(node):
    """edgecore's twin module dereferences ``actual.value`` unchecked (dtmanager/twin.go,
    isTwinValueDiff and dealTwinAdd): ``{"actual": {}}`` panics it.

    DELIBERATE DIFFERENCE: refused with a 400 result.
    """
    for entry in ({"actual": {}}, {"expected": {"value": None}}):
        answer = result(twin_update(node, DEVICE_B, {"key1": entry}))
        assert answer["code"] == 400


def test_bug_identical_reports_bump_nothing(node):
    """edgecore's isTwinValueDiff never compares values: every report bumps the edge
    version, re-stamps the value and publishes a document.

    DELIBERATE DIFFERENCE: an identical report changes nothing and publishes no document.
    """
    twin_update(node, DEVICE_B, {"key1": actual("ON")})
    before = node.view("DeviceB", 1.0)
    replies = twin_update(node, DEVICE_B, {"key1": actual("ON")})
    assert node.view("DeviceB", 1.0)["version"] == before["version"]
    assert not [m for m in replies if m.topic.endswith("/document")]
