"""Reading KubeEdge request payloads (devices/kubeedge/requests.py): types as Go's
encoding/json checks them, then meaning; refusals carry the event_id when readable."""

from __future__ import annotations

import json

import pytest

from edgenode.devices.kubeedge import requests
from edgenode.devices.kubeedge.requests import (
    PropertyChange,
    Refusal,
    StateUpdate,
    TwinUpdate,
    read_base_message,
    read_event_id,
    read_state_update,
    read_twin_update,
)
from edgenode.devtwin import MAX_PAYLOAD_BYTES

UNMARSHAL = requests.REASON_UNMARSHAL


def twin_update(twin, **extra) -> bytes:
    return json.dumps({"event_id": "e-1", "timestamp": 5, "twin": twin, **extra}).encode()


def test_a_full_update():
    payload = twin_update(
        {
            "temp": {
                "actual": {"value": "21.5", "metadata": {"timestamp": 1}},
                "expected": {"value": "22"},
                "optional": False,
                "metadata": {"type": "float"},
                "expected_version": {"cloud": 1, "edge": 2},
                "actual_version": None,
            },
            "gone": None,
            "marked": {"metadata": {"type": "deleted"}, "actual": {"value": "x"}},
            "untyped": {"actual": {"value": "x"}, "expected": {"value": ""}},
            "bare": {},
        },
        extra_field="ignored",
    )
    assert read_twin_update(payload) == TwinUpdate(
        "e-1",
        (
            PropertyChange("temp", False, "21.5", "22", "float"),
            PropertyChange("gone", delete=True),
            PropertyChange("marked", delete=True),
            PropertyChange("untyped", False, "x", None, None),
            PropertyChange("bare"),
        ),
    )


def test_type_names_are_left_for_later():
    # edgecore checks them with the values, after it has found the device (404 first).
    assert read_twin_update(b'{"twin": {"a": {"metadata": {"type": "nil"}}}}') == TwinUpdate(
        "", (PropertyChange("a", value_type="nil"),)
    )


def test_an_empty_twin_map_is_a_request_that_changes_nothing():
    assert read_twin_update(b'{"twin": {}}') == TwinUpdate("", ())


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", f"{UNMARSHAL}: payload is not JSON: Expecting value: line 1 column 1 (char 0)"),
        (b"\xff", f"{UNMARSHAL}: payload is not valid UTF-8 (byte 0)"),
        (b"[]", f"{UNMARSHAL}: payload must be a JSON object, not array"),
        (b'{"twin": NaN}', f"{UNMARSHAL}: payload is not JSON: NaN is not JSON"),
        (b"{}", requests.REASON_NO_TWIN),
        (b'{"twin": null}', requests.REASON_NO_TWIN),
        (b'{"twin": []}', f"{UNMARSHAL}: twin must be an object, not array"),
        (b'{"twin": {"a": 1}}', f"{UNMARSHAL}: twin.a must be an object, not number"),
        (
            b'{"twin": {"a": {"actual": "1"}}}',
            f"{UNMARSHAL}: twin.a.actual must be an object, not string",
        ),
        (
            b'{"twin": {"a": {"actual": {"value": 1}}}}',
            f"{UNMARSHAL}: twin.a.actual.value must be a string, not number",
        ),
        (
            b'{"twin": {"a": {"actual": {"value": "1", "metadata": {"timestamp": "now"}}}}}',
            f"{UNMARSHAL}: twin.a.actual.metadata.timestamp must be an integer, not string",
        ),
        (
            b'{"twin": {"a": {"optional": "yes"}}}',
            f"{UNMARSHAL}: twin.a.optional must be a boolean, not string",
        ),
        (
            b'{"twin": {"a": {"metadata": {"type": 1}}}}',
            f"{UNMARSHAL}: twin.a.metadata.type must be a string, not number",
        ),
        (
            b'{"twin": {"a": {"expected_version": {"cloud": 1.5}}}}',
            f"{UNMARSHAL}: twin.a.expected_version.cloud must be an integer, not number",
        ),
        (b'{"event_id": 7, "twin": {}}', f"{UNMARSHAL}: event_id must be a string, not number"),
        (
            b'{"timestamp": 1.5, "twin": {}}',
            f"{UNMARSHAL}: timestamp must be an integer, not number",
        ),
        (b'{"twin": {"a~": {}}}', requests.REASON_KEY),
        (b'{"twin": {"": {}}}', requests.REASON_KEY),
        # edgecore's twin module panics on these (nil pointer):
        (b'{"twin": {"a": {"actual": {}}}}', "twin.a.actual has no value: it needs a string value"),
        (
            b'{"twin": {"a": {"expected": {"value": null}}}}',
            "twin.a.expected has no value: it needs a string value",
        ),
    ],
)
def test_refusals(payload, reason):
    refused = read_twin_update(payload)
    assert isinstance(refused, Refusal)
    assert (refused.code, refused.reason) == (400, reason)


