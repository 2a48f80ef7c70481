"""KubeEdge's twin values: strings with a type name, and edgenode's JSON values.

KubeEdge keeps every twin value as a string and names its type beside it
(``metadata.type``: ``string``, ``int``, ``integer``, ``float``, ``boolean``, or the marker
``deleted``); edgecore checks the string against the type with ``dtcommon.ValidateValue``.
edgenode's twins hold JSON values. This module converts between the two:

- :func:`validate_value` is KubeEdge's ``ValidateValue`` (same verdicts, same reasons),
  except that a float must be finite and written in decimal: JSON has no NaN, Infinity or
  hexadecimal floats, which Go's ``strconv.ParseFloat`` accepts;
- :func:`to_json` turns a validated string into the JSON value stored in the twin
  (``"23"`` of type ``int`` is ``23``), :func:`to_text` turns a JSON value back into
  KubeEdge's string, and :func:`infer_type` names the type of a JSON value; so a value
  set with ``edgectl twin set x=23`` reaches a mapper as ``"23"`` of type ``int``, and a
  mapper's ``"21.5"`` of type ``float`` shows as ``21.5`` in ``edgectl twin get``;
- :func:`valid_twin_key` is KubeEdge's ``ValidateTwinKey``. Its ``ValidateTwinValue``
  (the same character set, at most 512 characters) is deliberately *not* applied: any
  string is a value, bounded by the twin engine's own limits (docs/kubeedge.md).

Pure functions: no I/O, no state.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

STRING: Final = "string"
INT: Final = "int"
INTEGER: Final = "integer"
FLOAT: Final = "float"
BOOLEAN: Final = "boolean"
DELETED: Final = "deleted"

VALUE_TYPES: Final = frozenset({STRING, INT, INTEGER, FLOAT, BOOLEAN, DELETED})
"""The type names ``ValidateValue`` allows (and ``""``, which it reads as ``string``)."""
DECLARABLE_TYPES: Final = frozenset({STRING, INT, INTEGER, FLOAT, BOOLEAN})
"""The types a property can be declared with (``deleted`` only marks a removal)."""

# KubeEdge's reasons (edge/pkg/devicetwin/dtcommon/util.go, ValidateValue), verbatim.
REASON_NOT_INT: Final = "the value is not int or integer"
REASON_NOT_FLOAT: Final = "the value is not float"
REASON_NOT_BOOL: Final = "the bool value must be true or false"
REASON_TYPE_NOT_ALLOWED: Final = "the value type is not allowed"
# Ours: Go's ParseFloat accepts these, JSON cannot hold them.
REASON_FLOAT_NOT_JSON: Final = (
    "the value is not float: NaN, Infinity and hexadecimal floats have no JSON form"
)

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
_INT64_DIGITS: Final = 19

# ValidateTwinKey: ^[a-zA-Z0-9-_.,:/@#]{1,128}$ (ASCII only, so characters are bytes).
_TWIN_KEY: Final = re.compile(r"[a-zA-Z0-9\-_.,:/@#]{1,128}")
# strconv.ParseInt(s, 10, 64): an optional sign, ASCII digits, nothing else.
_DECIMAL_INT: Final = re.compile(r"[+-]?[0-9]+")
# strconv.ParseFloat's decimal form (Go allows no underscores without a base prefix).
_DECIMAL_FLOAT: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# What else ParseFloat accepts: inf, infinity, nan (any case), hexadecimal mantissas.
_GO_ONLY_FLOAT: Final = re.compile(
    r"[+-]?(?:inf|infinity|nan|0x[0-9a-f_.]+(?:p[+-]?[0-9_]+)?)", re.IGNORECASE
)

_encode_compact: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False
).encode


def valid_twin_key(key: str) -> bool:
    """KubeEdge's ``ValidateTwinKey``: 1 to 128 of ``a-z A-Z 0-9 - _ . , : / @ #``."""
    return _TWIN_KEY.fullmatch(key) is not None


def _parse_int(value: str) -> int | None:
    if _DECIMAL_INT.fullmatch(value) is None:
        return None
    # Bound the digits before int(): "0000…1" is valid, a 5000-digit number is not.
    if len(value.lstrip("+-").lstrip("0")) > _INT64_DIGITS:
        return None
    number = int(value)
    return number if INT64_MIN <= number <= INT64_MAX else None


def _parse_float(value: str) -> float | None:
    if _DECIMAL_FLOAT.fullmatch(value) is None:
        return None
    number = float(value)
    # ParseFloat refuses values beyond the float64 range (ErrRange); float() says inf.
    return number if math.isfinite(number) else None


