"""Admission control of node links: how many initial syncs may run at once, and when a
refused node should come back.

A hello is admitted while fewer than ``max_handshakes`` accepted links have not yet
acknowledged their initial sync; others are told to retry after a delay that spreads a
reconnecting fleet over the time the hub needs to absorb it (``retry_delay``). Only
admitted handshakes count: counting every waiting connection would refuse everyone in a
reconnect storm (all retry together, all are refused again).
"""

from __future__ import annotations

import heapq
import random
import time
from collections import deque
from collections.abc import Callable

from edgenode.protocol.constants import MAX_RETRY_AFTER

MIN_RETRY_BASE = 0.001
"""Seconds; stands in for a base retry-after of 0 when the absorb rate is estimated."""
SYNC_RATE_WINDOW = 2.0
"""Seconds over which completed initial syncs are counted to estimate the admission rate."""


class Admission:
    """Counts initial syncs in progress and paces refused nodes."""

    def __init__(
        self,
        max_handshakes: int,
        retry_after: float,
        on_change: Callable[[int], None] = lambda syncing: None,
    ) -> None:
        self.max_handshakes = max_handshakes
        self.retry_after = retry_after
        self.syncing = 0
        """Accepted links whose initial sync is not acknowledged yet."""
        self._on_change = on_change
        self._synced_at: deque[float] = deque()
        """When recent initial syncs were acknowledged (the admission rate)."""
        self._promised: list[float] = []
        """When refused nodes were told to come back (a heap)."""

    def over_capacity(self) -> bool:
        return self.syncing >= self.max_handshakes

    def sync_started(self) -> None:
        self.syncing += 1
        self._on_change(self.syncing)

    def sync_ended(self, *, acked: bool) -> None:
        """An initial sync ended: acknowledged (counts towards the rate) or abandoned."""
        if acked:
            now = time.monotonic()
            self._synced_at.append(now)
            self._recent_syncs(now)  # keeps the window bounded
        self.syncing -= 1
        self._on_change(self.syncing)

    def retry_delay(self) -> float:
        """The retry-after for a refused hello: the base delay plus jitter spread wide
        enough for the nodes already told to come back to be absorbed.

        The rate the hub absorbs nodes at is measured: initial syncs acknowledged in the
        last ``SYNC_RATE_WINDOW`` seconds, never taken as less than ``max_handshakes`` per
        base delay (also the assumption before anything was measured). With ``waiting``
        nodes promised a return, the jitter spreads over ``max(base, waiting / rate)``
        seconds, the time the hub needs to take them all; a fixed window would bring a
        large fleet back all together, to be refused again (each refusal costs a whole
        handshake).
        """
        now = time.monotonic()
        promised = self._promised
        while promised and promised[0] <= now:
            heapq.heappop(promised)
        base = self.retry_after
        floor = max(1, self.max_handshakes) / max(base, MIN_RETRY_BASE)
        rate = max(floor, self._recent_syncs(now) / SYNC_RATE_WINDOW)
        spread = max(base, len(promised) / rate)
        delay = min(MAX_RETRY_AFTER, base + random.random() * spread)
        heapq.heappush(promised, now + delay)
        return delay

    def _recent_syncs(self, now: float) -> int:
        """Initial syncs acknowledged in the last ``SYNC_RATE_WINDOW`` seconds."""
        synced = self._synced_at
        while synced and synced[0] < now - SYNC_RATE_WINDOW:
            synced.popleft()
        return len(synced)