def test_type_errors_come_before_key_errors_as_in_edgecore():
    # Go's json.Unmarshal fails on the whole payload before any key is looked at.
    refused = read_twin_update(b'{"twin": {"bad~": {}, "ok": 5}}')
    assert isinstance(refused, Refusal)
    assert refused.reason.startswith(UNMARSHAL)


def test_too_many_properties():
    twin = {f"k{i}": {} for i in range(requests.MAX_PROPERTIES + 1)}
    refused = read_twin_update(twin_update(twin))
    assert isinstance(refused, Refusal)
    assert refused.reason == f"{UNMARSHAL}: 1025 properties, over 1024"
    assert isinstance(read_twin_update(twin_update(dict(list(twin.items())[:1024]))), TwinUpdate)


def test_hostile_nesting_and_size_are_refused_with_the_event_id():
    deep = b'{"event_id": "e-9", "twin": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    refused = read_twin_update(deep)
    assert refused == Refusal("e-9", 400, f"{UNMARSHAL}: payload nests too deep to parse")
    big = b'{"event_id": "e-8", "twin": {"a": {"actual": {"value": "' + b"x" * MAX_PAYLOAD_BYTES
    refused = read_twin_update(big + b'"}}}}')
    assert isinstance(refused, Refusal)
    assert refused.code == 400  # edgenode's 413, in KubeEdge's codes
    assert refused.reason.startswith(f"{UNMARSHAL}: payload is ")


@pytest.mark.parametrize(
    ("payload", "event_id"),
    [
        (b'{"event_id": "abc", "twin": 5}', "abc"),
        (b'{"event_id": "abc", oops', "abc"),  # not JSON: found in the raw bytes
        (b'{"event_id": "' + b"x" * 129 + b'", "twin": 5}', ""),
        (b'{"event_id": 12}', ""),
        (b"\xff\xfe", ""),
    ],
)
def test_event_id_of_refused_payloads(payload, event_id):
    refused = read_twin_update(payload)
    assert isinstance(refused, Refusal)
    assert refused.event_id == event_id


def test_read_event_id_directly():
    assert read_event_id({"event_id": "a"}, b"") == "a"
    assert read_event_id({"event_id": "\ud800"}, b"") == ""
    assert read_event_id(None, b'"event_id" : "z"') == "z"
    assert read_event_id(None, b'"event_id": "\xff"') == ""


def test_base_message():
    assert read_base_message(b'{"event_id": "g-1"}', requests.UNMARSHAL_GET) == "g-1"
    assert read_base_message(b'{"twin": {}}', requests.UNMARSHAL_GET) == ""
    assert read_base_message(b"", requests.UNMARSHAL_GET) == Refusal(
        "",
        400,
        "Unmarshal twin info failed, err: payload is not JSON: "
        "Expecting value: line 1 column 1 (char 0)",
    )
    assert read_base_message(b'{"event_id": ["x"]}', requests.UNMARSHAL_MEMBERSHIP) == Refusal(
        "", 400, "Unmarshal get membership info failed, err: event_id must be a string, not array"
    )


@pytest.mark.parametrize(
    ("state", "kept"),
    [
        ("online", "online"),
        ("OFFLINE", "offline"),
        ("Ok", "ok"),
        ("unknown", "unknown"),
        ("unhealthy", "unhealthy"),
    ],
)
def test_state_update(state, kept):
    payload = json.dumps({"event_id": "s-1", "state": state}).encode()
    assert read_state_update(payload) == StateUpdate("s-1", kept)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (
            b'{"event_id": "s-2"}',
            "Unmarshal device info failed, err: state must be a string, not null",
        ),
        (
            b'{"event_id": "s-2", "state": "on fire"}',
            "the device state must be one of online, offline, ok, unknown, unhealthy, "
            "not 'on fire'",
        ),
        (b'{"event_id": "s-2", "state": "' + b"x" * 100 + b'"}', None),
        (b'online "event_id": "s-2"', None),
    ],
)
def test_state_update_refusals(payload, reason):
    refused = read_state_update(payload)
    assert isinstance(refused, Refusal)
    assert (refused.event_id, refused.code) == ("s-2", 400)
    if reason is not None:
        assert refused.reason == reason
    assert len(refused.reason) < 200  # a reason never echoes what was sent at length
