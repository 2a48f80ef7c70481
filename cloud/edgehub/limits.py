"""Bounds on what clients send the hub's operator API: nesting, integer sizes, the values
JSON can carry, query integers, and the characters of text that ``edgectl`` prints.

Every operator input passes through here before anything else looks at it (apply
documents through ``resources.py``, JSON bodies through :func:`load_json`, query integers
through :func:`query_integer`), so hostile input costs bounded work and is answered with a
4xx naming the problem and the field, never a 500 and a traceback in the hub's log. Sizes
are bounded elsewhere: bodies by ``api.MAX_BODY_BYTES``, resources by
``resources.MAX_RESOURCE_BYTES`` (which bounds every string in them), request lines and
headers by aiohttp (8190 bytes each, at most 128 headers).

The walk over a value (:func:`check_value`) uses an explicit stack, never recursion.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from typing import Any, Final

MAX_DEPTH: Final = 64
"""Deepest nesting of maps and lists in any operator input; the top-level map is level 1.
The twin engine allows 32 levels in a desired document, which sits at level 3 of a Device
(document, spec, desired), so 64 leaves room; and it keeps every parser far from Python's
recursion limit of 1000 frames (PyYAML's composer spends about 3 frames per level, the C
JSON decoder raises RecursionError near 1000 levels). Deeper input is refused (422 in an
apply, 400 in a JSON body) before it is built."""

MAX_INTEGER_DIGITS: Final = 100
"""Longest integer accepted, in digits (and the longest integer literal, in characters,
once its sign, base prefix and underscores are set aside). Python 3.11 refuses to convert
strings of more than 4300 digits (``ValueError``) and YAML's hexadecimal and base-60
integers are built digit by digit (quadratic time for a huge literal), so a literal is
measured before it is converted. 100 digits is 332 bits: far beyond any 64-bit counter,
and the twin engine keeps such integers exactly."""

MAX_QUERY_INTEGER: Final = 2**63 - 1
"""Largest integer query parameter (``after``, ``limit``): SQLite's INTEGER. A larger one
would overflow the store's binding (``OverflowError``)."""

_INTEGER_LIMIT: Final = 10**MAX_INTEGER_DIGITS
_QUERY_INTEGER_RE: Final = re.compile(r"[0-9]{1,19}")
_QUERY_DIGITS_RE: Final = re.compile(rf"[0-9]{{1,{MAX_INTEGER_DIGITS}}}")
"""ASCII digits only: ``int()`` would also take spaces, underscores and other scripts'
digits (a full-width one, U+FF11)."""

_TYPE_NAMES: Final = {
    datetime.datetime: "a timestamp (quote it to keep it as text)",
    datetime.date: "a date (quote it to keep it as text)",
    bytes: "bytes (!!binary)",
    set: "a set (!!set)",
    tuple: "a pair list (!!omap, !!pairs)",
}


class InputError(ValueError):
    """Input over a bound or not representable: ``field`` is the dotted path (``""`` for
    the whole input), ``message`` says what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def too_deep() -> str:
    return f"nested deeper than {MAX_DEPTH} levels"


def integer_too_long(length: int) -> str:
    return f"integers have at most {MAX_INTEGER_DIGITS} digits; this one has {length}"


def check_integer_literal(text: str) -> None:
    """Refuse an integer literal too long to convert (before ``int()`` sees it)."""
    digits = text.lstrip("+-").replace("_", "")
    if len(digits) > MAX_INTEGER_DIGITS + 2:  # room for a 0x/0o/0b prefix
        raise InputError("", integer_too_long(len(digits)))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _scalar_problem(value: Any) -> str | None:
    """Why a leaf value cannot be stored and sent as JSON/CBOR, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "not valid Unicode: a lone surrogate (\\ud800-\\udfff) cannot be encoded"
        return None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        if value.bit_length() > 332 and abs(value) >= _INTEGER_LIMIT:  # 2**332 < 10**100
            return f"integers have at most {MAX_INTEGER_DIGITS} digits"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"not a finite number: {value!r}"
    for kind, name in _TYPE_NAMES.items():
        if isinstance(value, kind):
            return f"not JSON: {name}"
    return f"not JSON: a {type(value).__name__}"


