"""The twin engine in pure Python: limits, RFC 7386 merge patch, delta, per-key timestamps.

This module is the executable specification of ``crates/edgecore_fast/src/twin.rs`` and
``py_twin.rs``: same functions, same results, same exception classes and messages.

A twin document is a JSON object held as Python objects of *exact* JSON types: ``dict``
with ``str`` keys, ``list``, ``str``, ``int``, finite ``float``, ``bool`` and ``None``.
Anything else (tuple, set, bytes, subclasses such as ``OrderedDict``, non-``str`` keys,
NaN or infinity) is a :class:`~edgenode.errors.TwinError` naming the offending path,
e.g. ``value at "a.b[2]" is not a JSON value: set``.

Every input is checked before any other work, in this order, and the first problem wins:

1. the top level is a ``dict`` (``<what> must be a JSON object, not list``);
2. one pre-order walk (keys in insertion order, each key before its value) that stops
   at the first non-JSON value, non-finite float, non-``str`` key, key over
   :data:`MAX_KEY_BYTES` or container nesting deeper than :data:`MAX_DEPTH`. The walk
   never descends past ``MAX_DEPTH``, so hostile nesting cannot exhaust the stack;
3. encoding: the first string (key or value, pre-order) that is not valid UTF-8 (a lone
   surrogate) or integer too large for Python's int-to-str conversion;
4. the size: the compact UTF-8 JSON encoding
   (``json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()``) may have at
   most :data:`MAX_DOCUMENT_BYTES` bytes.

Results are new objects that share no ``dict`` or ``list`` with any argument, so callers
may mutate them freely; arguments are never mutated. Dict results keep the key order of
the first argument, with new keys appended in the order of the second.

This module must not do I/O or keep state: it is called on the hot path of every twin
update.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final, NoReturn

from edgenode.errors import TwinError, TwinLimitError

MAX_DEPTH: Final = 32
"""Deepest nesting of objects and arrays; the top-level object is level 1."""
MAX_DOCUMENT_BYTES: Final = 65536
"""Largest compact UTF-8 JSON encoding of a document, in bytes."""
MAX_KEY_BYTES: Final = 256
"""Longest object key, in UTF-8 bytes."""

# A key of at most this many code points has at most MAX_KEY_BYTES UTF-8 bytes (a code
# point takes at most 4), so only longer keys are encoded to be measured.
_KEY_CHARS_ALWAYS_FIT: Final = MAX_KEY_BYTES // 4
# How much of an over-long key an error message shows.
_KEY_SHOWN_CHARS: Final = 32
_INF: Final = float("inf")

_TOO_DEEP: Final = f"twin document exceeds MAX_DEPTH={MAX_DEPTH} levels"
_NOW_NOT_FINITE: Final = "now must be a finite number of seconds"

# json.dumps(doc, separators=(",", ":"), ensure_ascii=False) without re-building the
# encoder on every call. No circular check: the depth limit is enforced first.
_encode_compact: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False
).encode


# ---------------------------------------------------------------- checking ----


class _Fault(Exception):
    """A problem found deep in a document; each frame on the way out adds its path segment."""

    def __init__(self, cls: type[TwinError], message: Callable[[str], str]) -> None:
        super().__init__()
        self.cls = cls
        self.message = message
        self.segments: list[str | int] = []  # innermost first

    def error(self) -> TwinError:
        return self.cls(self.message(_format_path(self.segments[::-1])))


def _printable(key: str) -> str:
    """``key`` for a message: lone surrogates become U+FFFD (as Rust's lossy conversion)."""
    if key.isascii():
        return key
    try:
        key.encode()
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return key


def _format_path(segments: list[str | int]) -> str:
    """``["a", "b", 2]`` -> ``a.b[2]``."""
    parts: list[str] = []
    for position, segment in enumerate(segments):
        if type(segment) is int:
            parts.append(f"[{segment}]")
        elif position:
            parts.append("." + _printable(str(segment)))
        else:
            parts.append(_printable(str(segment)))
    return "".join(parts)


def _not_json(value: object) -> _Fault:
    name = type(value).__name__
    return _Fault(TwinError, lambda path: f'value at "{path}" is not a JSON value: {name}')


def _not_finite(value: float) -> _Fault:
    shown = repr(value)
    return _Fault(TwinError, lambda path: f'value at "{path}" is not a finite number: {shown}')


def _key_not_str(key: object) -> _Fault:
    name = type(key).__name__

    def message(path: str) -> str:
        where = f'the object at "{path}"' if path else "the top-level object"
        return f"key of {where} is not a string: {name}"

    return _Fault(TwinError, message)


def _check_key_length(key: str) -> None:
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        return  # not UTF-8 at all: reported by the encoding step, after the walk
    if size > MAX_KEY_BYTES:
        shown = key if len(key) <= _KEY_SHOWN_CHARS else key[:_KEY_SHOWN_CHARS] + "…"
        raise TwinLimitError(f'key "{shown}" exceeds MAX_KEY_BYTES={MAX_KEY_BYTES} bytes')


def _walk_dict(obj: dict[Any, Any], depth: int, check_keys: bool) -> None:
    if depth > MAX_DEPTH:
        raise TwinLimitError(_TOO_DEEP)
    for key, value in obj.items():
        if type(key) is not str:
            raise _key_not_str(key)
        if check_keys and len(key) > _KEY_CHARS_ALWAYS_FIT:
            _check_key_length(key)
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            continue
        try:
            if kind is dict:
                _walk_dict(value, depth + 1, check_keys)
            elif kind is list:
                _walk_list(value, depth + 1, check_keys)
            elif kind is float:
                if not -_INF < value < _INF:
                    raise _not_finite(value)
            else:
                raise _not_json(value)
        except _Fault as fault:
            fault.segments.append(key)
            raise


def _walk_list(obj: list[Any], depth: int, check_keys: bool) -> None:
    if depth > MAX_DEPTH:
        raise TwinLimitError(_TOO_DEEP)
    for index, value in enumerate(obj):
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            continue
        try:
            if kind is dict:
                _walk_dict(value, depth + 1, check_keys)
            elif kind is list:
                _walk_list(value, depth + 1, check_keys)
            elif kind is float:
                if not -_INF < value < _INF:
                    raise _not_finite(value)
            else:
                raise _not_json(value)
        except _Fault as fault:
            fault.segments.append(index)
            raise


def _check_structure(doc: object, what: str, *, check_keys: bool = True) -> dict[str, Any]:
    """Steps 1 and 2 of the module docstring; returns ``doc`` typed as an object."""
    if type(doc) is not dict:
        raise TwinError(f"{what} must be a JSON object, not {type(doc).__name__}")
    try:
        _walk_dict(doc, 1, check_keys)
    except _Fault as fault:
        raise fault.error() from None
    return doc


def _encoding_fault_in_value(value: Any) -> None:
    """Raise a _Fault if ``value`` holds a lone surrogate or an int that cannot become text."""
    kind = type(value)
    if kind is str:
        try:
            value.encode()
        except UnicodeEncodeError:
            raise _Fault(
                TwinError, lambda path: f'string at "{path}" is not valid UTF-8 (lone surrogate)'
            ) from None
    elif kind is int:
        try:
            str(value)
        except ValueError:
            raise _Fault(
                TwinError, lambda path: f'integer at "{path}" is too large to encode as JSON'
            ) from None
    elif kind is dict:
        for key, item in value.items():
            try:
                try:
                    key.encode()
                except UnicodeEncodeError:
                    raise _Fault(
                        TwinError,
                        lambda path: f'key at "{path}" is not valid UTF-8 (lone surrogate)',
                    ) from None
                _encoding_fault_in_value(item)
            except _Fault as fault:
                fault.segments.append(key)
                raise
    elif kind is list:
        for index, item in enumerate(value):
            try:
                _encoding_fault_in_value(item)
            except _Fault as fault:
                fault.segments.append(index)
                raise


def _raise_encoding_fault(doc: dict[str, Any], cause: ValueError) -> NoReturn:
    try:
        _encoding_fault_in_value(doc)
    except _Fault as fault:
        raise fault.error() from None
    raise TwinError(f"twin document cannot be encoded as JSON: {cause}") from cause


def _document_size(doc: dict[str, Any]) -> int:
    """Bytes of the compact UTF-8 JSON encoding of a structurally checked ``doc``."""
    try:
        text = _encode_compact(doc)
        return len(text) if text.isascii() else len(text.encode())
    except ValueError as error:  # UnicodeEncodeError, or an int past int_max_str_digits
        _raise_encoding_fault(doc, error)


def _check(doc: object, what: str) -> dict[str, Any]:
    checked = _check_structure(doc, what)
    size = _document_size(checked)
    if size > MAX_DOCUMENT_BYTES:
        raise TwinLimitError(
            f"twin document is {size} bytes, over MAX_DOCUMENT_BYTES={MAX_DOCUMENT_BYTES}"
        )
    return checked


def check_limits(doc: dict[str, Any]) -> None:
    """Raise TwinLimitError naming the limit, TwinError for anything that is not JSON.

    See the module docstring for the checks and their order.
    """
    _check(doc, "twin document")


# ---------------------------------------------------------------- copying ----


def _copy(value: Any) -> Any:
    """A deep copy of a checked JSON value (scalars are immutable and shared)."""
    kind = type(value)
    if kind is dict:
        return {key: _copy(item) for key, item in value.items()}
    if kind is list:
        return [_copy(item) for item in value]
    return value


# ------------------------------------------------------------ merge patch ----


def _without_nulls(patch: dict[str, Any]) -> dict[str, Any]:
    """``MergePatch({}, patch)``: a copy of ``patch`` minus its null members, recursively."""
    out: dict[str, Any] = {}
    for key, value in patch.items():
        if value is None:
            continue
        kind = type(value)
        if kind is dict:
            out[key] = _without_nulls(value)
        elif kind is list:
            out[key] = _copy(value)
        else:
            out[key] = value
    return out


def _merge(doc: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key in patch:
            change = patch[key]
            if change is None:
                continue
            if type(change) is dict:
                out[key] = _merge(value, change) if type(value) is dict else _without_nulls(change)
            else:
                out[key] = _copy(change)
        else:
            out[key] = _copy(value)
    for key, change in patch.items():
        if change is None or key in doc:
            continue
        out[key] = _without_nulls(change) if type(change) is dict else _copy(change)
    return out


def merge_patch(doc: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply the JSON merge patch ``patch`` to ``doc`` (RFC 7386) and return a new object.

    ``null`` deletes a member; an object merges recursively into an object and replaces
    anything else (``{}`` is kept, distinct from ``null``); arrays and scalars replace
    whole, ``null`` inside arrays is kept. ``doc`` and ``patch`` are checked (doc first)
    and so is the size of the result: two acceptable inputs may merge into a document
    over :data:`MAX_DOCUMENT_BYTES` (TwinLimitError ``merge result is N bytes, ...``).
    """
    checked_doc = _check(doc, "twin document")
    checked_patch = _check(patch, "merge patch")
    merged = _merge(checked_doc, checked_patch)
    # Depth and keys of the result come from the inputs; only the size can grow.
    size = _document_size(merged)
    if size > MAX_DOCUMENT_BYTES:
        raise TwinLimitError(
            f"merge result is {size} bytes, over MAX_DOCUMENT_BYTES={MAX_DOCUMENT_BYTES}"
        )
    return merged


# ------------------------------------------------------------------ delta ----


def _same(a: Any, b: Any) -> bool:
    """JSON equality: types must match (``true`` is not ``1``) except int/float by value."""
    if a is b:
        return True
    kind_a = type(a)
    kind_b = type(b)
    if kind_a is str or kind_a is bool or a is None:
        return kind_a is kind_b and a == b
    if kind_a is int or kind_a is float:
        return (kind_b is int or kind_b is float) and a == b
    if kind_a is list:
        return (
            kind_b is list
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b, strict=True))
        )
    # kind_a is dict
    if kind_b is not dict or len(a) != len(b):
        return False
    missing = object()
    return all(_same(value, b.get(key, missing)) for key, value in a.items())


def _delta(desired: dict[str, Any], reported: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, want in desired.items():
        if key not in reported:
            out[key] = _copy(want)
            continue
        have = reported[key]
        if type(want) is dict:
            if type(have) is dict:
                nested = _delta(want, have)
                if nested:
                    out[key] = nested
            else:
                out[key] = _copy(want)
        elif not _same(want, have):
            out[key] = _copy(want)
    return out


def delta(desired: dict[str, Any], reported: dict[str, Any]) -> dict[str, Any]:
    """What ``reported`` still lacks of ``desired`` (PRODUCT.md "Device twins").

    Walk ``desired``: a key missing from ``reported`` is in the delta with desired's
    value, even ``{}``; a key whose values are both objects recurses and appears only if
    the nested delta is non-empty (so ``{}`` against any reported object is omitted); an
    object against a non-object appears whole; every other value appears whole unless it
    equals reported's by JSON equality: same JSON type (``true`` is not ``1``, ``"1"`` is
    not ``1``), numbers by value (``1 == 1.0``, big ints exactly), arrays and objects
    element by element. Keys only in ``reported`` never appear. Both inputs are checked
    (desired first).
    """
    checked_desired = _check(desired, "desired document")
    checked_reported = _check(reported, "reported document")
    return _delta(checked_desired, checked_reported)


# ------------------------------------------------------------------ stamp ----


def _stamp(meta: dict[str, Any], patch: dict[str, Any], now: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if key in patch:
            change = patch[key]
            if change is None:
                continue
            if type(change) is dict:
                out[key] = _stamp(value if type(value) is dict else {}, change, now)
            else:
                out[key] = now
        else:
            out[key] = _copy(value)
    for key, change in patch.items():
        if change is None or key in meta:
            continue
        out[key] = _stamp({}, change, now) if type(change) is dict else now
    return out


def _check_now(now: object) -> float:
    kind = type(now)
    if kind is float:
        value: float = now  # type: ignore[assignment]
    elif kind is int:
        try:
            value = float(now)  # type: ignore[arg-type]
        except OverflowError:
            raise TwinError(f"{_NOW_NOT_FINITE}, not an int this large") from None
    else:
        raise TwinError(f"{_NOW_NOT_FINITE}, not {kind.__name__}")
    if not -_INF < value < _INF:
        raise TwinError(f"{_NOW_NOT_FINITE}, not {value!r}")
    return value


def stamp(meta: dict[str, Any], patch: dict[str, Any], now: float) -> dict[str, Any]:
    """The per-key timestamp metadata of a document after ``patch`` was merged into it.

    ``meta`` mirrors the document's shape. Walking ``patch``: ``null`` removes the key
    from meta; an object recurses into meta's object at that key, or into a fresh ``{}``
    when meta holds a timestamp or nothing there (so an ``{}`` patch value on a leaf or
    absent key leaves meta ``{}``, and ``{}`` on an object leaves it unchanged); any
    other value (scalar or array) sets the key to ``float(now)``. Returns a new object.

    ``meta`` is checked like a document for types and depth only (no key or size
    limits), then ``patch`` fully; ``now`` must be a finite int or float (not bool).
    """
    checked_meta = _check_structure(meta, "meta", check_keys=False)
    checked_patch = _check(patch, "merge patch")
    return _stamp(checked_meta, checked_patch, _check_now(now))
