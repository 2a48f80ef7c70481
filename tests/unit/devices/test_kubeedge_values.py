"""KubeEdge's typed strings and edgenode's JSON values (devices/kubeedge/values.py)."""

from __future__ import annotations

import math

import pytest

from edgenode.devices.kubeedge import values
from edgenode.devices.kubeedge.values import (
    BOOLEAN,
    DELETED,
    FLOAT,
    INT,
    INTEGER,
    STRING,
    conforms,
    infer_type,
    presented_type,
    same_json,
    to_json,
    to_text,
    valid_twin_key,
    validate_value,
)


@pytest.mark.parametrize(
    ("value_type", "value", "reason"),
    [
        (INT, "10", None),
        (INT, "-10", None),
        (INT, "+10", None),  # strconv.ParseInt takes a sign
        (INT, "007", None),  # and leading zeros
        (INTEGER, "9223372036854775807", None),
        (INTEGER, "-9223372036854775808", None),
        (INT, "9223372036854775808", values.REASON_NOT_INT),  # past int64
        (INT, "0" * 40 + "1", None),  # many zeros, small number
        (INT, "1" * 5000, values.REASON_NOT_INT),  # never int() 5000 digits
        (INT, " 1", values.REASON_NOT_INT),  # Python's int() would strip it
        (INT, "1_000", values.REASON_NOT_INT),  # Python's int() would take it
        (INT, "١٢", values.REASON_NOT_INT),  # Arabic-Indic digits: int() takes them
        (INT, "1.0", values.REASON_NOT_INT),
        (INT, "", values.REASON_NOT_INT),
        (FLOAT, "10.10", None),
        (FLOAT, "1e-7", None),
        (FLOAT, ".5", None),
        (FLOAT, "5.", None),
        (FLOAT, "-0", None),
        (FLOAT, "1e400", values.REASON_NOT_FLOAT),  # ParseFloat: ErrRange
        (FLOAT, "NaN", values.REASON_FLOAT_NOT_JSON),
        (FLOAT, "-Inf", values.REASON_FLOAT_NOT_JSON),
        (FLOAT, "infinity", values.REASON_FLOAT_NOT_JSON),
        (FLOAT, "0x1p-2", values.REASON_FLOAT_NOT_JSON),
        (FLOAT, "1,5", values.REASON_NOT_FLOAT),
        (FLOAT, "", values.REASON_NOT_FLOAT),
        (BOOLEAN, "true", None),
        (BOOLEAN, "false", None),
        (BOOLEAN, "True", values.REASON_NOT_BOOL),
        (BOOLEAN, "1", values.REASON_NOT_BOOL),
        (STRING, "any thing ~ at all ✓", None),
        (STRING, "", None),
        ("", "anything", None),  # no type: a string
        (DELETED, "anything", None),
        ("double", "1.5", values.REASON_TYPE_NOT_ALLOWED),  # edgecore refuses it too
        ("INT", "1", values.REASON_TYPE_NOT_ALLOWED),  # case matters to edgecore
    ],
)
def test_validate_value(value_type, value, reason):
    assert validate_value(value_type, value) == reason


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("temperature", True),
        ("a-b_c.d,e:f/g@h#i", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("with space", False),
        ("température", False),
        ("key\n", False),  # fullmatch: no trailing newline slips through
        ("key~", False),
    ],
)
def test_valid_twin_key(key, valid):
    assert valid_twin_key(key) is valid


@pytest.mark.parametrize(
    ("text", "value_type", "value"),
    [
        ("23", INT, 23),
        ("+23", INTEGER, 23),
        ("21.5", FLOAT, 21.5),
        ("10", FLOAT, 10.0),
        ("true", BOOLEAN, True),
        ("false", BOOLEAN, False),
        ("23", STRING, "23"),
        ("23", "", "23"),
    ],
)
def test_to_json(text, value_type, value):
    converted = to_json(text, value_type)
    assert converted == value
    assert type(converted) is type(value)