def check_value(value: Any, path: str = "") -> None:
    """Raise :class:`InputError` at the first place ``value`` is nested deeper than
    :data:`MAX_DEPTH`, holds an integer over :data:`MAX_INTEGER_DIGITS` digits, a
    non-finite number, a string that is not valid Unicode, a map key that is not a string,
    or anything JSON cannot carry. ``path`` prefixes the field named in errors."""
    # (value, depth of the container holding it, its path): paths are built as the walk
    # goes, so an error names the field; no recursion, whatever the nesting.
    stack: list[tuple[Any, int, str]] = [(value, 0, path)]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, dict):
            if depth + 1 > MAX_DEPTH:
                raise InputError(where, too_deep())
            children = []
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InputError(where, f"map keys must be strings, got {key!r}")
                problem = _scalar_problem(key)
                if problem is not None:
                    raise InputError(where, f"key: {problem}")
                children.append((child, depth + 1, _join(where, key)))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            if depth + 1 > MAX_DEPTH:
                raise InputError(where, too_deep())
            stack.extend(
                (child, depth + 1, _join(where, i)) for i, child in reversed(list(enumerate(item)))
            )
        else:
            problem = _scalar_problem(item)
            if problem is not None:
                raise InputError(where, problem)


def _parse_int(text: str) -> int:
    check_integer_literal(text)
    return int(text)


def _refuse_constant(text: str) -> Any:
    raise InputError("", f"not JSON: {text} (JSON has no {text})")


def load_json(raw: bytes, path: str = "") -> Any:
    """Parse a JSON request body within the bounds above; :class:`InputError` (with the
    field under ``path``) for anything malformed or out of bounds."""
    try:
        value = json.loads(raw, parse_int=_parse_int, parse_constant=_refuse_constant)
    except RecursionError:
        # The C decoder counts its nesting against Python's recursion limit and gives up
        # near 1000 levels: cleanly, before any stack is at risk.
        raise InputError(path, too_deep()) from None
    except InputError as exc:
        raise InputError(path, exc.message) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(path, f"malformed JSON: {exc}") from None
    check_value(value, path)
    return value


def query_integer(text: str | None, name: str, default: int, *, cap: int | None = None) -> int:
    """A non-negative integer query parameter within SQLite's INTEGER. With ``cap`` (a
    parameter meaning "at most N": ``limit``, ``tailLines``, ``sinceSeconds``) a larger
    value, however large, is ``cap``; without, it is refused (``after``, ``offset``:
    positions). Either way at most ``MAX_INTEGER_DIGITS`` digits are read."""
    if text is None:
        return default
    if text.startswith("-") and _QUERY_INTEGER_RE.fullmatch(text[1:]):
        raise InputError(name, f"{name} must not be negative")
    if not _QUERY_DIGITS_RE.fullmatch(text):
        raise InputError(name, f"{name} must be an integer in [0, {MAX_QUERY_INTEGER}]")
    value = int(text)
    if cap is not None:
        return min(value, cap)
    if value > MAX_QUERY_INTEGER:
        raise InputError(name, f"{name} must be an integer in [0, {MAX_QUERY_INTEGER}]")
    return value


_TERMINAL_CONTROLS: Final = r"\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
"""DEL, the C1 controls (U+009B is a one-character ANSI escape introducer) and the Unicode
bidirectional marks, overrides and isolates (they reorder what a terminal shows: a name
can be made to read as another)."""
_TEXT_FORBIDDEN_RE: Final = re.compile(r"[\x00-\x08\x0b-\x1f" + _TERMINAL_CONTROLS + "]")
"""What text may not hold: every control character but tab and newline (ESC starts ANSI
escapes, CR rewrites a terminal line, BEL rings), and the characters above."""
_UNPRINTABLE_RE: Final = re.compile(r"[\x00-\x1f" + _TERMINAL_CONTROLS + "]")
"""What one table cell may not show raw: the above, and tabs and newlines too."""
_ESCAPES: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\x1b": "\\e"}


def text_problem(text: str) -> str | None:
    """Why ``text`` may not be stored as text that terminals show (a control character
    other than tab and newline, or a bidirectional override), or None. Operators' text
    is refused at apply with this message rather than escaped at every printer: kubectl,
    dashboards and scripts read it too."""
    match = _TEXT_FORBIDDEN_RE.search(text)
    if match is None:
        return None
    return (
        f"control character U+{ord(match.group()):04X} at position {match.start()} is not "
        "allowed in text (terminal escapes; tabs and newlines are fine)"
    )


def printable(text: str) -> str:
    """``text`` safe to print in one table cell: control characters (tabs and newlines
    too) and bidirectional overrides escaped as ``\\e``, ``\\n``, ``\\xNN`` or
    ``\\uNNNN``, so nothing a node or device reported can steer the operator's terminal
    or break the table's lines."""
    if _UNPRINTABLE_RE.search(text) is None:
        return text
    return _UNPRINTABLE_RE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _ESCAPES:
        return _ESCAPES[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
