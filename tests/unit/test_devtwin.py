"""DeviceTwin on both backends: a device report on bytes, and every way a payload can be bad."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgenode.errors import TwinError, TwinLimitError

MAX_DEPTH = 32
MAX_DOCUMENT_BYTES = 65536


def body(data: bytes | None) -> Any:
    assert data is not None
    return json.loads(data)


def twin_with_desired(core, desired: dict[str, Any], now: float = 1.0):
    twin = core.DeviceTwin("lamp")
    outcome = twin.set_desired(json.dumps(desired).encode(), now)
    twin.commit()
    assert outcome.changed
    return twin


# ------------------------------------------------------------------ reports ----


def test_a_report_gives_the_reply_the_uplink_record_and_the_document_as_bytes(core):
    twin = core.DeviceTwin("lamp")
    outcome = twin.apply_report(b'{"reported": {"power": "on"}, "clientToken": "t-1"}', 100.0)
    assert outcome.code == 0
    assert outcome.reply == b'{"version":1,"clientToken":"t-1","timestamp":100.0}'
    assert outcome.twin_uplink == (
        b'{"device":"lamp","reported":{"power":"on"},"version":1,"ack":null,"timestamp":100.0}'
    )
    assert outcome.changed
    assert not outcome.ack_changed
    assert outcome.delta is None
    assert outcome.ack_uplink is None
    assert body(outcome.document)["metadata"]["reported"] == {"power": 100.0}


def test_a_prepared_report_changes_nothing_until_committed(core):
    twin = core.DeviceTwin("lamp")
    empty = twin.document()
    outcome = twin.apply_report(b'{"reported": {"a": 1}}', 1.0)
    assert twin.document() == empty
    assert twin.reported_version == 0
    twin.commit()
    assert twin.document() == outcome.document
    assert twin.reported_version == 1


def test_an_uncommitted_preparation_is_discarded_by_the_next_report(core):
    twin = core.DeviceTwin("lamp")
    twin.apply_report(b'{"reported": {"a": 1}}', 1.0)  # the store refused it, say
    outcome = twin.apply_report(b'{"reported": {"b": 2}}', 2.0)
    twin.commit()
    assert body(twin.document())["reported"] == {"b": 2}
    assert body(outcome.reply)["version"] == 1


def test_a_report_that_changes_nothing_bumps_nothing_and_stores_nothing(core):
    twin = core.DeviceTwin("lamp")
    twin.apply_report(b'{"reported": {"n": 1, "o": {"x": true}}}', 1.0)
    twin.commit()
    outcome = twin.apply_report(b'{"reported": {"n": 1.0, "o": {"x": true}}}', 2.0)
    assert outcome.code == 0
    assert not outcome.changed
    assert outcome.document is None
    assert outcome.twin_uplink is None
    assert outcome.reply == b'{"version":1,"timestamp":2.0}'


def test_the_delta_is_published_when_it_changes_and_cleared_when_it_empties(core):
    twin = twin_with_desired(core, {"power": "on", "level": 3})
    assert twin.delta_message() == b'{"version":1,"delta":{"power":"on","level":3}}'
    half = twin.apply_report(b'{"reported": {"power": "on"}}', 2.0)
    assert half.delta == b'{"version":1,"delta":{"level":3}}'
    twin.commit()
    same = twin.apply_report(b'{"reported": {"other": 1}}', 3.0)
    assert same.changed
    assert same.delta is None
    twin.commit()
    done = twin.apply_report(b'{"reported": {"level": 3.0}}', 4.0)
    assert done.delta == b""
    twin.commit()
    assert twin.delta_message() is None


def test_an_ack_is_recorded_and_sent_up_once(core):
    twin = twin_with_desired(core, {"power": "on"})
    outcome = twin.apply_report(
        b'{"ack": {"version": 1, "status": "rejected", "reason": "no"}}', 5.0
    )
    assert outcome.ack_changed
    assert not outcome.changed
    assert outcome.ack_uplink == (
        b'{"device":"lamp","ack":{"version":1,"status":"rejected","reason":"no",'
        b'"timestamp":5.0},"timestamp":5.0}'
    )
    twin.commit()
    again = twin.apply_report(b'{"ack": {"status": "rejected", "version": 1, "reason": "no"}}', 6.0)
    assert not again.ack_changed
    assert again.document is None


def test_output_is_json_dumps_compact_with_python_float_reprs(core):
    twin = core.DeviceTwin("lamp")
    payload = '{"reported": {"f": [1E16, 1e-07, 1.0, -0.0, 0.1], "s": "é\\u0001\\n\\""}}'
    outcome = twin.apply_report(payload.encode(), 1e16)
    assert outcome.twin_uplink is not None
    expected = json.dumps(
        {
            "device": "lamp",
            "reported": {"f": [1e16, 1e-07, 1.0, -0.0, 0.1], "s": 'é\x01\n"'},
            "version": 1,
            "ack": None,
            "timestamp": 1e16,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert outcome.twin_uplink == expected


def test_duplicate_keys_keep_the_last_value_at_the_first_position(core):
    twin = core.DeviceTwin("lamp")
    outcome = twin.apply_report(b'{"reported": {"a": 1, "b": 2, "a": 3}}', 1.0)
    assert b'"reported":{"a":3,"b":2}' in (outcome.twin_uplink or b"")


def test_integers_beyond_64_bits_are_kept_exactly(core):
    twin = core.DeviceTwin("lamp")
    big = 2**70 + 1
    outcome = twin.apply_report(f'{{"reported": {{"n": {big}, "m": -0}}}}'.encode(), 1.0)
    assert body(outcome.twin_uplink)["reported"] == {"n": big, "m": 0}
    twin.commit()
    # 2**70 as a float is not 2**70 + 1: a change; 2**70 exactly equals its float.
    assert twin.apply_report(f'{{"reported": {{"n": {float(big)!r}}}}}'.encode(), 2.0).changed
    twin.commit()
    same = twin.apply_report(f'{{"reported": {{"n": {2**70}}}}}'.encode(), 3.0)
    assert not same.changed


def test_a_stored_document_loads_back_into_the_same_twin(core):
    twin = twin_with_desired(core, {"a": {"b": 1}})
    twin.apply_report(b'{"reported": {"a": {"b": 2}}}', 2.0)
    twin.commit()
    document = twin.set_state("online", 3.0)
    assert document is not None
    twin.commit()
    loaded = core.DeviceTwin("lamp", document)
    assert loaded.document() == document
    assert loaded.delta_message() == twin.delta_message()
    assert loaded.set_state("online", 4.0) is None


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        (b"{", "stored twin is not JSON"),
        (b"\xff", "stored twin is not JSON"),
        (b"[]", "not a twin document of format 1"),
        (b'{"format": 2}', "not a twin document of format 1"),
        (b'{"format": 1, "version": 1, "metadata": {}}', "version and metadata must be objects"),
        (
            b'{"format": 1, "version": {}, "metadata": {}, "desired": []}',
            "desired is not an object",
        ),
        (
            b'{"format": 1, "version": {"desired": true, "reported": 0}, "metadata": '
            b'{"desired": {}, "reported": {}}, "desired": {}, "reported": {}}',
            "versions are not integers",
        ),
    ],
)
def test_a_stored_document_that_is_not_ours_is_a_value_error(core, stored, message):
    with pytest.raises(ValueError, match=message):
        core.DeviceTwin("lamp", stored)


def test_view_is_the_full_twin_with_its_delta(core):
    twin = twin_with_desired(core, {"power": "on"})
    view = body(twin.view(7.5, "tok"))
    assert view == {
        "desired": {"power": "on"},
        "reported": {},
        "delta": {"power": "on"},
        "version": {"desired": 1, "reported": 0},
        "metadata": {"desired": {"power": 1.0}, "reported": {}},
        "ack": None,
        "state": None,
        "timestamp": 7.5,
        "clientToken": "tok",
    }


@pytest.mark.parametrize(
    ("now", "error"), [(float("inf"), ValueError), (float("nan"), ValueError), (True, TypeError)]
)
def test_now_must_be_a_finite_number(core, now, error):
    twin = core.DeviceTwin("lamp")
    with pytest.raises(error, match="now must be"):
        twin.apply_report(b'{"reported": {}}', now)


# --------------------------------------------------------------- desired ----


def test_set_desired_merges_or_replaces(core):
    twin = twin_with_desired(core, {"a": 1, "b": 2})
    merged = twin.set_desired(b'{"b": null, "c": 3}', 2.0, merge=True)
    twin.commit()
    assert body(twin.document())["desired"] == {"a": 1, "c": 3}
    assert merged.delta == b'{"version":2,"delta":{"a":1,"c":3}}'
    twin.set_desired(b'{"z": 1}', 3.0)
    twin.commit()
    assert body(twin.document())["desired"] == {"z": 1}
    assert twin.desired_version == 3


def test_the_hubs_desired_version_is_adopted_and_never_goes_backwards(core):
    twin = core.DeviceTwin("lamp")
    first = twin.set_desired(b'{"power": "on"}', 1.0, version=40)
    twin.commit()
    assert first.delta == b'{"version":40,"delta":{"power":"on"}}'
    renumbered = twin.set_desired(b'{"power": "on"}', 2.0, version=45)
    twin.commit()
    assert (renumbered.changed, renumbered.delta) == (
        True,
        b'{"version":45,"delta":{"power":"on"}}',
    )
    assert not twin.set_desired(b'{"power": "on"}', 3.0, version=45).changed
    twin.set_desired(b'{"power": "off"}', 4.0, version=7)
    twin.commit()
    assert twin.desired_version == 46


@pytest.mark.parametrize(
    ("version", "error"),
    [(0, ValueError), (-3, ValueError), (2**63, ValueError), (True, TypeError), (2.0, TypeError)],
)
def test_a_desired_version_must_be_a_positive_64_bit_int(core, version, error):
    with pytest.raises(error, match="version must be"):
        core.DeviceTwin("lamp").set_desired(b"{}", 1.0, version=version)


def test_set_desired_raises_the_twin_engines_errors(core):
    twin = core.DeviceTwin("lamp")
    with pytest.raises(TwinLimitError, match="MAX_KEY_BYTES"):
        twin.set_desired(json.dumps({"k" * 300: 1}).encode(), 1.0)
    with pytest.raises(TwinError, match="desired payload must be a JSON object, not array"):
        twin.set_desired(b"[]", 1.0)
    with pytest.raises(TwinError, match="desired payload is not JSON"):
        twin.set_desired(b"{", 1.0)
    twin.set_desired(json.dumps({"a": "x" * 40000}).encode(), 1.0)
    twin.commit()
    with pytest.raises(TwinLimitError, match="merge result is"):
        twin.set_desired(json.dumps({"b": "y" * 40000}).encode(), 2.0, merge=True)


# ------------------------------------------------------------ bad reports ----


def deep(levels: int) -> str:
    return '{"k":' * (levels - 1) + "{}" + "}" * (levels - 1)


BAD_REPORTS = [
    pytest.param(b"not json", 400, "payload is not JSON: Expecting value", None, id="not-json"),
    pytest.param(b"", 400, "payload is not JSON: Expecting value", None, id="empty"),
    pytest.param(b"\xff{}", 400, "payload is not valid UTF-8 (byte 0)", None, id="not-utf8"),
    pytest.param(
        b'{"clientToken": "q", "x": "\xe9"}', 400, "not valid UTF-8 (byte 27)", "q", id="latin1"
    ),
    pytest.param(b"[1]", 400, "payload must be a JSON object, not array", None, id="array"),
    pytest.param(b"null", 400, "payload must be a JSON object, not null", None, id="null"),
    pytest.param(
        b'{"reported": {"t": NaN}, "clientToken": "n"}',
        400,
        "payload is not JSON: NaN is not JSON",
        "n",
        id="nan",
    ),
    pytest.param(
        b'{"clientToken": "b", "reported": {"n": ' + b"9" * 4301 + b"}}",
        400,
        "payload is not JSON: Exceeds the limit (4300 digits)",
        "b",
        id="huge-int",
    ),
    pytest.param(
        b'{"reported": {"s": "\\ud800"}, "clientToken": "s"}',
        400,
        "payload is not valid UTF-8: a \\u escape is a lone surrogate",
        "s",
        id="lone-surrogate",
    ),
    pytest.param(
        b'{"clientToken": "d", "reported": ' + b"[" * 64 + b"]" * 64 + b"}",
        400,
        "payload nests too deep to parse",
        "d",
        id="deeper-than-the-parser",
    ),
    pytest.param(
        b'{"clientToken": "d", "reported": ' + b"[" * 99_999 + b"]" * 99_999 + b"}",
        400,
        "payload nests too deep to parse",
        "d",
        id="hostile-nesting",
    ),
    pytest.param(
        b'{"clientToken": "d", "reported": ' + b"[" * 70 + b"}",
        400,
        "payload is not JSON",
        "d",
        id="deep-and-broken",
    ),
    pytest.param(
        f'{{"reported": {deep(MAX_DEPTH + 1)}, "clientToken": "deep"}}'.encode(),
        413,
        "twin document exceeds MAX_DEPTH=32 levels",
        "deep",
        id="over-depth-limit",
    ),
    pytest.param(
        json.dumps({"reported": {"big": "x" * MAX_DOCUMENT_BYTES}, "clientToken": "z"}).encode(),
        413,
        "twin document is 65546 bytes, over MAX_DOCUMENT_BYTES=65536",
        "z",
        id="over-size-limit",
    ),
    pytest.param(
        b'{"reported": {"x": [1, 1e400]}}',
        400,
        'value at "x[1]" is not a finite number: inf',
        None,
        id="infinity",
    ),
    pytest.param(
        b'{"reported": {}, "clientToken": 7}',
        400,
        "clientToken must be a string of 1 to 64 characters",
        None,
        id="token-type",
    ),
    pytest.param(
        json.dumps({"reported": {}, "clientToken": "é" * 64}).encode(),
        0,
        "",
        "é" * 64,
        id="token-of-64-characters",
    ),
    pytest.param(
        b'{"desired": {}, "clientToken": "w"}',
        403,
        "desired is owned by the cloud; a device writes reported",
        "w",
        id="desired",
    ),
    pytest.param(
        b'{"reported": {}, "zeta": 1, "\xc3\xa9\\u0007": 2}',
        400,
        "unknown field 'zeta'",
        None,
        id="unknown-field",
    ),
    pytest.param(
        b'{"reported": {}, "\\u00e9\\u0007": 2}',
        400,
        "unknown field 'é\\x07'",
        None,
        id="unknown-field-repr",
    ),
    pytest.param(b'{"clientToken": "e"}', 400, "an update needs reported or ack", "e", id="empty"),
    pytest.param(
        b'{"reported": [1]}', 400, "reported must be a JSON object, not array", None, id="list"
    ),
    pytest.param(b'{"ack": [1]}', 400, "ack must be a JSON object, not array", None, id="ack-list"),
    pytest.param(
        b'{"ack": {"version": 1, "status": "accepted", "when": 1}}',
        400,
        "unknown ack field 'when'",
        None,
        id="ack-field",
    ),
    pytest.param(
        b'{"ack": {"version": 1.0, "status": "accepted"}}',
        400,
        "ack.version must be an integer",
        None,
        id="ack-float",
    ),
    pytest.param(
        b'{"ack": {"version": 2, "status": "accepted"}}',
        400,
        "ack.version 2 is not a desired version (the desired version is 1)",
        None,
        id="ack-future",
    ),
    pytest.param(
        b'{"ack": {"version": 1, "status": ["accepted"]}}',
        400,
        "ack.status must be one of accepted, in-progress, rejected",
        None,
        id="ack-status-unhashable",
    ),
    pytest.param(
        json.dumps({"ack": {"version": 1, "status": "accepted", "reason": "r" * 1025}}).encode(),
        400,
        "ack.reason must be a string of at most 1024 characters",
        None,
        id="ack-reason",
    ),
]


@pytest.mark.parametrize(("payload", "code", "message", "token"), BAD_REPORTS)
def test_a_bad_report_is_refused_with_a_code_a_message_and_its_token(
    core, payload, code, message, token
):
    twin = twin_with_desired(core, {"power": "on"})
    before = twin.document()
    outcome = twin.apply_report(payload, 9.0)
    assert (outcome.code, outcome.token) == (code, token)
    assert message in outcome.message
    if code:
        assert outcome.reply == b""
        assert outcome.document is None
        twin.commit()
        assert twin.document() == before


def test_a_payload_over_4_mib_is_refused_unread(core):
    twin = core.DeviceTwin("lamp")
    payload = b'{"clientToken":"t","reported":{"x":"' + b"a" * core.MAX_PAYLOAD_BYTES + b'"}}'
    outcome = twin.apply_report(payload, 1.0)
    assert (outcome.code, outcome.token) == (413, None)
    assert outcome.message == f"payload is {len(payload)} bytes, over {core.MAX_PAYLOAD_BYTES}"
