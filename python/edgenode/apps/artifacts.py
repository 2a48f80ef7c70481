"""The node's artifact cache: content-addressed files the Apps run, under a disk quota.

``DATA_DIR/artifacts/sha256/<digest>`` holds verified artifacts (read-only, 0400): a file
appears there only after its SHA-256 matched, so nothing half-downloaded is ever run.
``DATA_DIR/artifacts/partial/<digest>`` holds a download in progress; it survives restarts
and link losses, and a fetch resumes at its size (no restart from zero on a thin link).

The quota (``[apps] artifacts_max_bytes``) counts verified and partial files. Making room
collects artifacts no App needs any more — the caller says which digests to keep (every
App's current revision, and the previous good revision's: rollback needs them); when that
is not enough, the download is refused with :class:`ArtifactQuotaError` and the App fails
with that reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, Protocol

from edgenode.apps.spec import SHA256_PATTERN
from edgenode.files import ensure_dir

VERIFIED: Final = "sha256"
PARTIAL: Final = "partial"
READ_CHUNK: Final = 1024 * 1024


class ArtifactError(Exception):
    """An artifact cannot be had; the message says why (the App's failure reason)."""


class ArtifactDigestError(ArtifactError):
    """The bytes fetched do not have the digest the App names."""


class ArtifactQuotaError(ArtifactError):
    """Not enough room under ``[apps] artifacts_max_bytes``, even after collecting."""


class ArtifactUnavailable(ArtifactError):
    """The hub does not have the artifact (or answered an error for it)."""


Progress = Callable[[int, int], None]
"""``progress(bytes_done, bytes_total)`` while downloading."""


class ArtifactSource(Protocol):
    """Where Apps get their artifacts (the node's host implements it over its hub link)."""

    async def fetch(self, digest: str, progress: Progress | None = None) -> Path:
        """The verified file of ``digest``, downloaded first if it is not cached (resuming
        a partial download; waiting while the hub is unreachable). ArtifactError when it
        cannot be had."""
        ...

    def cached(self, digest: str) -> Path | None:
        """The verified file of ``digest`` if it is cached, else None (no download)."""
        ...

    def keep(self, digests: Iterable[str]) -> None:
        """The digests Apps need (current and previous good revisions): everything else
        may be collected when room is needed."""
        ...


def check_digest(digest: str) -> str:
    if not SHA256_PATTERN.fullmatch(digest):
        raise ValueError(f"not a SHA-256 digest: {digest[:80]!r}")
    return digest


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


class ArtifactCache:
    """Verified and partial artifacts in ``root``, within ``max_bytes``."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._verified = root / VERIFIED
        self._partial = root / PARTIAL
        self._keep: set[str] = set()

    def _ensure(self) -> None:
        ensure_dir(self._verified)
        ensure_dir(self._partial)

    # --- Reading ------------------------------------------------------------------------

    def path(self, digest: str) -> Path:
        return self._verified / check_digest(digest)

    def cached(self, digest: str) -> Path | None:
        path = self.path(digest)
        return path if path.is_file() else None

    def partial_size(self, digest: str) -> int:
        try:
            return (self._partial / check_digest(digest)).stat().st_size
        except FileNotFoundError:
            return 0

    def usage(self) -> int:
        """Bytes of verified and partial artifacts."""
        total = 0
        for folder in (self._verified, self._partial):
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(folder):
                    with contextlib.suppress(FileNotFoundError):
                        total += entry.stat().st_size
        return total

    def digests(self) -> list[str]:
        """Verified artifacts, by digest."""
        try:
            return sorted(e.name for e in os.scandir(self._verified) if e.is_file())
        except FileNotFoundError:
            return []

    # --- Writing ------------------------------------------------------------------------

    def keep(self, digests: Iterable[str]) -> None:
        self._keep = set(digests)

    def reserve(self, digest: str, total: int) -> None:
        """Make room for ``digest`` of ``total`` bytes (collecting unneeded artifacts);
        ArtifactQuotaError when even that is not enough."""
        needed = total - self.partial_size(digest)
        if self.usage() + needed <= self.max_bytes:
            return
        self.collect(self._keep | {digest})
        if self.usage() + needed > self.max_bytes:
            raise ArtifactQuotaError(
                f"artifact {digest[:12]} needs {total} bytes: over [apps] artifacts_max_bytes "
                f"({self.max_bytes}) with {self.usage()} in use by Apps that need them"
            )

    def append(self, digest: str, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` of the partial file (``offset`` must be its size:
        a chunk arriving twice or out of order is refused); the new size."""
        self._ensure()
        path = self._partial / check_digest(digest)
        size = self.partial_size(digest)
        if offset != size:
            raise ArtifactError(f"chunk at {offset} of {digest[:12]}, expected {size}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return size + len(data)

    def complete(self, digest: str) -> Path:
        """Verify the partial file and move it into the cache (0400); ArtifactDigestError
        (the partial file removed: it is fetched again from zero) when it does not match."""
        self._ensure()
        partial = self._partial / check_digest(digest)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        actual = file_digest(partial)
        if actual != digest:
            partial.unlink(missing_ok=True)
            raise ArtifactDigestError(f"artifact {digest[:12]} arrived with digest {actual[:12]}")
        os.chmod(partial, 0o400)
        final = self.path(digest)
        os.replace(partial, final)
        return final

    def discard_partial(self, digest: str) -> None:
        (self._partial / check_digest(digest)).unlink(missing_ok=True)

    def collect(self, keep: Iterable[str]) -> list[str]:
        """Delete verified and partial artifacts not in ``keep``; the digests deleted."""
        wanted = set(keep)
        gone: list[str] = []
        for folder in (self._verified, self._partial):
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name not in wanted:
                    with contextlib.suppress(FileNotFoundError):
                        os.chmod(entry.path, 0o600)
                        os.unlink(entry.path)
                    gone.append(entry.name)
        return gone
