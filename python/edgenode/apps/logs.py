"""Each App's stdout and stderr in a size-bounded rotating file, and the ``LogSource``
that answers the hub's log requests (``edgectl logs app NAME --node N``).

An App's output (stdout and stderr on one pipe, in the order written) is appended to
``output.log``; a write that would take it past ``[apps] log_max_bytes`` first renames it
to ``output.log.1`` (replacing the older one) and starts a new file. So an App's log
never takes more than twice ``log_max_bytes`` on disk; a single write larger than
``log_max_bytes`` keeps only its last ``log_max_bytes``. The daemon adds lines of its own
(``[edgenode 2026-11-27T05:51:03Z] started pid 4242 (revision 3)``), so a log tells when
an instance started and how it ended. Nothing is fsynced: the page cache writes it out
(flash wear), so the last seconds of output may be lost in a power cut.

Reading: the last ``tail`` lines over both files (0: everything kept), then, with
``follow``, what the App writes from then on. A follower that cannot keep up (a slow
link) gets at most FOLLOW_QUEUE_BYTES queued; beyond that output is skipped and a line
says how much.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import IO, Final

from edgenode.files import FILE_MODE, ensure_dir

log = logging.getLogger("edgenode.apps")

LOG_FILE: Final = "output.log"
OLD_SUFFIX: Final = ".1"
READ_BLOCK: Final = 64 * 1024
"""Bytes read from a log file per step (tail search and streaming)."""
FOLLOW_QUEUE_BYTES: Final = 1024 * 1024
"""Output queued for one follower at most; beyond it is skipped (and said)."""


class Follower:
    """New output for one ``follow`` request, bounded."""

    def __init__(self, owner: RotatingLog) -> None:
        self._owner = owner
        self._chunks: collections.deque[bytes | int] = collections.deque()
        """Output, and counts of bytes skipped at that point (ints)."""
        self._queued = 0
        self._event = asyncio.Event()
        self._closed = False

    def put(self, data: bytes) -> None:
        if self._queued + len(data) > FOLLOW_QUEUE_BYTES:
            if self._chunks and isinstance(self._chunks[-1], int):
                self._chunks[-1] += len(data)
            else:
                self._chunks.append(len(data))
        else:
            self._chunks.append(data)
            self._queued += len(data)
        self._event.set()

    def end(self) -> None:
        self._closed = True
        self._event.set()

    async def next(self) -> bytes | None:
        """The next output (None: the log was closed: the App went away)."""
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                if isinstance(data, int):
                    text = f"\n[edgenode] {data} bytes of output skipped: the reader is too slow\n"
                    return text.encode()
                self._queued -= len(data)
                return data
            if self._closed:
                return None
            self._event.clear()
            await self._event.wait()

    def close(self) -> None:
        self._owner.unfollow(self)


def stamp(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


class RotatingLog:
    """One App's output file, rotated at ``max_bytes`` (one old file kept)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.old = path.with_name(path.name + OLD_SUFFIX)
        self.max_bytes = max_bytes
        self.dropped = 0
        """Bytes that could not be written (a full disk)."""
        self._fd: int | None = None
        self._size = 0
        self._newline = True
        self._followers: set[Follower] = set()
        self._warned = False

    def _open(self) -> int:
        if self._fd is None:
            ensure_dir(self.path.parent)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        os.replace(self.path, self.old)

    def write(self, data: bytes) -> None:
        """Append ``data`` (rotating first when it would not fit)."""
        if not data:
            return
        if len(data) > self.max_bytes:
            data = data[-self.max_bytes :]
        try:
            self._open()
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            fd = self._open()
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
                self._size += written
        except OSError as exc:
            self.dropped += len(data)
            if not self._warned:
                log.warning("cannot write %s: %s (output dropped)", self.path, exc.strerror or exc)
                self._warned = True
            return
        self._warned = False
        self._newline = data.endswith(b"\n")
        for follower in list(self._followers):
            follower.put(data)

    def note(self, text: str, wall: float | None = None) -> None:
        """A line of the daemon's own in the log."""
        when = stamp(time.time() if wall is None else wall)
        prefix = b"" if self._newline else b"\n"
        self.write(prefix + f"[edgenode {when}] {text}\n".encode())

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        for follower in list(self._followers):
            follower.end()
        self._followers.clear()

    def follow(self) -> Follower:
        follower = Follower(self)
        self._followers.add(follower)
        return follower

    def unfollow(self, follower: Follower) -> None:
        self._followers.discard(follower)

    def snapshot(self) -> list[tuple[IO[bytes], int]]:
        """The old and current file, opened now, with their sizes now (what a reader may
        read even if they are rotated while it does)."""
        files: list[tuple[IO[bytes], int]] = []
        for path in (self.old, self.path):
            try:
                handle = open(path, "rb")  # noqa: SIM115 - closed by the reader
            except OSError:
                continue
            files.append((handle, os.fstat(handle.fileno()).st_size))
        return files


