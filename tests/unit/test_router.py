"""Behaviour of the MQTT topic router, on both backends (the ``core`` fixture)."""

from __future__ import annotations

import enum
from types import ModuleType

import pytest

from edgenode.errors import TopicError

MAX = 65535

# (filter, topic, matches): MQTT 3.1.1 section 4.7 / MQTT 5 section 4.7 and their edges.
SPEC_CASES = [
    # '#' matches the parent level and any number of child levels.
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/tennis/player1/#", "sport/tennis", False),
    ("sport/#", "sport", True),
    ("sport/#", "sport/", True),
    ("sport/#", "sports", False),
    ("#", "sport", True),
    ("#", "/", True),
    ("#", "a/b/c/d", True),
    ("/#", "/", True),
    ("/#", "a", False),
    # '+' matches exactly one level, including an empty one.
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+", "finance", True),
    ("+/tennis/#", "sport/tennis/player1", True),
    ("+/tennis/#", "sport/tennis", True),
    ("a/+/b", "a//b", True),
    ("a/+/+", "a//", True),
    ("+/+/+", "//", True),
    # Empty levels are levels.
    ("a//b", "a//b", True),
    ("a//b", "a/b", False),
    ("a/", "a/", True),
    ("a/", "a", False),
    ("/a", "/a", True),
    ("/a", "a", False),
    ("a/b", "a/b/", False),
    # Exact levels are compared exactly (case and prefixes matter).
    ("a/b", "a/b", True),
    ("a/b", "A/b", False),
    ("a/b", "a/bc", False),
    ("a/b/c", "a/b", False),
    ("a/b", "a/b/c", False),
    ("caf\u00e9/+", "caf\u00e9/x", True),
    # '$' topics: never matched by a first-level wildcard, matched by explicit filters.
    ("#", "$SYS/broker/load", False),
    ("#", "$SYS", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("+", "$x", False),
    ("+/#", "$x/y", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/#", "$SYS", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$edge/devices/+/twin/update", "$edge/devices/d1/twin/update", True),
    ("$edge/devices/+/twin/update", "$edge/devices/d1/twin/get", False),
    ("$SYS/#", "SYS/x", False),
    # A '$' beyond the first level is an ordinary character.
    ("a/$x", "a/$x", True),
    ("+/$x", "a/$x", True),
    ("a/#", "a/$x", True),
    ("#", "a$/b", True),
    ("+", "a$", True),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), SPEC_CASES)
def test_filters_match_topics_as_the_mqtt_spec_says(
    core: ModuleType, topic_filter: str, topic: str, expected: bool
) -> None:
    router = core.TopicRouter()
    router.add(topic_filter, 42)
    assert router.match(topic) == ([42] if expected else [])


def test_all_spec_filters_together_give_each_topic_its_matching_targets(core: ModuleType) -> None:
    router = core.TopicRouter()
    filters = sorted({f for f, _, _ in SPEC_CASES})
    for target, topic_filter in enumerate(filters):
        router.add(topic_filter, target)
    for topic_filter, topic, expected in SPEC_CASES:
        assert (filters.index(topic_filter) in router.match(topic)) is expected


def test_a_target_reached_by_several_filters_is_returned_once_and_sorted(
    core: ModuleType,
) -> None:
    router = core.TopicRouter()
    for topic_filter in ("a/b", "a/+", "a/#", "#", "+/b"):
        router.add(topic_filter, 7)
    router.add("a/b", 3)
    router.add("#", 2**63 - 1)
    router.add("+/+", 0)
    assert router.match("a/b") == [0, 3, 7, 2**63 - 1]


def test_adding_a_pair_twice_returns_false_and_counts_once(core: ModuleType) -> None:
    router = core.TopicRouter()
    assert router.add("a/+", 1) is True
    assert router.add("a/+", 1) is False
    assert router.add("a/+", 2) is True
    assert router.add("a/#", 1) is True
    assert router.add("a", 1) is True
    assert len(router) == 4


def test_removing_an_absent_pair_returns_false(core: ModuleType) -> None:
    router = core.TopicRouter()
    assert router.remove("a/b", 1) is False
    router.add("a/b", 1)
    assert router.remove("a/b", 2) is False
    assert router.remove("a/+", 1) is False
    assert router.remove("a/#", 1) is False
    assert router.remove("a", 1) is False
    assert router.remove("a/b/c", 1) is False
    assert len(router) == 1
    assert router.remove("a/b", 1) is True
    assert router.remove("a/b", 1) is False
    assert len(router) == 0


def test_removing_pairs_leaves_no_stale_matches(core: ModuleType) -> None:
    router = core.TopicRouter()
    pairs = [("a/b/c", 1), ("a/b", 2), ("a/+/c", 3), ("a/#", 4), ("#", 5), ("+/b/#", 6)]
    for topic_filter, target in pairs:
        router.add(topic_filter, target)
    assert router.match("a/b/c") == [1, 3, 4, 5, 6]
    remaining = {target for _, target in pairs}
    for topic_filter, target in pairs:
        assert router.remove(topic_filter, target) is True
        remaining.discard(target)
        expected = sorted(remaining & {1, 3, 4, 5, 6})
        assert router.match("a/b/c") == expected
    assert len(router) == 0
    assert router.match("a/b") == []
    assert router.match("a") == []


def test_a_removed_filter_can_be_added_again(core: ModuleType) -> None:
    router = core.TopicRouter()
    router.add("x/+/y/#", 9)
    router.remove("x/+/y/#", 9)
    assert router.match("x/1/y") == []
    assert router.add("x/+/y/#", 9) is True
    assert router.match("x/1/y/z") == [9]


def test_removing_a_parent_filter_keeps_its_children(core: ModuleType) -> None:
    router = core.TopicRouter()
    router.add("a", 1)
    router.add("a/b", 2)
    router.add("a/#", 3)
    router.remove("a", 1)
    router.remove("a/#", 3)
    assert router.match("a/b") == [2]
    assert router.match("a") == []


def test_match_returns_a_new_list_each_time(core: ModuleType) -> None:
    router = core.TopicRouter()
    router.add("a", 1)
    first = router.match("a")
    first.append(99)
    assert router.match("a") == [1]
    assert router.match("b") == []


def test_match_many_equals_match_for_each_topic(core: ModuleType) -> None:
    router = core.TopicRouter()
    router.add("a/+", 1)
    router.add("#", 2)
    router.add("$SYS/#", 3)
    topics = ["a/b", "a", "$SYS/x", "b/c", "a/"]
    expected = [router.match(t) for t in topics]
    assert router.match_many(topics) == expected
    assert router.match_many(tuple(topics)) == expected
    assert router.match_many(t for t in topics) == expected
    assert router.match_many([]) == []


def test_match_many_rejects_a_str_and_a_non_iterable(core: ModuleType) -> None:
    router = core.TopicRouter()
    with pytest.raises(TypeError, match=r"^topics must be a sequence of str, not str$"):
        router.match_many("a/b")
    with pytest.raises(TypeError, match=r"^topics must be a sequence of str, not int$"):
        router.match_many(5)


def test_match_many_raises_for_the_first_bad_topic(core: ModuleType) -> None:
    router = core.TopicRouter()
    router.add("#", 1)
    with pytest.raises(TopicError) as caught:
        router.match_many(["a", "b/+", "", "c/#"])
    assert str(caught.value) == (
        "invalid topic name \"b/+\": wildcard '+' at character 2 is not allowed in a topic name"
    )
    with pytest.raises(TypeError, match=r"^topic must be a str, not bytes$"):
        router.match_many(["a", b"b", "c/#"])


INVALID_FILTERS = [
    ("", 'invalid topic filter "": must not be empty'),
    ("a/#/b", "invalid topic filter \"a/#/b\": '#' must be the last level"),
    ("#/", "invalid topic filter \"#/\": '#' must be the last level"),
    ("#/#", "invalid topic filter \"#/#\": '#' must be the last level"),
    ("#x", "invalid topic filter \"#x\": '#' must occupy a whole level"),
    ("a#", "invalid topic filter \"a#\": '#' must occupy a whole level"),
    ("a/b#", "invalid topic filter \"a/b#\": '#' must occupy a whole level"),
    ("+#", "invalid topic filter \"+#\": '#' must occupy a whole level"),
    ("a+", "invalid topic filter \"a+\": '+' must occupy a whole level"),
    ("+b/c", "invalid topic filter \"+b/c\": '+' must occupy a whole level"),
    ("a/++", "invalid topic filter \"a/++\": '+' must occupy a whole level"),
    ("a\0b", 'invalid topic filter "a\\x00b": contains NUL (U+0000) at character 1'),
    ("a/\0/#x", 'invalid topic filter "a/\\x00/#x": contains NUL (U+0000) at character 2'),
    (
        "d\u00e9\udc80/#",
        'invalid topic filter "d\u00e9\\udc80/#": not encodable as UTF-8 '
        "(lone surrogate U+DC80 at character 2)",
    ),
]

INVALID_TOPICS = [
    ("", 'invalid topic name "": must not be empty'),
    (
        "a/+",
        "invalid topic name \"a/+\": wildcard '+' at character 2 is not allowed in a topic name",
    ),
    ("#", "invalid topic name \"#\": wildcard '#' at character 0 is not allowed in a topic name"),
    (
        "\u00e9/x#/+",
        "invalid topic name \"\u00e9/x#/+\": wildcard '#' at character 3 "
        "is not allowed in a topic name",
    ),
    ("a\0", 'invalid topic name "a\\x00": contains NUL (U+0000) at character 1'),
    (
        '"q"\\\t\x7f+',
        'invalid topic name "\\"q\\"\\\\\\x09\\x7f+": '
        "wildcard '+' at character 6 is not allowed in a topic name",
    ),
    (
        "\ud800",
        'invalid topic name "\\ud800": not encodable as UTF-8 '
        "(lone surrogate U+D800 at character 0)",
    ),
]


@pytest.mark.parametrize(("topic_filter", "message"), INVALID_FILTERS)
def test_invalid_filters_raise_topic_error_naming_the_problem(
    core: ModuleType, topic_filter: str, message: str
) -> None:
    for call in (
        lambda: core.validate_filter(topic_filter),
        lambda: core.TopicRouter().add(topic_filter, 1),
        lambda: core.TopicRouter().remove(topic_filter, 1),
    ):
        with pytest.raises(TopicError) as caught:
            call()
        assert str(caught.value) == message
        assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(("topic", "message"), INVALID_TOPICS)
def test_invalid_topics_raise_topic_error_naming_the_problem(
    core: ModuleType, topic: str, message: str
) -> None:
    router = core.TopicRouter()
    router.add("#", 1)
    for call in (
        lambda: core.validate_topic(topic),
        lambda: router.match(topic),
        lambda: router.match_many([topic]),
    ):
        with pytest.raises(TopicError) as caught:
            call()
        assert str(caught.value) == message


@pytest.mark.parametrize(
    "valid", ["a", "/", "//", "+", "#", "a/#", "+/+/#", "$SYS/#", "a//+/", "\u00e9\U0001f600/+"]
)
def test_valid_filters_pass_validation(core: ModuleType, valid: str) -> None:
    assert core.validate_filter(valid) is None


@pytest.mark.parametrize("valid", ["a", "/", "//", "$SYS", "a b/c", "\u00e9\U0001f600", "\x01"])
def test_valid_topics_pass_validation(core: ModuleType, valid: str) -> None:
    assert core.validate_topic(valid) is None


@pytest.mark.parametrize("value", [None, 1, b"a/b", ["a"], 1.5])
def test_a_non_str_filter_or_topic_raises_type_error(core: ModuleType, value: object) -> None:
    name = type(value).__name__
    router = core.TopicRouter()
    with pytest.raises(TypeError, match=rf"^filter must be a str, not {name}$"):
        core.validate_filter(value)
    with pytest.raises(TypeError, match=rf"^filter must be a str, not {name}$"):
        router.add(value, 1)
    with pytest.raises(TypeError, match=rf"^topic must be a str, not {name}$"):
        core.validate_topic(value)
    with pytest.raises(TypeError, match=rf"^topic must be a str, not {name}$"):
        router.match(value)


def test_the_byte_limit_is_the_mqtt_one(core: ModuleType) -> None:
    assert core.MAX_TOPIC_BYTES == MAX


def test_a_topic_of_exactly_65535_bytes_is_accepted_and_65536_rejected(core: ModuleType) -> None:
    router = core.TopicRouter()
    router.add("#", 1)
    longest = "a/" * (MAX // 2) + "a"
    assert len(longest.encode()) == MAX
    assert router.match(longest) == [1]
    assert router.add(longest, 2) is True
    assert router.match(longest) == [1, 2]
    too_long = longest + "b"
    expected = (
        f'invalid topic name "{longest[:64]}"...: 65536 UTF-8 bytes, '
        "more than the MQTT limit of 65535"
    )
    with pytest.raises(TopicError) as caught:
        router.match(too_long)
    assert str(caught.value) == expected
    with pytest.raises(TopicError, match=r"^invalid topic filter .*: 65536 UTF-8 bytes"):
        router.add(too_long, 1)


def test_the_byte_limit_counts_utf8_bytes_not_characters(core: ModuleType) -> None:
    router = core.TopicRouter()
    fits = "\u00e9" * (MAX // 2) + "a"  # 65535 bytes, 32768 characters
    assert router.add(fits, 1) is True
    assert router.match(fits) == [1]
    with pytest.raises(TopicError) as caught:
        core.validate_topic("\u00e9" * (MAX // 2 + 1))
    assert str(caught.value).endswith('"...: 65536 UTF-8 bytes, more than the MQTT limit of 65535')
    assert str(caught.value).startswith('invalid topic name "' + "\u00e9" * 64 + '"...')


def test_a_topic_of_ten_thousand_levels_does_not_exhaust_the_stack(core: ModuleType) -> None:
    router = core.TopicRouter()
    deep = "/".join(["a"] * 10_000)
    deep_plus = "/".join(["+"] * 10_000)
    router.add(deep, 1)
    router.add(deep_plus, 2)
    router.add("a/+/#", 3)
    router.add(deep_plus + "/#", 4)
    assert router.match(deep) == [1, 2, 3, 4]
    assert router.match(deep + "/a") == [3, 4]
    assert router.match_many([deep, "a"]) == [[1, 2, 3, 4], []]
    assert router.remove(deep, 1) is True
    assert router.remove(deep_plus, 2) is True
    assert router.remove(deep_plus + "/#", 4) is True
    assert router.match(deep) == [3]
    assert len(router) == 1


def test_many_empty_levels_match_plus_per_level(core: ModuleType) -> None:
    router = core.TopicRouter()
    router.add("/".join(["+"] * 30_000), 1)
    assert router.match("/" * 29_999) == [1]
    assert router.match("/" * 30_000) == []


def test_the_largest_target_is_two_to_the_63_minus_one(core: ModuleType) -> None:
    router = core.TopicRouter()
    assert router.add("a", 2**63 - 1) is True
    assert router.add("a", 0) is True
    assert router.match("a") == [0, 2**63 - 1]
    assert router.remove("a", 2**63 - 1) is True


@pytest.mark.parametrize(
    ("target", "shown"),
    [(-1, "-1"), (2**63, str(2**63)), (-(2**127), str(-(2**127))), (2**127, "an int of 128 bits")],
)
def test_targets_out_of_range_raise_value_error(core: ModuleType, target: int, shown: str) -> None:
    router = core.TopicRouter()
    message = f"target must be an int in 0 <= target < 2**63, got {shown}"
    with pytest.raises(ValueError, match=r"^target must be an int") as caught:
        router.add("a", target)
    assert str(caught.value) == message
    assert not isinstance(caught.value, TopicError)
    with pytest.raises(ValueError, match=r"^target must be an int") as caught:
        router.remove("a", target)
    assert str(caught.value) == message
    assert len(router) == 0


def test_a_huge_target_is_described_by_its_size(core: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"^target must be an int") as caught:
        core.TopicRouter().add("a", -(10**5000))
    assert str(caught.value) == (
        "target must be an int in 0 <= target < 2**63, got an int of 16610 bits"
    )


@pytest.mark.parametrize("target", [True, False, 1.0, "1", None])
def test_non_int_targets_raise_type_error_and_bool_is_refused(
    core: ModuleType, target: object
) -> None:
    name = type(target).__name__
    with pytest.raises(TypeError, match=rf"^target must be an int, not {name}$"):
        core.TopicRouter().add("a", target)


def test_int_subclass_targets_are_stored_as_plain_ints(core: ModuleType) -> None:
    class Handler(enum.IntEnum):
        TWIN = 5

    router = core.TopicRouter()
    router.add("a", Handler.TWIN)
    assert router.remove("a", 5) is True
    router.add("a", Handler.TWIN)
    [found] = router.match("a")
    assert type(found) is int
    assert found == 5


def test_a_bad_filter_is_reported_before_a_bad_target(core: ModuleType) -> None:
    with pytest.raises(TopicError):
        core.TopicRouter().add("a/#/b", -1)
    with pytest.raises(TypeError, match=r"^filter must be a str"):
        core.TopicRouter().add(None, -1)


def test_long_inputs_are_quoted_truncated_to_64_characters(core: ModuleType) -> None:
    bad = "x" * 100 + "+"
    with pytest.raises(TopicError) as caught:
        core.validate_topic(bad)
    assert str(caught.value) == (
        f"invalid topic name \"{'x' * 64}\"...: wildcard '+' at character 100 "
        "is not allowed in a topic name"
    )


def test_match_many_over_a_generator_sees_changes_made_while_iterating(
    core: ModuleType,
) -> None:
    router = core.TopicRouter()
    router.add("a", 1)

    def topics():
        yield "a"
        router.add("a", 2)
        assert router.match("a") == [1, 2]
        yield "a"

    assert router.match_many(topics()) == [[1], [1, 2]]


def test_several_targets_of_hash_alone_come_back_sorted(core: ModuleType) -> None:
    router = core.TopicRouter()
    for target in (2**40, 1, 2**62, 0):
        router.add("#", target)
    assert router.match("unknown") == [0, 1, 2**40, 2**62]
    assert router.match("unknown/deeper") == [0, 1, 2**40, 2**62]
