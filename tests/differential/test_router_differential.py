"""The Rust router and the pure twin agree exactly, and both agree with a brute-force
reference matcher (level-by-level comparison, no trie) written here.

Hypothesis drives add/remove sequences over a small alphabet of levels, so that filters
collide, share prefixes and get removed again, and throws arbitrary strings, non-strings
and out-of-range targets at both backends: results, exception classes and messages must
be identical.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from functools import partial
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from conftest import native_core
from edgenode import _pure

TOPIC_LEVELS = ["a", "b", "", "$x", "$SYS", "\u00e9"]
FILTER_LEVELS = [*TOPIC_LEVELS, "+", "#"]
TARGETS = st.integers(min_value=0, max_value=3) | st.sampled_from([2**63 - 1, 1 << 40])


def reference_matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching by direct level-by-level comparison."""
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    if topic.startswith("$") and filter_levels[0] in ("+", "#"):
        return False
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level not in ("+", topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """The result of ``call``, or its exception's class and message, comparably."""
    try:
        return ("ok", call())
    except Exception as error:
        return (type(error).__name__, str(error))


def levels_joined(alphabet: list[str], max_levels: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(alphabet), min_size=1, max_size=max_levels).map("/".join)


# Filters from the alphabet are sometimes invalid ('#' not last, empty): both must agree.
FILTERS = levels_joined(FILTER_LEVELS, 5)
TOPICS = levels_joined(TOPIC_LEVELS, 6).filter(bool)  # "" is not a topic
OPERATIONS = st.lists(st.tuples(st.sampled_from(["add", "remove"]), FILTERS, TARGETS), max_size=40)


@given(operations=OPERATIONS, topics=st.lists(TOPICS, min_size=1, max_size=12))
def test_both_backends_and_the_reference_agree_on_add_remove_and_match(
    operations: list[tuple[str, str, int]], topics: list[str]
) -> None:
    rust = native_core()
    routers: dict[str, Any] = {"python": _pure.TopicRouter(), "rust": rust.TopicRouter()}
    pairs: set[tuple[str, int]] = set()
    for operation, topic_filter, target in operations:
        results = {
            name: outcome(partial(getattr(router, operation), topic_filter, target))
            for name, router in routers.items()
        }
        assert results["python"] == results["rust"], (operation, topic_filter, target)
        if results["python"][0] == "ok":
            if operation == "add":
                assert results["python"][1] is ((topic_filter, target) not in pairs)
                pairs.add((topic_filter, target))
            else:
                assert results["python"][1] is ((topic_filter, target) in pairs)
                pairs.discard((topic_filter, target))
        assert len(routers["python"]) == len(routers["rust"]) == len(pairs)
        # Match after every step, so that stale state left by a removal shows at once.
        for topic in topics[:3]:
            expected = sorted({t for f, t in pairs if reference_matches(f, topic)})
            assert routers["python"].match(topic) == routers["rust"].match(topic) == expected
    expected_all = [sorted({t for f, t in pairs if reference_matches(f, x)}) for x in topics]
    assert routers["python"].match_many(topics) == expected_all
    assert routers["rust"].match_many(topics) == expected_all
    flat_ids = array("q", [t for found in expected_all for t in found])
    flat_offsets = array("q", [0])
    for found in expected_all:
        flat_offsets.append(flat_offsets[-1] + len(found))
    for name, router in routers.items():
        for shape in (list, tuple, iter):
            ids, offsets = router.match_flat(shape(topics))
            assert (type(ids), type(offsets)) == (array, array), name
            assert (ids.typecode, offsets.typecode) == ("q", "q")
            assert (ids, offsets) == (flat_ids, flat_offsets), (name, shape)


# Arbitrary text, weighted towards the characters the rules are about.
SPECIAL = st.sampled_from(["/", "+", "#", "$", "\0", "\ud800", "\udfff", '"', "\\", "\x7f", "é"])
HOSTILE_TEXT = st.text(alphabet=SPECIAL | st.characters(), max_size=80) | st.sampled_from(
    ["", "a" * 65535, "a" * 65536, "é" * 32768, "#" * 100, "\0" * 70]
)
NON_STR = st.none() | st.integers() | st.binary(max_size=4) | st.floats() | st.booleans()


@given(text=HOSTILE_TEXT | NON_STR)
def test_both_backends_validate_arbitrary_input_identically(text: Any) -> None:
    rust = native_core()
    assert outcome(lambda: _pure.validate_filter(text)) == outcome(
        lambda: rust.validate_filter(text)
    )
    assert outcome(lambda: _pure.validate_topic(text)) == outcome(lambda: rust.validate_topic(text))
    python_router, rust_router = _pure.TopicRouter(), rust.TopicRouter()
    for router in (python_router, rust_router):
        router.add("#", 1)
    for method in ("add", "remove"):
        assert outcome(lambda m=method: getattr(python_router, m)(text, 2)) == outcome(
            lambda m=method: getattr(rust_router, m)(text, 2)
        )
    assert outcome(lambda: python_router.match(text)) == outcome(lambda: rust_router.match(text))
    assert len(python_router) == len(rust_router)


@given(batch=st.lists(HOSTILE_TEXT | NON_STR | TOPICS, max_size=6))
def test_match_many_fails_on_the_same_first_bad_topic_in_both(batch: list[Any]) -> None:
    rust = native_core()
    python_router, rust_router = _pure.TopicRouter(), rust.TopicRouter()
    for router in (python_router, rust_router):
        router.add("+/#", 1)
        router.add("a", 2)
    assert outcome(lambda: python_router.match_many(batch)) == outcome(
        lambda: rust_router.match_many(batch)
    )
    assert outcome(lambda: python_router.match_flat(batch)) == outcome(
        lambda: rust_router.match_flat(batch)
    )


@given(topics=NON_STR | HOSTILE_TEXT)
def test_match_flat_refuses_what_is_not_a_sequence_of_topics_alike(topics: Any) -> None:
    rust = native_core()
    python_router, rust_router = _pure.TopicRouter(), rust.TopicRouter()
    assert outcome(lambda: python_router.match_flat(topics)) == outcome(
        lambda: rust_router.match_flat(topics)
    )


@given(target=st.integers() | st.sampled_from([2**63 - 1, 2**63, -(2**127) - 1, 2**127]) | NON_STR)
def test_both_backends_check_targets_identically(target: Any) -> None:
    rust = native_core()
    python_router, rust_router = _pure.TopicRouter(), rust.TopicRouter()
    for method in ("add", "remove"):
        assert outcome(lambda m=method: getattr(python_router, m)("a/+", target)) == outcome(
            lambda m=method: getattr(rust_router, m)("a/+", target)
        )
    assert python_router.match("a/b") == rust_router.match("a/b")


# Levels around the sizes the Rust router treats apart (hashed 8 bytes a step, the first 16
# bytes kept in the level table's slot, longer ones compared in full): same prefixes,
# same lengths, differing only past byte 16, multi-byte characters across the boundaries.
LONG_LEVELS = [
    "abcdefg",
    "abcdefgh",
    "abcdefghi",
    "abcdefghijklmno",
    "abcdefghijklmnop",
    "abcdefghijklmnopq",
    "abcdefghijklmnopr",
    "abcdefghijklmnopqrstuvwxyz0123",
    "abcdefghijklmnopqrstuvwxyz0124",
    "abcdefg\u00e9",
    "abcdefghijklmno\u00e9",
    "$abcdefghijklmnopq",
]
MANY_LEVELS = [f"l{n}" for n in range(40)] + LONG_LEVELS + ["", "a"]


@given(
    filters=st.lists(
        st.tuples(levels_joined([*MANY_LEVELS, "+"], 4).filter(bool), st.integers(0, 2)),
        min_size=1,
        max_size=120,
    ),
    removal_order=st.randoms(use_true_random=False),
    topics=st.lists(levels_joined(MANY_LEVELS, 4).filter(bool), min_size=1, max_size=8),
)
def test_many_and_long_levels_grow_and_shrink_alike(
    filters: list[tuple[str, int]], removal_order: Any, topics: list[str]
) -> None:
    """Enough distinct levels and edges that the Rust router's tables grow, then every
    pair removed in a random order (its tables shift entries back): after each step both
    backends match as the reference does."""
    rust = native_core()
    routers: dict[str, Any] = {"python": _pure.TopicRouter(), "rust": rust.TopicRouter()}
    pairs: set[tuple[str, int]] = set()

    def check() -> None:
        expected = [sorted({t for f, t in pairs if reference_matches(f, x)}) for x in topics]
        for router in routers.values():
            assert router.match_many(topics) == expected

    for topic_filter, target in filters:
        for router in routers.values():
            router.add(topic_filter, target)
        pairs.add((topic_filter, target))
    check()
    order = sorted(pairs)
    removal_order.shuffle(order)
    for step, (topic_filter, target) in enumerate(order):
        for router in routers.values():
            assert router.remove(topic_filter, target) is True
        pairs.discard((topic_filter, target))
        if step % 7 == 0 or not pairs:
            check()
    assert len(routers["python"]) == len(routers["rust"]) == 0