def validate_value(value_type: str, value: str) -> str | None:
    """KubeEdge's ``ValidateValue``: None if ``value`` is a ``value_type``, else the reason.

    ``""`` is read as ``string``; ``deleted`` accepts anything; an unknown type name is
    refused whatever the value.
    """
    if value_type in ("", STRING, DELETED):
        return None
    if value_type in (INT, INTEGER):
        return None if _parse_int(value) is not None else REASON_NOT_INT
    if value_type == FLOAT:
        if _parse_float(value) is not None:
            return None
        if _GO_ONLY_FLOAT.fullmatch(value) is not None:
            return REASON_FLOAT_NOT_JSON
        return REASON_NOT_FLOAT
    if value_type == BOOLEAN:
        return None if value in ("true", "false") else REASON_NOT_BOOL
    return REASON_TYPE_NOT_ALLOWED


def _shown_as_string(value: Any) -> bool:
    """A JSON value no KubeEdge type but ``string`` can carry: an object, an array, an
    integer beyond 64 bits."""
    kind = type(value)
    return kind is dict or kind is list or (kind is int and infer_type(value) == STRING)


def _parse_like(text: str, like: Any) -> Any:
    """``text`` parsed as JSON if it is a value of the same JSON type as ``like`` that only
    a string can carry, else None (the text stays a string)."""
    if not text or text[0] not in "{[-0123456789":
        return None
    try:
        parsed = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None
    return parsed if type(parsed) is type(like) and _shown_as_string(parsed) else None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def to_json(value: str, value_type: str, like: Any = None) -> Any:
    """The JSON value of a KubeEdge string of ``value_type`` (ValueError if invalid).

    ``like`` is the property's current value: when it is one only a ``string`` can carry
    (an object, an array, an integer beyond 64 bits), a string that parses as a value of
    the same JSON type is stored parsed, so that a mapper echoing the text it was given
    (:func:`to_text` of the value) leaves the twin as it was.
    """
    problem = validate_value(value_type, value)
    if problem is not None:
        raise ValueError(problem)
    if value_type in (INT, INTEGER):
        return _parse_int(value)
    if value_type == FLOAT:
        return _parse_float(value)
    if value_type == BOOLEAN:
        return value == "true"
    if _shown_as_string(like):
        parsed = _parse_like(value, like)
        if parsed is not None:
            return parsed
    return value


def to_text(value: Any) -> str:
    """KubeEdge's string of a JSON value: ``23`` -> ``"23"``, ``true`` -> ``"true"``,
    ``21.5`` -> ``"21.5"`` (Python's shortest repr, which Go parses to the same float),
    strings as they are, objects and arrays as compact JSON text."""
    kind = type(value)
    if kind is str:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return repr(value)
    return str(_encode_compact(value))


def infer_type(value: Any) -> str:
    """The KubeEdge type of a JSON value: bool ``boolean``, a 64-bit int ``int``, float
    ``float``; everything else (strings, larger ints, objects, arrays, null) ``string``,
    as :func:`to_text` writes it."""
    kind = type(value)
    if kind is bool:
        return BOOLEAN
    if kind is int:
        return INT if INT64_MIN <= value <= INT64_MAX else STRING
    if kind is float:
        return FLOAT
    return STRING


def conforms(value: Any, value_type: str) -> bool:
    """True if the JSON value is one of ``value_type``, so that :func:`to_text` of it
    passes :func:`validate_value` and :func:`to_json` gives the value back (an int is a
    float too: ``23`` of type ``float`` is ``"23"``, read back as ``23.0 == 23``)."""
    kind = type(value)
    if value_type == STRING:
        return kind is str
    if value_type in (INT, INTEGER):
        return kind is int and INT64_MIN <= value <= INT64_MAX
    if value_type == FLOAT:
        return (kind is float and math.isfinite(value)) or (
            kind is int and _parse_float(str(value)) is not None
        )
    if value_type == BOOLEAN:
        return kind is bool
    return False


def presented_type(value: Any, declared: str | None) -> str:
    """The type shown to KubeEdge clients for a value: the declared type when the value
    is one, else the type of the value itself (a message never names a type its own
    value fails)."""
    if declared is not None and conforms(value, declared):
        return declared
    return infer_type(value)


def type_problems(desired: Mapping[str, Any], types: Mapping[str, str]) -> list[str]:
    """Why desired values do not fit their declared types (empty: they all do). The hub
    should refuse such a desired document (a Device's ``spec.desired`` or ``edgectl twin
    set``): a device reads its property with the declared type, so a value of another
    type could never be reported back and would stay in the delta."""
    problems: list[str] = []
    for key, value_type in types.items():
        if key in desired and not conforms(desired[key], value_type):
            problems.append(
                f"desired.{key} is {to_text(desired[key])[:32]!r}, not a {value_type} "
                f"(spec.kubeedge.types.{key})"
            )
    return problems


def same_json(a: Any, b: Any) -> bool:
    """JSON equality as the twin engine compares: same JSON types (``true`` is not ``1``)
    except numbers, which compare by value (``1 == 1.0``)."""
    kind_a, kind_b = type(a), type(b)
    if kind_a in (int, float) and kind_b in (int, float):
        return bool(a == b)
    if kind_a is not kind_b:
        return False
    if kind_a is dict:
        return len(a) == len(b) and all(k in b and same_json(v, b[k]) for k, v in a.items())
    if kind_a is list:
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
