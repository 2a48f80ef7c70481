"""The Rust twin engine against the pure-Python specification, on generated documents.

Both backends must return the same values (same types, same key order) or raise the same
exception class with the same message. A tiny reference implementation of RFC 7386,
written straight from the RFC's pseudo-code, checks ``merge_patch`` independently.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from conftest import native_core
from edgenode import _pure

MAX_DOCUMENT_BYTES = 65536
PAD_KEY = "~pad"  # outside the generated key alphabet

# Few distinct keys, so that documents, patches and reports overlap.
keys = st.sampled_from(["a", "b", "c", "d", "é", ""])
big_ints = st.integers(min_value=-(2**100), max_value=2**100)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    big_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 1e16, 1e-7, 0.1, 2.0**53, 2.0**64]),
    st.text(alphabet='ab"\\\n\x01é€😀', max_size=4),
)
scalars_without_null = scalars.filter(lambda value: value is not None)


def json_values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(keys, children, max_size=4),
        ),
        max_leaves=12,
    )


documents = st.dictionaries(keys, json_values(scalars), max_size=5)


def null_free_values() -> st.SearchStrategy[Any]:
    """JSON values whose object members are never null (nulls inside arrays are kept)."""
    return st.recursive(
        scalars_without_null,
        lambda children: st.one_of(
            st.lists(st.one_of(children, st.none()), max_size=3),
            st.dictionaries(keys, children, max_size=4),
        ),
        max_leaves=12,
    )


null_free_documents = st.dictionaries(keys, null_free_values(), max_size=5)

# Values that are not JSON or break a limit, mixed into otherwise fine documents.
hostile_leaves = st.one_of(
    scalars,
    st.sampled_from(
        [
            (1, 2),
            frozenset(),
            b"bytes",
            math.nan,
            math.inf,
            -math.inf,
            "\ud800",
            "ok\udfff",
            {1: "int key"},
            {None: "null key"},
            {"\udc80": "surrogate key"},
            {"\udc80": [frozenset()]},
            {"k" * 257: "long key"},
            {"é" * 129: "long key"},
        ]
    ),
    # beyond int_max_str_digits; built lazily because hypothesis cannot repr it
    st.builds(lambda: 10**5000),
)
hostile_documents = st.one_of(
    st.dictionaries(keys, json_values(hostile_leaves), max_size=5),
    st.sampled_from([[], "doc", None, 1, (("a", 1),)]),
)

# Every finite double, from its bit pattern (subnormals, huge and tiny exponents).
any_finite_float = (
    st.integers(min_value=0, max_value=2**64 - 1)
    .map(lambda bits: struct.unpack("<d", struct.pack("<Q", bits))[0])
    .filter(math.isfinite)
)


def typed(value: Any) -> Any:
    """``value`` with every type and key order made visible, for exact comparisons."""
    if isinstance(value, dict):
        return ("dict", tuple((key, typed(item)) for key, item in value.items()))
    if isinstance(value, list):
        return ("list", tuple(typed(item) for item in value))
    return (type(value).__name__, repr(value))


def outcome(function: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    try:
        return ("ok", typed(function(*args)))
    except Exception as error:
        return (type(error).__name__, str(error))


def agree(name: str, *args: Any) -> tuple[str, Any]:
    """Run ``name`` on both backends, assert they agree exactly, return the outcome."""
    expected = outcome(getattr(_pure, name), *args)
    actual = outcome(getattr(native_core(), name), *args)
    assert actual == expected
    return expected


def compact_size(doc: Any) -> int:
    return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())


def reference_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2, line by line."""
    if isinstance(patch, dict):
        if not isinstance(target, dict):
            target = {}
        target = dict(target)
        for name, value in patch.items():
            if value is None:
                target.pop(name, None)
            else:
                target[name] = reference_merge_patch(target.get(name), value)
        return target
    return patch


def shape(doc: dict[str, Any], now: float) -> dict[str, Any]:
    """The meta of ``doc`` if every member was set at ``now``."""
    return {
        key: shape(value, now) if isinstance(value, dict) else now for key, value in doc.items()
    }


# ------------------------------------------------------------ agreement ----


