"""Reconnect delays: exponential back-off with full jitter, floored by the hub's retry-after.

Pure and deterministic given its random source: ``Backoff(base, cap, random=...)`` gives
``next_delay()`` = a uniform draw in ``[0, min(cap, base * 2**failures))`` ("full jitter",
so a fleet restarted together spreads out instead of reconnecting in lock-step), never
less than a retry-after hint, and ``reset()`` after a connection that worked.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from typing import Final

MAX_EXPONENT: Final = 62
"""Doubling stops here (the cap is reached long before; this only avoids huge ints)."""
LONG_BACKOFF_FLOOR: Final = 0.5
"""For failures an operator must fix (bad token, unknown node): at least half the cap."""


class Backoff:
    """Reconnect delay policy of the cloud link."""

    def __init__(
        self,
        base: float,
        cap: float,
        *,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"need 0 < base <= cap, got base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self._random = random
        self.failures = 0

    def bound(self) -> float:
        """The upper bound of the next delay: ``min(cap, base * 2**failures)``."""
        return min(self.cap, self.base * float(1 << min(self.failures, MAX_EXPONENT)))

    def next_delay(self, retry_after: float = 0.0, *, long: bool = False) -> float:
        """The delay before the next attempt; counts one more failure.

        ``retry_after`` (the hub's hint) is a floor. ``long`` is for failures that need
        an operator (rejected token, unknown node): a delay in ``[cap/2, cap)`` so the
        node does not hammer the hub, yet still retries by itself.
        """
        if long:
            low = self.cap * LONG_BACKOFF_FLOOR
            delay = low + self._random() * (self.cap - low)
        else:
            delay = self._random() * self.bound()
        self.failures += 1
        return max(delay, retry_after)

    def reset(self) -> None:
        """A connection worked: the next failure starts from ``base`` again."""
        self.failures = 0
