"""The bounds of ``edgehub.limits`` and the rate-limited log, as functions (the API tests
in test_hostile_input.py drive them through a real hub)."""

from __future__ import annotations

import logging

import pytest
from edgehub.limits import (
    MAX_DEPTH,
    MAX_INTEGER_DIGITS,
    InputError,
    check_value,
    load_json,
    query_integer,
)
from edgehub.ratelog import ClientErrorFilter, RateLimitedLog, RateLimiter


def nest(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def test_nesting_is_checked_without_recursion_up_to_the_bound():
    check_value(nest(MAX_DEPTH))
    with pytest.raises(InputError, match=f"deeper than {MAX_DEPTH}"):
        check_value(nest(MAX_DEPTH + 1))
    with pytest.raises(InputError, match=f"deeper than {MAX_DEPTH}"):
        check_value(nest(100_000))  # far past the recursion limit: no RecursionError


def test_errors_name_the_field():
    with pytest.raises(InputError) as caught:
        check_value({"spec": {"items": [1, {"x": float("nan")}]}})
    assert caught.value.field == "spec.items[1].x"
    with pytest.raises(InputError) as caught:
        check_value({"a": "\udc80"}, "spec.desired")
    assert caught.value.field == "spec.desired.a"
    assert "surrogate" in caught.value.message


def test_integers_are_bounded_by_digits():
    check_value(10**MAX_INTEGER_DIGITS - 1)
    check_value(-(10**MAX_INTEGER_DIGITS) + 1)
    with pytest.raises(InputError, match="at most"):
        check_value(10**MAX_INTEGER_DIGITS)
    assert load_json(b"%d" % (10**MAX_INTEGER_DIGITS - 1)) == 10**MAX_INTEGER_DIGITS - 1
    with pytest.raises(InputError, match="at most"):
        load_json(b"1" * 5000)  # json.loads alone would convert it
    with pytest.raises(InputError, match="at most"):
        load_json(b"1" * 100_000)  # json.loads alone: ValueError from the conversion limit


def test_json_bodies_refuse_constants_and_deep_nesting():
    for raw in (b"NaN", b"[-Infinity]", b'{"a": Infinity}'):
        with pytest.raises(InputError, match="not JSON"):
            load_json(raw)
    with pytest.raises(InputError, match=f"deeper than {MAX_DEPTH}"):
        load_json(b"[" * 50_000 + b"]" * 50_000)
    with pytest.raises(InputError, match="malformed JSON"):
        load_json(b"{")


def test_query_integers_are_ascii_digits_within_sqlite_integer():
    assert query_integer(None, "after", 7) == 7
    assert query_integer("9223372036854775807", "after", 0) == 2**63 - 1
    for text in ("9223372036854775808", " 1", "1_0", "\uff11", "", "1" * 5000, "-x"):
        with pytest.raises(InputError, match="must be an integer"):
            query_integer(text, "after", 0)
    with pytest.raises(InputError, match="must not be negative"):
        query_integer("-1", "after", 0)
    assert query_integer("9" * 30, "tailLines", 0, cap=2**62) == 2**62
    with pytest.raises(InputError, match="must be an integer"):
        query_integer("9" * 5000, "tailLines", 0, cap=2**62)


def test_the_rate_limited_log_writes_a_burst_then_counts(caplog):
    now = [0.0]
    limiter = RateLimiter(burst=3, window=60.0, clock=lambda: now[0])
    limited = RateLimitedLog(logging.getLogger("test.ratelog"), limiter)
    with caplog.at_level(logging.ERROR, logger="test.ratelog"):
        written = [limited.log(logging.ERROR, "k", "failure %d", i) for i in range(10)]
        assert written == [True] * 3 + [False] * 7
        assert limited.log(logging.ERROR, "other", "another key") is True
        now[0] = 61.0
        assert limited.log(logging.ERROR, "k", "failure again") is True
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "failure 0",
        "failure 1",
        "failure 2",
        "another key",
        "7 similar messages suppressed in the last 61 s (k)",
        "failure again",
    ]


def test_the_client_error_filter_drops_tracebacks_of_client_errors_only(caplog):
    logger = logging.getLogger("test.clienterrors")
    logger.addFilter(ClientErrorFilter((ConnectionError,), RateLimiter(burst=2)))
    with caplog.at_level(logging.INFO, logger="test.clienterrors"):
        for _ in range(5):
            try:
                raise ConnectionResetError("peer left\nsecond line")
            except ConnectionResetError as exc:
                logger.error("request from %s failed", "1.2.3.4", exc_info=exc)
        try:
            raise KeyError("a bug")
        except KeyError as exc:
            logger.error("handler failed", exc_info=exc)
    records = caplog.records
    assert [r.getMessage() for r in records] == [
        "request from 1.2.3.4 failed: ConnectionResetError: peer left second line",
        "request from 1.2.3.4 failed: ConnectionResetError: peer left second line",
        "handler failed",
    ]
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO, logging.ERROR]
    assert records[0].exc_info is None
    assert records[2].exc_info is not None
