"""Behaviour of the twin engine (limits, merge patch, delta, stamp) on both backends."""

from __future__ import annotations

import copy
import json
import math
import re
from collections import OrderedDict
from types import ModuleType
from typing import Any

import pytest

from edgenode.errors import TwinError, TwinLimitError

HOSTILE_DEPTH = 100_000


def raises_exactly(cls: type[Exception], message: str) -> Any:
    """``pytest.raises`` for ``cls`` with exactly ``message``."""
    return pytest.raises(cls, match=f"^{re.escape(message)}$")


def raises_starting(cls: type[Exception], message: str) -> Any:
    """``pytest.raises`` for ``cls`` with a message starting with ``message``."""
    return pytest.raises(cls, match=f"^{re.escape(message)}")


def compact_size(doc: Any) -> int:
    return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())


def nested_dicts(levels: int) -> dict[str, Any]:
    """A document ``levels`` deep: the top-level dict is level 1."""
    doc: dict[str, Any] = {}
    for _ in range(levels - 1):
        doc = {"a": doc}
    return doc


def nested_lists(levels: int) -> dict[str, Any]:
    """A top-level dict holding lists nested so that the whole is ``levels`` deep."""
    inner: list[Any] = []
    for _ in range(levels - 2):
        inner = [inner]
    return {"a": inner}


