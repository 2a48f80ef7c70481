"""Reconnect back-off: full jitter within bounds, a cap, the hub's retry-after as a floor."""

from __future__ import annotations

import pytest

from edgenode.backoff import Backoff


def fixed(value: float):
    return lambda: value


def test_the_bound_doubles_per_failure_up_to_the_cap():
    backoff = Backoff(1.0, 30.0, random=fixed(0.999999))
    delays = [backoff.next_delay() for _ in range(8)]
    bounds = [1, 2, 4, 8, 16, 30, 30, 30]
    for delay, bound in zip(delays, bounds, strict=True):
        assert bound * 0.999 < delay < bound


def test_full_jitter_may_be_anywhere_from_zero_to_the_bound():
    assert Backoff(1.0, 30.0, random=fixed(0.0)).next_delay() == 0.0
    backoff = Backoff(1.0, 30.0, random=fixed(0.5))
    assert [backoff.next_delay() for _ in range(3)] == [0.5, 1.0, 2.0]


def test_real_randomness_stays_within_bounds():
    backoff = Backoff(0.5, 4.0)
    for failures in range(20):
        bound = min(4.0, 0.5 * 2**failures)
        delay = backoff.next_delay()
        assert 0.0 <= delay < bound


def test_retry_after_is_a_floor():
    backoff = Backoff(1.0, 30.0, random=fixed(0.1))
    assert backoff.next_delay(retry_after=12.5) == 12.5
    assert backoff.next_delay(retry_after=0.01) == pytest.approx(0.2)


def test_reset_starts_from_the_base_again():
    backoff = Backoff(1.0, 30.0, random=fixed(0.5))
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_the_long_back_off_stays_in_the_upper_half_of_the_cap():
    low = Backoff(1.0, 30.0, random=fixed(0.0)).next_delay(long=True)
    high = Backoff(1.0, 30.0, random=fixed(0.999)).next_delay(long=True)
    assert low == 15.0
    assert 29.9 < high < 30.0


def test_huge_failure_counts_do_not_overflow():
    backoff = Backoff(1.0, 30.0, random=fixed(0.5))
    backoff.failures = 10_000
    assert backoff.next_delay() == 15.0


def test_invalid_bounds_are_refused():
    with pytest.raises(ValueError, match="base <= cap"):
        Backoff(10.0, 1.0)
    with pytest.raises(ValueError, match="base <= cap"):
        Backoff(0.0, 1.0)
