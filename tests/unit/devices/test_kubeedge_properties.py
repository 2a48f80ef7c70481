"""Hypothesis: round trips between edgenode twins and KubeEdge's messages, and hostile
input that must never raise (devices/kubeedge)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubeedge_node import KubeEdgeNode, body

from edgenode import _pure
from edgenode._backend import load_native
from edgenode.devices import kubeedge as ke
from edgenode.devices.kubeedge import values
from edgenode.devices.kubeedge.topics import DeviceId, MembershipRequest

THERMO = DeviceId("default", "thermo")
KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.,:/@#"

keys = st.text(KEY_ALPHABET, min_size=1, max_size=12)
scalars = st.one_of(
    st.text(max_size=12),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_values = st.recursive(
    st.one_of(scalars, st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
# Twin documents: top-level values are never null (a merge patch deletes with null),
# nested objects hold no nulls either (merge patches drop them).
documents = st.dictionaries(keys, json_values.filter(lambda v: v is not None), max_size=6).map(
    lambda doc: _pure.merge_patch({}, doc)
)
declared_types = st.dictionaries(keys, st.sampled_from(sorted(values.DECLARABLE_TYPES)), max_size=4)


def backends() -> list[Any]:
    native = load_native()
    return [_pure.DeviceTwin] + ([native.DeviceTwin] if native is not None else [])


def view_of(desired: dict[str, Any], reported: dict[str, Any]) -> dict[str, Any]:
    return {
        "desired": desired,
        "reported": reported,
        "delta": _pure.delta(desired, reported),
        "metadata": {"desired": {}, "reported": {}},
    }


@given(scalars)
def test_a_scalar_survives_text_and_type(value):
    value_type = values.infer_type(value)
    text = values.to_text(value)
    assert values.validate_value(value_type, text) is None
    back = values.to_json(text, value_type, value)
    assert values.same_json(back, value)
    assert type(back) is type(value)


@given(st.sampled_from(["int", "integer", "float", "boolean", "string", ""]), st.text(max_size=30))
def test_validate_and_convert_agree(value_type, text):
    problem = values.validate_value(value_type, text)
    if problem is None:
        converted = values.to_json(text, value_type)
        assert values.validate_value(value_type or "string", values.to_text(converted)) is None
    else:
        with pytest.raises(ValueError, match=problem):
            values.to_json(text, value_type)


@given(documents, documents, declared_types)
def test_a_twin_shown_to_kubeedge_reads_back_as_the_same_values(desired, reported, types):
    """edgenode twin view -> KubeEdge twin/get -> values: each expected and actual text,
    read with the type the message gives, is the twin's value again."""
    answer = body(ke.answer_get(THERMO, b"{}", view_of(desired, reported), types, 1.0))
    twin = answer["twin"]
    assert set(twin) == set(desired) | set(reported)
    for key, entry in twin.items():
        value_type = entry["metadata"]["type"]
        assert value_type in values.DECLARABLE_TYPES
        for side, doc in (("expected", desired), ("actual", reported)):
            if key not in doc:
                assert side not in entry
                continue
            # One type per property: desired's. A reported value of another JSON type
            # is shown as its text under that type (the twin itself disagrees).
            if side == "expected" or values.conforms(doc[key], value_type):
                back = values.to_json(entry[side]["value"], value_type, doc[key])
                assert values.same_json(back, doc[key]), (key, side, entry)


