"""What the node and the hub send each other beyond desired state and uplink: artifacts of
Apps (node ← hub) and App logs (node → hub), over the node's one link.

:class:`ArtifactDownloads` is the host's ``ArtifactSource``: Apps ``await fetch(digest)``;
the cloud link asks it what to request whenever it can send (:meth:`issue`) and hands it
what arrives. One fetch per artifact is outstanding at a time, from where its partial
file ends, so a download resumes after a link loss instead of starting over, and chunks
are sized to the link: small enough to arrive well within the heartbeat deadline on a
thin link (a 64 kbit/s satellite link moves 8 KB/s), large on a fast one.

:class:`LogStreams` answers the hub's log requests from the App service's ``LogSource``,
one task per request, cancelled when the hub cancels or the link ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from edgenode.apps.artifacts import (
    ArtifactCache,
    ArtifactError,
    ArtifactUnavailable,
    Progress,
    check_digest,
)
from edgenode.protocol import NodeProtocol
from edgenode.protocol.constants import MAX_ARTIFACT_REQUESTS
from edgenode.protocol.events import ArtifactReceived, ArtifactRefused
from edgenode.service import LogSource

log = logging.getLogger("edgenode.transfers")

FIRST_CHUNK: Final = 16 * 1024
MIN_CHUNK: Final = 4 * 1024
CHUNK_SECONDS_OF_HEARTBEAT: Final = 0.3
"""A chunk should take at most this share of the heartbeat interval to arrive: a frame
counts as life only once it is whole, so a chunk slower than the deadline would cut the
link it travels on."""
LOG_CHUNK: Final = 64 * 1024


@dataclass
class _Download:
    digest: str
    waiters: list[asyncio.Future[Path]] = field(default_factory=list)
    progress: list[Progress] = field(default_factory=list)
    size: int | None = None
    asked: int | None = None
    """Offset of the fetch in flight (None: none)."""
    asked_at: float = 0.0


class ArtifactDownloads:
    """Artifacts for Apps, from the cache or over the link (``ArtifactSource``)."""

    def __init__(self, cache: ArtifactCache, wake: Callable[[], None]) -> None:
        self.cache = cache
        self._wake = wake
        self._downloads: dict[str, _Download] = {}
        self._chunk = FIRST_CHUNK
        self.heartbeat = 15.0
        """The link's heartbeat interval (the link sets it at every welcome)."""

    # --- ArtifactSource -----------------------------------------------------------------

    def cached(self, digest: str) -> Path | None:
        return self.cache.cached(digest)

    def keep(self, digests: Iterable[str]) -> None:
        self.cache.keep(digests)

    async def fetch(self, digest: str, progress: Progress | None = None) -> Path:
        check_digest(digest)
        path = self.cache.cached(digest)
        if path is not None:
            return path
        download = self._downloads.setdefault(digest, _Download(digest))
        future: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        download.waiters.append(future)
        if progress is not None:
            download.progress.append(progress)
        self._wake()
        try:
            return await future
        finally:
            if future in download.waiters:
                download.waiters.remove(future)
            if progress is not None and progress in download.progress:
                download.progress.remove(progress)
            if not download.waiters and self._downloads.get(digest) is download:
                # Nobody waits any more: stop asking (the partial file stays for later).
                del self._downloads[digest]

    @property
    def downloading(self) -> list[str]:
        return sorted(self._downloads)

    # --- The link's side ----------------------------------------------------------------

    def issue(self, proto: NodeProtocol) -> None:
        """Send a fetch for every wanted artifact without one in flight."""
        for download in list(self._downloads.values()):
            if download.asked is not None:
                continue
            if proto.artifact_fetches >= MAX_ARTIFACT_REQUESTS:
                return
            offset = self.cache.partial_size(download.digest)
            size = max(MIN_CHUNK, min(self._chunk, proto.max_artifact_chunk))
            proto.fetch_artifact(download.digest, offset, size)
            download.asked = offset
            download.asked_at = time.monotonic()

    def received(self, event: ArtifactReceived) -> None:
        download = self._downloads.get(event.digest)
        if download is None:
            return  # nobody waits any more
        download.asked = None
        self._adapt(len(event.data), time.monotonic() - download.asked_at)
        try:
            if download.size is None:
                download.size = event.size
                self.cache.reserve(event.digest, event.size)
            end = event.offset + len(event.data)
            if event.data:
                end = self.cache.append(event.digest, event.offset, event.data)
            for progress in list(download.progress):
                progress(end, event.size)
            if end >= event.size:
                path = self.cache.complete(event.digest)
                log.info("artifact %s: %d bytes verified", event.digest[:12], event.size)
                self._finish(download, path)
                return
        except (ArtifactError, OSError) as exc:
            self._fail(download, exc if isinstance(exc, ArtifactError) else ArtifactError(str(exc)))
            return
        self._wake()

    def refused(self, event: ArtifactRefused) -> None:
        download = self._downloads.get(event.digest)
        if download is None:
            return
        download.asked = None
        self._fail(
            download,
            ArtifactUnavailable(
                f"the hub cannot send artifact {event.digest[:12]}: {event.message}"
            ),
        )

    def disconnected(self) -> None:
        """The link ended: what was in flight is asked again (from the partial file's end)
        on the next connection."""
        for download in self._downloads.values():
            download.asked = None

    def _adapt(self, size: int, seconds: float) -> None:
        if size <= 0:
            return
        target = self.heartbeat * CHUNK_SECONDS_OF_HEARTBEAT
        rate = size / max(seconds, 0.001)
        self._chunk = int(max(MIN_CHUNK, min(rate * target, 64 * 1024 * 1024)))

    def _finish(self, download: _Download, path: Path) -> None:
        self._downloads.pop(download.digest, None)
        for waiter in download.waiters:
            if not waiter.done():
                waiter.set_result(path)

    def _fail(self, download: _Download, error: ArtifactError) -> None:
        log.warning("artifact %s: %s", download.digest[:12], error)
        self._downloads.pop(download.digest, None)
        for waiter in download.waiters:
            if not waiter.done():
                waiter.set_exception(error)


class LogStreams:
    """The hub's log requests, answered from the App service's ``LogSource``."""

    def __init__(self) -> None:
        self.source: LogSource | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def start(
        self,
        proto: NodeProtocol,
        request: int,
        app: str,
        tail: int,
        follow: bool,
        flushed: Callable[[], asyncio.Future[None]],
    ) -> None:
        """Answer request ``request``: a task sends the log, pacing itself on the link's
        flushes (``flushed()`` resolves after the next one), so a slow link is never
        handed more than a chunk ahead."""
        lines = None if self.source is None else self.source.app_log(app, tail, follow)
        if lines is None:
            proto.end_log(request, 404, f"no App {app!r} on this node")
            return
        self._tasks[request] = asyncio.create_task(self._send(proto, request, lines, flushed))

    async def _send(
        self,
        proto: NodeProtocol,
        request: int,
        lines: AsyncIterator[bytes],
        flushed: Callable[[], asyncio.Future[None]],
    ) -> None:
        try:
            async for chunk in lines:
                for start in range(0, len(chunk), LOG_CHUNK):
                    proto.send_log(request, chunk[start : start + LOG_CHUNK])
                    await flushed()
            proto.end_log(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the log could not be read: the hub says so
            log.warning("log request %d failed: %s", request, exc)
            proto.end_log(request, 500, f"cannot read the log: {exc}")
        finally:
            self._tasks.pop(request, None)
            aclose = getattr(lines, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def cancel(self, request: int) -> None:
        task = self._tasks.pop(request, None)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        for request in list(self._tasks):
            self.cancel(request)
