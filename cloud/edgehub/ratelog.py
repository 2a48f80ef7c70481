"""Rate-limited logging: a flood of failures (a client sending malformed requests in a
loop, a bug hit by every request) must not fill the disk with log lines and tracebacks.

:class:`RateLimitedLog` is for the hub's own messages; :class:`ClientErrorFilter` sits on
the logger the operator API's HTTP server (aiohttp) writes to, which logs every malformed
request with a traceback: a client's error, not the hub's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

LOG_BURST: Final = 10
"""Records logged per window and key; the rest of the window's are counted, not written."""
LOG_WINDOW_SECONDS: Final = 60.0
"""At most :data:`LOG_BURST` records per key in this many seconds. The first record of
the next window says how many were suppressed, so the log still tells that they
happened."""
MAX_KEYS: Final = 10_000
"""Keys tracked at once (a key per node, say); past this, the windows start over rather
than grow without bound."""


class RateLimiter:
    """At most ``burst`` events per ``window`` seconds per key."""

    def __init__(
        self,
        burst: int = LOG_BURST,
        window: float = LOG_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.window = window
        self.clock = clock
        self._windows: dict[str, tuple[float, int, int]] = {}
        """key -> (window start, events admitted, events suppressed)."""

    def admit(self, key: str) -> tuple[bool, int, float]:
        """Whether an event of ``key`` may be logged now; when it starts a new window,
        how many were suppressed in the previous one and how long that window was."""
        now = self.clock()
        start, admitted, suppressed = self._windows.get(key, (now, 0, 0))
        before, span = 0, 0.0
        if now - start >= self.window:
            before, span = suppressed, now - start
            start, admitted, suppressed = now, 0, 0
        if admitted >= self.burst:
            self._windows[key] = (start, admitted, suppressed + 1)
            return False, 0, 0.0
        if len(self._windows) >= MAX_KEYS and key not in self._windows:
            self._windows.clear()
        self._windows[key] = (start, admitted + 1, suppressed)
        return True, before, span


class RateLimitedLog:
    """A logger that writes at most ``burst`` records per ``window`` seconds per key."""

    def __init__(self, logger: logging.Logger, limiter: RateLimiter | None = None) -> None:
        self.logger = logger
        self.limiter = limiter or RateLimiter()

    def log(self, level: int, key: str, msg: str, *args: Any, exc_info: Any = None) -> bool:
        """Log unless ``key`` used up its burst in the current window; True if written."""
        allowed, suppressed, span = self.limiter.admit(key)
        if suppressed:
            message = "%d similar messages suppressed in the last %.0f s (%s)"
            self.logger.log(level, message, suppressed, span, key)
        if allowed:
            self.logger.log(level, msg, *args, exc_info=exc_info)
        return allowed


class ClientErrorFilter(logging.Filter):
    """For the HTTP server's logger: a record caused by a client (a malformed request, a
    connection reset) loses its traceback and becomes one line; every kind of record is
    rate-limited (keyed by its message template)."""

    def __init__(
        self, client_errors: tuple[type[BaseException], ...], limiter: RateLimiter | None = None
    ) -> None:
        super().__init__()
        self.client_errors = client_errors
        self.limiter = limiter or RateLimiter()

    def filter(self, record: logging.LogRecord) -> bool:
        allowed, suppressed, span = self.limiter.admit(f"{record.name}:{record.msg}")
        if not allowed:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, self.client_errors):
            text = " ".join(str(exc).split())[:200].replace("%", "%%")
            record.msg = f"{record.msg}: {type(exc).__name__}: {text}"
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} similar in the last {span:.0f} s)"
        return True
