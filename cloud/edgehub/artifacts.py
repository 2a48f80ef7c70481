"""The hub's artifact store: content-addressed files that Apps name by SHA-256.

``DATA/artifacts/sha256/<digest>`` holds verified artifacts; ``DATA/artifacts/uploads/
<digest>`` an upload in progress, which survives an interrupted ``edgectl artifact push``
(the next push of the same file resumes at its size). An upload becomes an artifact only
once its bytes hash to its name. Bounds: ``--artifact-max-bytes`` per artifact and
``--artifacts-quota`` for all of them (verified and uploading); over either, the upload is
refused (413) before a byte is written.

Nodes read artifacts in chunks over their links (``read``); operators list and delete them
(a referenced artifact is not deleted: the App checks that, see ``operations.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edgenode.files import ensure_dir
from edgenode.protocol.frames import check_digest

VERIFIED: Final = "sha256"
UPLOADS: Final = "uploads"
READ_CHUNK: Final = 1024 * 1024
DEFAULT_MAX_BYTES: Final = 2 * 1024**3
DEFAULT_QUOTA: Final = 20 * 1024**3


class ArtifactStoreError(Exception):
    """An artifact operation refused: ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str, **details: object) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


@dataclass(frozen=True)
class ArtifactInfo:
    digest: str
    size: int
    created: float
    complete: bool


class ArtifactStore:
    """Artifacts in ``root`` within the given bounds."""

    def __init__(
        self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES, quota: int = DEFAULT_QUOTA
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.quota = quota
        self._verified = root / VERIFIED
        self._uploads = root / UPLOADS
        for folder in (self._verified, self._uploads):
            ensure_dir(folder)  # 0700 with its parent ``root``, whatever the umask

    @staticmethod
    def _digest(digest: str) -> str:
        try:
            return check_digest(digest)
        except ValueError:
            raise ArtifactStoreError(400, f"not a SHA-256 digest: {digest[:80]!r}") from None

    def _path(self, digest: str) -> Path:
        return self._verified / self._digest(digest)

    def _upload(self, digest: str) -> Path:
        return self._uploads / self._digest(digest)

    # --- Reading ------------------------------------------------------------------------

    def info(self, digest: str) -> ArtifactInfo | None:
        """The artifact, or its upload in progress (``complete`` False), or None."""
        for path, complete in ((self._path(digest), True), (self._upload(digest), False)):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            return ArtifactInfo(digest, stat.st_size, stat.st_mtime, complete)
        return None

    def list(self) -> list[ArtifactInfo]:
        """Verified artifacts, oldest first."""
        items = []
        for entry in os.scandir(self._verified):
            with contextlib.suppress(FileNotFoundError):
                stat = entry.stat()
                items.append(ArtifactInfo(entry.name, stat.st_size, stat.st_mtime, True))
        return sorted(items, key=lambda i: (i.created, i.digest))

    def usage(self) -> int:
        total = 0
        for folder in (self._verified, self._uploads):
            for entry in os.scandir(folder):
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat().st_size
        return total

    def read(self, digest: str, offset: int, length: int) -> tuple[int, bytes]:
        """(size, up to ``length`` bytes at ``offset``) of a verified artifact;
        ArtifactStoreError 404 when there is none."""
        path = self._path(digest)
        try:
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if offset > size:
                    raise ArtifactStoreError(416, f"offset {offset} is past the end ({size})")
                handle.seek(offset)
                return size, handle.read(min(length, size - offset))
        except FileNotFoundError:
            raise ArtifactStoreError(404, f"no artifact {digest[:12]} on this hub") from None

    # --- Writing ------------------------------------------------------------------------

    def write(self, digest: str, offset: int, data: bytes, size: int) -> ArtifactInfo:
        """Append ``data`` at ``offset`` of the upload of the ``size``-byte artifact
        ``digest``; when it is complete, verify and keep it. ArtifactStoreError: 409 (with
        the ``received`` offset) when ``offset`` is not where the upload ends, 413 over a
        bound, 422 when the finished bytes do not hash to ``digest`` (the upload is
        dropped)."""
        digest = self._digest(digest)
        done = self.info(digest)
        if done is not None and done.complete:
            return done
        if size < 0 or size > self.max_bytes:
            raise ArtifactStoreError(
                413, f"artifact of {size} bytes is over --artifact-max-bytes ({self.max_bytes})"
            )
        received = 0 if done is None else done.size
        if offset != received:
            raise ArtifactStoreError(
                409, f"the upload is at byte {received}, not {offset}", received=received
            )
        if offset + len(data) > size:
            raise ArtifactStoreError(400, f"data ends past the declared size {size}")
        if offset == 0 and self.usage() + size > self.quota:
            raise ArtifactStoreError(
                413, f"no room: {self.usage()} of --artifacts-quota ({self.quota}) in use"
            )
        upload = self._upload(digest)
        fd = os.open(upload, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
            if offset + len(data) == size:
                os.fsync(fd)
        finally:
            os.close(fd)
        if offset + len(data) < size:
            return ArtifactInfo(digest, offset + len(data), time.time(), False)
        actual = _file_digest(upload)
        if actual != digest:
            upload.unlink(missing_ok=True)
            raise ArtifactStoreError(
                422, f"the uploaded bytes have digest {actual}, not {digest}: upload dropped"
            )
        os.replace(upload, self._path(digest))
        info = self.info(digest)
        assert info is not None
        return info

    def delete(self, digest: str) -> bool:
        """Delete an artifact and any upload of it; False if there was neither."""
        found = False
        for path in (self._path(digest), self._upload(digest)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                found = True
        return found


def _file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()