def padded_to(doc: dict[str, Any], size: int, pad: str = "x") -> dict[str, Any]:
    """``doc`` plus a ``"~pad"`` string member making its compact encoding ``size`` bytes."""
    padded = dict(doc, **{"~pad": ""})
    missing = size - compact_size(padded)
    assert missing >= 0
    unit = len(pad.encode())
    padded["~pad"] = pad * (missing // unit) + "x" * (missing % unit)
    assert compact_size(padded) == size
    return padded


def container_ids(value: Any) -> set[int]:
    """ids of every dict and list inside ``value`` (itself included)."""
    found: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.add(id(item))
            stack.extend(item.values())
        elif isinstance(item, list):
            found.add(id(item))
            stack.extend(item)
    return found


def typed(value: Any) -> Any:
    """``value`` with every type and key order made visible, for exact comparisons."""
    if isinstance(value, dict):
        return ("dict", tuple((key, typed(item)) for key, item in value.items()))
    if isinstance(value, list):
        return ("list", tuple(typed(item) for item in value))
    return (type(value).__name__, repr(value))


# ------------------------------------------------------------- constants ----


def test_limits_are_the_documented_constants(core: ModuleType) -> None:
    assert (core.MAX_DEPTH, core.MAX_DOCUMENT_BYTES, core.MAX_KEY_BYTES) == (32, 65536, 256)


def test_twin_errors_are_value_errors() -> None:
    assert issubclass(TwinLimitError, TwinError)
    assert issubclass(TwinError, ValueError)


# ------------------------------------------------------------ merge patch ----

# RFC 7386 appendix A: every example whose target and patch are objects.
RFC7386_OBJECT_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("doc", "patch", "expected"), RFC7386_OBJECT_EXAMPLES)
def test_merge_patch_reproduces_the_rfc_7386_appendix(
    core: ModuleType, doc: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert typed(core.merge_patch(doc, patch)) == typed(expected)


@pytest.mark.parametrize(
    ("doc", "patch"),
    [
        (["a", "b"], {"a": "c"}),
        ({"a": "b"}, ["c"]),
        ({"a": "foo"}, None),
        ({"a": "foo"}, "bar"),
        ([1, 2], {"a": "b", "c": None}),
    ],
)
def test_merge_patch_refuses_the_rfc_examples_with_a_non_object_side(
    core: ModuleType, doc: Any, patch: Any
) -> None:
    with pytest.raises(TwinError, match="must be a JSON object, not"):
        core.merge_patch(doc, patch)


def test_merge_patch_reproduces_the_rfc_7386_section_3_example_in_order(core: ModuleType) -> None:
    doc = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {
        "title": "Hello!",
        "phoneNumber": "+01-123-456-7890",
        "author": {"familyName": None},
        "tags": ["example"],
    }
    expected = {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    }
    assert typed(core.merge_patch(doc, patch)) == typed(expected)


def test_merge_patch_keeps_an_empty_object_distinct_from_null(core: ModuleType) -> None:
    assert core.merge_patch({}, {"a": {}}) == {"a": {}}
    assert core.merge_patch({"a": 1}, {"a": {}}) == {"a": {}}
    assert core.merge_patch({"a": {"x": 1}}, {"a": {}}) == {"a": {"x": 1}}
    assert core.merge_patch({"a": {"x": 1}}, {"a": None}) == {}


def test_merge_patch_keeps_nulls_inside_arrays_and_in_the_document(core: ModuleType) -> None:
    patch = {"a": [None, {"b": None}]}
    assert core.merge_patch({"keep": None}, patch) == {"keep": None, "a": [None, {"b": None}]}


def test_merge_patch_drops_nested_nulls_of_a_new_object(core: ModuleType) -> None:
    assert core.merge_patch({"a": 5}, {"a": {"b": None, "c": {"d": None}}}) == {"a": {"c": {}}}


def test_merge_patch_replaces_arrays_whole(core: ModuleType) -> None:
    assert core.merge_patch({"a": [1, 2, 3]}, {"a": [4]}) == {"a": [4]}


def test_merge_patch_with_an_empty_patch_returns_an_equal_copy(core: ModuleType) -> None:
    doc = {"a": {"b": [1, {"c": None}]}, "d": 1.5}
    merged = core.merge_patch(doc, {})
    assert typed(merged) == typed(doc)
    assert merged is not doc


def test_merge_patch_mutates_nothing_and_shares_no_containers(core: ModuleType) -> None:
    doc = {"keep": {"x": [1, {"y": 2}]}, "change": {"p": [1]}, "list": [[1]]}
    patch = {"change": {"q": {"r": [3]}}, "new": [{"z": []}], "list": [[2]]}
    before = copy.deepcopy((doc, patch))
    merged = core.merge_patch(doc, patch)
    assert (doc, patch) == before
    assert not container_ids(merged) & (container_ids(doc) | container_ids(patch))
    merged["keep"]["x"][1]["y"] = 99
    merged["new"][0]["z"].append(1)
    assert (doc, patch) == before


def test_merge_patch_refuses_a_result_over_the_size_limit(core: ModuleType) -> None:
    doc = {"a": "x" * 40_000}
    patch = {"b": "y" * 40_000}
    core.check_limits(doc)
    core.check_limits(patch)
    size = compact_size({**doc, **patch})
    with raises_exactly(
        TwinLimitError, f"merge result is {size} bytes, over MAX_DOCUMENT_BYTES=65536"
    ):
        core.merge_patch(doc, patch)


def test_merge_patch_accepts_a_result_of_exactly_the_size_limit(core: ModuleType) -> None:
    doc = padded_to({"a": "x" * 30_000}, 50_000)
    patch = {"b": ""}
    patch["b"] = "y" * (65536 - compact_size({**doc, **patch}))
    merged = core.merge_patch(doc, patch)
    assert compact_size(merged) == 65536


def test_merge_patch_checks_the_document_before_the_patch(core: ModuleType) -> None:
    with pytest.raises(TwinError, match='value at "d" is not a JSON value: set'):
        core.merge_patch({"d": set()}, {"p": (1,)})
    with pytest.raises(TwinError, match='value at "p" is not a JSON value: tuple'):
        core.merge_patch({"d": 1}, {"p": (1,)})


# ------------------------------------------------------------------ delta ----


def test_delta_holds_keys_missing_or_different_in_reported(core: ModuleType) -> None:
    desired = {"same": 1, "changed": "on", "missing": [1], "nested": {"x": 1, "y": 2}}
    reported = {"same": 1, "changed": "off", "nested": {"x": 1, "y": 3}, "extra": 5}
    assert typed(core.delta(desired, reported)) == typed(
        {"changed": "on", "missing": [1], "nested": {"y": 2}}
    )


def test_delta_of_a_document_with_itself_is_empty(core: ModuleType) -> None:
    doc = {"a": {"b": [1, {"c": None}], "d": {}}, "e": 2**100, "f": -0.0}
    assert core.delta(doc, copy.deepcopy(doc)) == {}


def test_delta_omits_objects_whose_nested_delta_is_empty(core: ModuleType) -> None:
    assert core.delta({"a": {"b": 1}, "c": {}}, {"a": {"b": 1, "z": 2}, "c": {"q": 1}}) == {}


def test_delta_keeps_an_empty_desired_object_missing_from_reported(core: ModuleType) -> None:
    assert core.delta({"a": {}}, {}) == {"a": {}}
    assert core.delta({"a": {}}, {"a": 3}) == {"a": {}}


def test_delta_shows_a_desired_object_whole_when_reported_is_not_an_object(
    core: ModuleType,
) -> None:
    desired = {"a": {"b": 1, "c": {"d": 2}}}
    assert core.delta(desired, {"a": [1]}) == desired
    assert core.delta(desired, {"a": None}) == desired


@pytest.mark.parametrize(
    ("want", "have"),
    [
        (True, 1),
        (1, True),
        (False, 0),
        (0.0, False),
        ("1", 1),
        (1, "1"),
        (None, 0),
        (None, False),
        ([1], [True]),
        ([1, 2], [1]),
        ([1], {"0": 1}),
        ([{"a": 1}], [{"a": True}]),
        ([{"a": 1}], [{"a": 1, "b": 2}]),
        ([{"a": 1}], [{"b": 1}]),
        (2**53 + 1, float(2**53)),
        (2**80, 2**80 + 1),
        (0.1, 0.30000000000000004),
        ("é", "e"),
    ],
)
def test_delta_shows_values_of_another_json_type_or_value_whole(
    core: ModuleType, want: Any, have: Any
) -> None:
    assert typed(core.delta({"k": want}, {"k": have})) == typed({"k": want})


@pytest.mark.parametrize(
    ("want", "have"),
    [
        (1, 1.0),
        (1.0, 1),
        (0, -0.0),
        (2**80, 2**80),
        (2**53, float(2**53)),
        (2**70, float(2**70)),
        ([1, [2.0, {"a": None}]], [1.0, [2, {"a": None}]]),
        ({"x": [True, "s"]}, {"x": [True, "s"], "y": 1}),
        (None, None),
        (False, False),
    ],
)
def test_delta_treats_json_equal_values_as_equal(core: ModuleType, want: Any, have: Any) -> None:
    assert core.delta({"k": want}, {"k": have}) == {}


def test_delta_never_includes_keys_only_in_reported(core: ModuleType) -> None:
    assert core.delta({}, {"a": 1, "b": {"c": 2}}) == {}
    assert core.delta({"b": {}}, {"b": {"c": 2}}) == {}


def test_delta_shares_no_containers_with_its_inputs(core: ModuleType) -> None:
    desired = {"a": {"b": [1, [2]], "c": {"d": {}}}, "e": [{"f": 1}]}
    reported = {"a": {"b": [1]}}
    before = copy.deepcopy((desired, reported))
    result = core.delta(desired, reported)
    assert typed(result) == typed(desired)
    assert not container_ids(result) & (container_ids(desired) | container_ids(reported))
    assert (desired, reported) == before


def test_delta_checks_desired_then_reported(core: ModuleType) -> None:
    with raises_exactly(TwinError, "desired document must be a JSON object, not list"):
        core.delta([], {})
    with raises_exactly(TwinError, "reported document must be a JSON object, not str"):
        core.delta({}, "x")
    with pytest.raises(TwinLimitError, match="MAX_DEPTH"):
        core.delta({}, nested_dicts(33))


# ------------------------------------------------------------------ stamp ----


def test_stamp_sets_now_on_every_leaf_the_patch_sets(core: ModuleType) -> None:
    meta = core.stamp({}, {"a": 1, "b": [1, 2], "c": {"d": "x"}, "e": None}, 10)
    assert typed(meta) == typed({"a": 10.0, "b": 10.0, "c": {"d": 10.0}})


def test_stamp_removes_keys_the_patch_deletes(core: ModuleType) -> None:
    meta = {"a": 1.0, "b": {"c": 1.0, "d": 1.0}}
    assert core.stamp(meta, {"a": None, "b": {"c": None}}, 2.0) == {"b": {"d": 1.0}}


def test_stamp_recurses_into_objects_and_keeps_untouched_keys(core: ModuleType) -> None:
    meta = {"a": {"x": 1.0, "y": 1.0}, "z": 1.0}
    assert core.stamp(meta, {"a": {"y": 5}}, 2.0) == {"a": {"x": 1.0, "y": 2.0}, "z": 1.0}


def test_stamp_replaces_a_leaf_by_an_object_when_the_patch_sets_one(core: ModuleType) -> None:
    assert core.stamp({"a": 1.0}, {"a": {"b": 1}}, 2.0) == {"a": {"b": 2.0}}
    assert core.stamp({"a": 1.0}, {"a": {}}, 2.0) == {"a": {}}
    assert core.stamp({}, {"a": {}}, 2.0) == {"a": {}}
    assert core.stamp({}, {"a": {"b": None}}, 2.0) == {"a": {}}


def test_stamp_leaves_object_meta_alone_for_an_empty_object_patch(core: ModuleType) -> None:
    assert core.stamp({"a": {"b": 1.0}}, {"a": {}}, 2.0) == {"a": {"b": 1.0}}


def test_stamp_replaces_object_meta_by_now_when_the_patch_sets_a_leaf(core: ModuleType) -> None:
    assert core.stamp({"a": {"b": 1.0}}, {"a": [1]}, 2.0) == {"a": 2.0}


def test_stamp_mutates_nothing_and_shares_no_containers(core: ModuleType) -> None:
    meta = {"a": {"b": 1.0}, "keep": {"c": {"d": 1.0}}, "odd": [1.0]}
    patch = {"a": {"e": [1, {"f": 2}]}, "g": {"h": {}}}
    before = copy.deepcopy((meta, patch))
    result = core.stamp(meta, patch, 3.0)
    assert (meta, patch) == before
    assert not container_ids(result) & (container_ids(meta) | container_ids(patch))


@pytest.mark.parametrize(
    ("now", "message"),
    [
        (True, "not bool"),
        ("1", "not str"),
        (None, "not NoneType"),
        (float("nan"), "not nan"),
        (float("inf"), "not inf"),
        (-math.inf, "not -inf"),
        (10**400, "not an int this large"),
    ],
)
def test_stamp_refuses_a_now_that_is_not_a_finite_number(
    core: ModuleType, now: Any, message: str
) -> None:
    with raises_exactly(TwinError, f"now must be a finite number of seconds, {message}"):
        core.stamp({}, {"a": 1}, now)


def test_stamp_checks_meta_for_types_and_depth_only(core: ModuleType) -> None:
    long_key = "k" * 1000
    assert core.stamp({long_key: 1.0}, {}, 2.0) == {long_key: 1.0}
    with raises_exactly(TwinError, "meta must be a JSON object, not list"):
        core.stamp([], {}, 1.0)
    with pytest.raises(TwinError, match='value at "a" is not a JSON value: set'):
        core.stamp({"a": set()}, {}, 1.0)
    with pytest.raises(TwinLimitError, match="MAX_DEPTH"):
        core.stamp(nested_dicts(HOSTILE_DEPTH), {}, 1.0)


def test_stamp_checks_the_patch_fully(core: ModuleType) -> None:
    with pytest.raises(TwinLimitError, match="MAX_KEY_BYTES"):
        core.stamp({}, {"k" * 257: 1}, 1.0)
    with raises_exactly(TwinError, "merge patch must be a JSON object, not int"):
        core.stamp({}, 1, 1.0)


# ----------------------------------------------------------------- limits ----


def test_depth_of_exactly_max_depth_is_accepted(core: ModuleType) -> None:
    core.check_limits(nested_dicts(32))
    core.check_limits(nested_lists(32))
    assert core.merge_patch(nested_dicts(32), nested_dicts(32)) == nested_dicts(32)


@pytest.mark.parametrize("build", [nested_dicts, nested_lists])
def test_depth_over_max_depth_is_refused(core: ModuleType, build: Any) -> None:
    with raises_exactly(TwinLimitError, "twin document exceeds MAX_DEPTH=32 levels"):
        core.check_limits(build(33))


def test_empty_containers_count_as_a_level(core: ModuleType) -> None:
    doc = nested_dicts(32)
    inner = doc
    while inner:
        inner = inner["a"]
    core.check_limits(doc)
    inner["a"] = []
    with pytest.raises(TwinLimitError, match="MAX_DEPTH"):
        core.check_limits(doc)


@pytest.mark.parametrize("build", [nested_dicts, nested_lists])
def test_hostile_nesting_raises_a_limit_error_in_every_function(
    core: ModuleType, build: Any
) -> None:
    hostile = build(HOSTILE_DEPTH)
    calls = [
        lambda: core.check_limits(hostile),
        lambda: core.merge_patch(hostile, {}),
        lambda: core.merge_patch({}, hostile),
        lambda: core.delta(hostile, {}),
        lambda: core.delta({}, hostile),
        lambda: core.stamp({}, hostile, 1.0),
        lambda: core.stamp(hostile, {}, 1.0),
    ]
    for call in calls:
        with pytest.raises(TwinLimitError, match="MAX_DEPTH"):
            call()


def test_self_referencing_documents_are_refused_by_depth(core: ModuleType) -> None:
    loop: dict[str, Any] = {}
    loop["me"] = loop
    with pytest.raises(TwinLimitError, match="MAX_DEPTH"):
        core.check_limits(loop)
    loop.clear()


@pytest.mark.parametrize(
    ("fitting", "over"),
    [
        ("k" * 256, "k" * 257),
        ("é" * 128, "é" * 128 + "x"),
        ("€" * 85 + "x", "€" * 85 + "xx"),
        ("😀" * 64, "😀" * 64 + "a"),
    ],
)
def test_keys_up_to_max_key_bytes_are_accepted(core: ModuleType, fitting: str, over: str) -> None:
    assert len(fitting.encode()) == 256
    assert len(over.encode()) == 257
    core.check_limits({"a": {fitting: 1}})
    shown = over[:32] + "…"
    with raises_exactly(TwinLimitError, f'key "{shown}" exceeds MAX_KEY_BYTES=256 bytes'):
        core.check_limits({"a": [{over: 1}]})


@pytest.mark.parametrize("pad", ["x", "é", "😀", "\n", "\x01", '"'])
def test_documents_up_to_max_document_bytes_are_accepted(core: ModuleType, pad: str) -> None:
    doc: dict[str, Any] = {
        "n": [1.5, 1e16, 1e-7, 0.1, -0.0, 10**30, -(2**70), True, False, None],
        "s": "é\t",
        "~pad": "",
    }
    unit = compact_size({"p": pad}) - compact_size({"p": ""})
    doc["~pad"] = pad * ((65536 - compact_size(doc)) // unit)
    doc["~pad"] += "x" * (65536 - compact_size(doc))
    assert compact_size(doc) == 65536
    core.check_limits(doc)
    doc["~pad"] += "x"
    with raises_exactly(
        TwinLimitError, "twin document is 65537 bytes, over MAX_DOCUMENT_BYTES=65536"
    ):
        core.check_limits(doc)


@pytest.mark.parametrize(
    "number",
    [
        1e16,
        1.5e16,
        1e15,
        1e-7,
        1e-5,
        0.0001,
        0.1,
        -0.0,
        0.0,
        5e-324,
        1.7976931348623157e308,
        2.2250738585072014e-308,
        123456789012345680.0,
        1 / 3,
        2**63,
        -(2**63) - 1,
        2**63 - 1,
        10**1000,
    ],
)
def test_numbers_are_measured_exactly_as_json_writes_them(core: ModuleType, number: float) -> None:
    doc = padded_to({"n": number}, 65537)
    with raises_starting(TwinLimitError, "twin document is 65537 bytes"):
        core.check_limits(doc)
    doc["~pad"] = doc["~pad"][1:]
    core.check_limits(doc)


@pytest.mark.parametrize(
    ("value", "path", "type_name"),
    [
        ({"b": [0, 1, {3}]}, "a.b[2]", "set"),
        ((1, 2), "a", "tuple"),
        (b"x", "a", "bytes"),
        (frozenset(), "a", "frozenset"),
        (object(), "a", "object"),
        (OrderedDict(), "a", "OrderedDict"),
        (1j, "a", "complex"),
        ([[], [b""]], "a[1][0]", "bytes"),
    ],
)
def test_non_json_values_are_refused_with_their_path(
    core: ModuleType, value: Any, path: str, type_name: str
) -> None:
    expected = f'^value at "{re.escape(path)}" is not a JSON value: {type_name}$'
    with pytest.raises(TwinError, match=expected):
        core.check_limits({"a": value})


def test_subclasses_of_json_types_are_refused(core: ModuleType) -> None:
    class Flag(int):
        pass

    class Text(str):
        pass

    with pytest.raises(TwinError, match="not a JSON value: Flag"):
        core.check_limits({"a": Flag(1)})
    with pytest.raises(TwinError, match="not a JSON value: Text"):
        core.check_limits({"a": Text("x")})
    with raises_exactly(TwinError, "twin document must be a JSON object, not OrderedDict"):
        core.check_limits(OrderedDict())


@pytest.mark.parametrize(("number", "shown"), [(math.nan, "nan"), (math.inf, "inf")])
def test_non_finite_floats_are_refused(core: ModuleType, number: float, shown: str) -> None:
    with raises_exactly(TwinError, f'value at "a.b" is not a finite number: {shown}'):
        core.check_limits({"a": {"b": number}})
    with raises_exactly(TwinError, 'value at "a[0]" is not a finite number: -inf'):
        core.check_limits({"a": [-math.inf]})


@pytest.mark.parametrize("key", [1, None, (1,), 1.5, True])
def test_non_string_keys_are_refused(core: ModuleType, key: Any) -> None:
    name = type(key).__name__
    with raises_exactly(TwinError, f"key of the top-level object is not a string: {name}"):
        core.check_limits({key: 1})
    with raises_exactly(TwinError, f'key of the object at "a" is not a string: {name}'):
        core.check_limits({"a": {key: 1}})


def test_lone_surrogates_are_refused_as_invalid_utf8(core: ModuleType) -> None:
    with raises_exactly(TwinError, 'string at "a" is not valid UTF-8 (lone surrogate)'):
        core.check_limits({"a": "x\ud800"})
    with raises_starting(TwinError, 'key at "a.\ufffd\ufffd\ufffdb" is not valid UTF-8'):
        core.check_limits({"a": {"\udfffb": 1}})
    with pytest.raises(TwinError, match='value at "\ufffd\ufffd\ufffd" is not a JSON value: set'):
        core.check_limits({"\ud800": set()})


def test_structural_errors_take_precedence_over_encoding_errors(core: ModuleType) -> None:
    with pytest.raises(TwinError, match='value at "b" is not a JSON value: set'):
        core.check_limits({"a": "\ud800", "b": set()})


def test_integers_too_long_to_print_are_refused(core: ModuleType) -> None:
    with raises_exactly(TwinError, 'integer at "a[1]" is too large to encode as JSON'):
        core.check_limits({"a": [1, 10**5000]})


def test_the_first_problem_in_document_order_wins(core: ModuleType) -> None:
    with pytest.raises(TwinError, match='value at "a" is not a JSON value: set'):
        core.check_limits({"a": set(), "k" * 300: 1, "d": nested_dicts(40)})
    with pytest.raises(TwinLimitError, match="MAX_KEY_BYTES"):
        core.check_limits({"k" * 300: set()})