@given(doc=documents, patch=documents)
def test_merge_patch_agrees_and_matches_the_rfc_reference(doc: Any, patch: Any) -> None:
    result = agree("merge_patch", doc, patch)
    assert result == ("ok", typed(reference_merge_patch(doc, patch)))


@given(desired=documents, reported=documents)
def test_delta_agrees(desired: Any, reported: Any) -> None:
    agree("delta", desired, reported)


@given(
    meta=documents,
    patch=documents,
    now=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(min_value=-(2**70), max_value=2**70),
    ),
)
def test_stamp_agrees(meta: Any, patch: Any, now: Any) -> None:
    result = agree("stamp", meta, patch, now)
    assert result[0] == "ok"


@given(doc=documents)
def test_check_limits_agrees(doc: Any) -> None:
    agree("check_limits", doc)


@given(doc=hostile_documents, other=hostile_documents)
def test_every_function_agrees_on_hostile_input(doc: Any, other: Any) -> None:
    agree("check_limits", doc)
    agree("merge_patch", doc, other)
    agree("delta", doc, other)
    agree("stamp", doc, other, 1.0)


@given(
    now=st.one_of(
        st.floats(),
        st.integers(min_value=-(2**1100), max_value=2**1100),
        st.booleans(),
        st.none(),
        st.text(max_size=2),
    )
)
def test_stamp_agrees_on_every_kind_of_now(now: Any) -> None:
    agree("stamp", {"a": 1.0}, {"a": 2}, now)


@given(levels=st.integers(min_value=28, max_value=40), lists=st.lists(st.booleans(), max_size=40))
def test_depth_limit_agrees_for_mixed_nesting(levels: int, lists: list[bool]) -> None:
    inner: Any = 1
    for level in range(levels - 1):
        inner = [inner] if level < len(lists) and lists[level] else {"a": inner}
    doc = {"top": inner}
    outcome_ = agree("check_limits", doc)
    assert (outcome_[0] == "ok") == (levels <= 32)


# ------------------------------------------------------------------- size ----


@given(doc=documents, extra=st.integers(min_value=0, max_value=2), pad=st.sampled_from("x\né😀"))
def test_document_size_agrees_at_the_limit(doc: dict[str, Any], extra: int, pad: str) -> None:
    padded = dict(doc, **{PAD_KEY: ""})
    unit = compact_size({"p": pad}) - compact_size({"p": ""})
    padded[PAD_KEY] = pad * ((MAX_DOCUMENT_BYTES - compact_size(padded)) // unit)
    padded[PAD_KEY] += "x" * (MAX_DOCUMENT_BYTES + extra - compact_size(padded))
    assert compact_size(padded) == MAX_DOCUMENT_BYTES + extra
    result = agree("check_limits", padded)
    assert (result[0] == "ok") == (extra == 0)


@given(numbers=st.lists(st.one_of(any_finite_float, big_ints), min_size=1, max_size=8))
def test_number_sizes_agree_with_python_repr(numbers: list[Any]) -> None:
    # Over the limit on purpose: the message carries the size each backend computed.
    padded = {"n": numbers, PAD_KEY: "x" * MAX_DOCUMENT_BYTES}
    size = compact_size(padded)
    result = agree("check_limits", padded)
    assert result == (
        "TwinLimitError",
        f"twin document is {size} bytes, over MAX_DOCUMENT_BYTES={MAX_DOCUMENT_BYTES}",
    )


# ------------------------------------------------------------- properties ----


@given(reported=documents, desired=null_free_documents)
def test_a_patched_report_has_no_delta(reported: Any, desired: Any) -> None:
    for core in (_pure, native_core()):
        assert core.delta(desired, core.merge_patch(reported, desired)) == {}


@given(doc=documents)
def test_an_empty_patch_changes_nothing(doc: Any) -> None:
    for core in (_pure, native_core()):
        assert typed(core.merge_patch(doc, {})) == typed(doc)


@given(doc=documents, patch=documents)
def test_stamp_mirrors_the_shape_of_the_merged_document(doc: Any, patch: Any) -> None:
    for core in (_pure, native_core()):
        merged = core.merge_patch(doc, patch)
        assert core.stamp(shape(doc, 1.0), patch, 1.0) == shape(merged, 1.0)