def tail_start(files: list[tuple[IO[bytes], int]], lines: int) -> tuple[int, int]:
    """Where the last ``lines`` lines of the files' concatenation start: (file index,
    offset). ``lines`` <= 0: the beginning. A final newline ends the last line."""
    if lines <= 0:
        return (0, 0)
    count = 0
    last = True
    for index in range(len(files) - 1, -1, -1):
        handle, end = files[index]
        while end > 0:
            start = max(0, end - READ_BLOCK)
            handle.seek(start)
            block = handle.read(end - start)
            search = len(block)
            if last and block:
                if block.endswith(b"\n"):
                    search -= 1
                last = False
            while (found := block.rfind(b"\n", 0, search)) >= 0:
                count += 1
                if count == lines:
                    return (index, start + found + 1)
                search = found
            end = start
    return (0, 0)


async def read_log(
    files: list[tuple[IO[bytes], int]], tail: int, follower: Follower | None
) -> AsyncGenerator[bytes, None]:
    """The last ``tail`` lines of ``files``, then what ``follower`` gets."""
    try:
        index, offset = tail_start(files, tail)
        for position in range(index, len(files)):
            handle, size = files[position]
            handle.seek(offset)
            remaining = size - offset
            offset = 0
            while remaining > 0:
                chunk = handle.read(min(READ_BLOCK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk
        for handle, _ in files:
            handle.close()
        if follower is not None:
            while (data := await follower.next()) is not None:
                yield data
    finally:
        for handle, _ in files:
            handle.close()
        if follower is not None:
            follower.close()


class AppLogs:
    """The node's App logs by App name: the ``LogSource`` the service registers."""

    def __init__(self) -> None:
        self._logs: dict[str, RotatingLog] = {}

    def add(self, name: str, log_file: RotatingLog) -> None:
        self._logs[name] = log_file

    def remove(self, name: str) -> None:
        found = self._logs.pop(name, None)
        if found is not None:
            found.close()

    def get(self, name: str) -> RotatingLog | None:
        return self._logs.get(name)

    def app_log(self, app: str, tail: int, follow: bool) -> AsyncIterator[bytes] | None:
        found = self._logs.get(app)
        if found is None:
            return None
        # Both taken now, with no await between: nothing is missed or sent twice.
        files = found.snapshot()
        follower = found.follow() if follow else None
        return LogReader(files, tail, follower)


class LogReader:
    """An async iterator over :func:`read_log` that releases its files and follower on
    ``aclose`` even if it was never started (a request cancelled at once)."""

    def __init__(
        self, files: list[tuple[IO[bytes], int]], tail: int, follower: Follower | None
    ) -> None:
        self._files = files
        self._follower = follower
        self._lines = read_log(files, tail, follower)

    def __aiter__(self) -> LogReader:
        return self

    async def __anext__(self) -> bytes:
        return await self._lines.__anext__()

    async def aclose(self) -> None:
        await self._lines.aclose()
        for handle, _ in self._files:
            handle.close()
        if self._follower is not None:
            self._follower.close()