@pytest.mark.parametrize("device_twin", backends(), ids=["python", "rust"][: len(backends())])
@given(desired=documents, types=declared_types)
def test_a_mapper_that_echoes_the_delta_clears_it(device_twin, desired, types):
    """`edgectl twin set` -> KubeEdge delta -> a mapper reports each expected text with
    the type the delta gave as its actual -> edgenode's delta is empty: both APIs agree.
    (Desired values are of their declared types, as the hub ensures with
    ``values.type_problems``.)"""
    types = {k: t for k, t in types.items() if k not in desired or values.conforms(desired[k], t)}
    node = KubeEdgeNode(device_twin, {"thermo": {"kubeedge": {"types": types}}})
    messages = node.set_desired("thermo", desired, 1.0)
    if not _pure.delta(desired, {}):
        assert messages == []
        return
    (delta,) = messages
    message = body(delta)
    report = {
        key: {
            "actual": {"value": text},
            "metadata": {"type": message["twin"][key]["metadata"]["type"]},
        }
        for key, text in message["delta"].items()
    }
    payload = json.dumps({"event_id": "m", "twin": report}).encode()
    replies = node.handle("$hw/events/device/default/thermo/twin/update", payload, 2.0)
    assert "code" not in body(replies[0]), body(replies[0])
    assert node.view("thermo", 2.0)["delta"] == {}
    assert not [m for m in replies if m.topic.endswith("/delta")]


@given(declared_types, documents)
def test_declared_types_never_make_a_message_its_own_value_fails(types, desired):
    answer = body(ke.answer_get(THERMO, b"{}", view_of(desired, {}), types, 1.0))
    for entry in answer["twin"].values():
        text = entry["expected"]["value"]
        assert values.validate_value(entry["metadata"]["type"], text) is None


payloads = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda doc: json.dumps(doc).encode(),
        st.dictionaries(
            st.sampled_from(["event_id", "timestamp", "twin", "state", "x"]),
            st.one_of(
                json_values,
                st.dictionaries(
                    keys,
                    st.one_of(
                        st.none(),
                        json_values,
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "actual": st.one_of(
                                    json_values,
                                    st.fixed_dictionaries({}, optional={"value": json_values}),
                                ),
                                "expected": st.one_of(
                                    json_values,
                                    st.fixed_dictionaries({}, optional={"value": scalars}),
                                ),
                                "metadata": st.one_of(
                                    json_values,
                                    st.fixed_dictionaries(
                                        {},
                                        optional={
                                            "type": st.sampled_from(
                                                [*sorted(values.VALUE_TYPES), "x", ""]
                                            )
                                        },
                                    ),
                                ),
                                "optional": json_values,
                            },
                        ),
                    ),
                    max_size=4,
                ),
            ),
            max_size=4,
        ),
    ),
)


@given(payloads, documents, documents, declared_types)
def test_hostile_payloads_never_raise_and_are_always_answered_on_the_devices_topic(
    payload, desired, reported, types
):
    view = view_of(desired, reported)
    plan = ke.plan_update(THERMO, payload, view, types, 5.0)
    if plan.refusal is not None:
        assert plan.refusal.topic == "$hw/events/device/default/thermo/twin/update/result"
        refusal = body(plan.refusal)
        assert set(refusal) == {"event_id", "timestamp", "code", "reason"}
        assert refusal["code"] in (400, 404)
    else:
        assert plan.report is not None
        report = json.loads(plan.report)
        assert set(report) <= {"reported", "clientToken"}
        for key in report["reported"]:
            assert values.valid_twin_key(key)
    get = ke.answer_get(THERMO, payload, view, types, 5.0)
    assert get.topic.endswith("/twin/get/result")
    state = ke.plan_state_update(THERMO, payload, True, 5.0)
    assert state.reply.topic.endswith("/state/update/result")
    membership = ke.answer_membership_get(MembershipRequest("pi-1"), "pi-1", payload, [], 5.0)
    assert membership is not None
    for message in (get, state.reply, membership):
        assert "event_id" in body(message)


@pytest.mark.parametrize("device_twin", backends(), ids=["python", "rust"][: len(backends())])
@given(payloads)
def test_hostile_payloads_through_a_real_twin(device_twin, payload):
    node = KubeEdgeNode(device_twin, {"thermo": None})
    node.set_desired("thermo", {"target": 23, "fan": {"speed": 3}}, 1.0)
    for suffix in ("twin/update", "twin/get", "state/update"):
        replies = node.handle(f"$hw/events/device/default/thermo/{suffix}", payload, 2.0)
        assert replies
        assert replies[0].topic.endswith(f"{suffix}/result")