def test_to_json_refuses_what_validate_refuses():
    with pytest.raises(ValueError, match="not int"):
        to_json("abc", INT)
    with pytest.raises(ValueError, match="not allowed"):
        to_json("abc", "nil")


def test_to_json_reads_a_string_like_the_current_object():
    # A mapper echoing the text of an object keeps it an object...
    assert to_json('{"speed":3}', STRING, {"speed": 2}) == {"speed": 3}
    assert to_json("[1,2]", STRING, [0]) == [1, 2]
    # ...but only the same kind of container, and only valid JSON.
    assert to_json("[1,2]", STRING, {"a": 1}) == "[1,2]"
    assert to_json('{"speed":3}', STRING, "text") == '{"speed":3}'
    assert to_json('{"speed":', STRING, {}) == '{"speed":'
    assert to_json('{"x":NaN}', STRING, {}) == '{"x":NaN}'
    assert to_json("[" * 100_000, STRING, []) == "[" * 100_000  # no RecursionError
    # An int beyond 64 bits travels as a string and comes back an int.
    assert to_json(str(2**70), STRING, 2**64) == 2**70
    assert to_json("12", STRING, 2**64) == "12"  # 12 is no such int: the text stays
    assert to_json("12", STRING, 5) == "12"  # a 64-bit int has its own type


@pytest.mark.parametrize(
    ("value", "text", "value_type"),
    [
        ("on", "on", STRING),
        (True, "true", BOOLEAN),
        (False, "false", BOOLEAN),
        (23, "23", INT),
        (-(2**63), str(-(2**63)), INT),
        (2**63, str(2**63), STRING),  # past int64: edgecore could not read it as int
        (21.5, "21.5", FLOAT),
        (1e16, "1e+16", FLOAT),
        (1e-07, "1e-07", FLOAT),
        ({"speed": 3}, '{"speed":3}', STRING),
        ([1, "ü"], '[1,"ü"]', STRING),
    ],
)
def test_to_text_and_infer_type(value, text, value_type):
    assert to_text(value) == text
    assert infer_type(value) == value_type
    assert validate_value(value_type, text) is None


@pytest.mark.parametrize(
    ("value", "value_type", "ok"),
    [
        ("x", STRING, True),
        (1, STRING, False),
        (1, INT, True),
        (True, INT, False),
        (2**63, INTEGER, False),
        (1.5, INT, False),
        (1, FLOAT, True),
        (1.5, FLOAT, True),
        (10**400, FLOAT, False),
        (True, BOOLEAN, True),
        (0, BOOLEAN, False),
        ("x", DELETED, False),
        ("x", "nil", False),
    ],
)
def test_conforms(value, value_type, ok):
    assert conforms(value, value_type) is ok
    if ok:
        assert same_json(to_json(to_text(value), value_type), value)


def test_presented_type_prefers_a_declared_type_the_value_has():
    assert presented_type(23, FLOAT) == FLOAT
    assert presented_type(23, INTEGER) == INTEGER  # its spelling kept
    assert presented_type("on", BOOLEAN) == STRING  # never a type the value fails
    assert presented_type(23, None) == INT


def test_same_json():
    assert same_json(1, 1.0)
    assert not same_json(True, 1)
    assert not same_json("1", 1)
    assert same_json({"a": [1, {"b": 2.0}]}, {"a": [1.0, {"b": 2}]})
    assert not same_json({"a": 1}, {"a": 1, "b": 2})
    assert not same_json([1], [1, 2])
    assert not same_json(math.nan, math.nan)


def test_type_problems():
    types = {"t": FLOAT, "on": BOOLEAN, "name": STRING, "absent": INT}
    assert values.type_problems({"t": 23, "on": True, "name": "x"}, types) == []
    assert values.type_problems({"t": "warm", "on": 1, "other": 5}, types) == [
        "desired.t is 'warm', not a float (spec.kubeedge.types.t)",
        "desired.on is '1', not a boolean (spec.kubeedge.types.on)",
    ]
