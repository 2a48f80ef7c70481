"""An App's work dir: its artifacts placed as files, its Config files written.

Artifacts are **copies** of the cache's verified files, never hard links: an App runs as
the daemon's user, which owns the cache files (and root may write any file), so a hard
link would let an App change the bytes every other App — and a later rollback — trusts.
A copy costs the artifact's size once more on disk (made in the kernel with
``copy_file_range``/``sendfile``; on btrfs or XFS it may share blocks) and is made once
per artifact: it is placed read-only and executable for the owner (0500), and replaced
before the next start whenever it is not the file placed (the App changed or removed
it). Config files are the Config's data as JSON (the same bytes as
``DATA_DIR/config/NAME.json``), 0600, rewritten only when they change. Nothing is ever
written through a symbolic link the App made: a path whose folder resolves outside the
work dir is refused.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from edgenode.files import FILE_MODE, ensure_dir, write_bytes_atomic

ARTIFACT_MODE: Final = 0o500


class WorkDirError(OSError):
    """A path of the spec cannot be written safely."""


def _safe_parent(work: Path, relative: str) -> Path:
    dest = work / relative
    ensure_dir(dest.parent)
    real_work = os.path.realpath(work)
    real_parent = os.path.realpath(dest.parent)
    if real_parent != real_work and not real_parent.startswith(real_work + os.sep):
        raise WorkDirError(f"{relative}: its folder leads outside the App's work dir")
    if dest.is_symlink():
        dest.unlink()
    return dest


def _record(path: Path, digest: str) -> dict[str, Any]:
    info = path.stat()
    return {
        "sha256": digest,
        "ino": info.st_ino,
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
    }


def place_artifact(
    work: Path, name: str, digest: str, source: Path, recorded: dict[str, Any] | None
) -> dict[str, Any]:
    """Make ``work/name`` a read-only copy of ``source``; the record to keep for the next
    check (an unchanged earlier copy is kept as is)."""
    dest = _safe_parent(work, name)
    if recorded is not None and recorded.get("sha256") == digest:
        with contextlib.suppress(OSError):
            if _record(dest, digest) == recorded:
                return recorded
    import shutil

    tmp = dest.with_name(f".{dest.name}.edgenode-tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, ARTIFACT_MODE)
        os.replace(tmp, dest)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return _record(dest, digest)


def write_file(work: Path, relative: str, data: bytes) -> None:
    """``work/relative`` holds ``data`` (0600), written only when it differs."""
    dest = _safe_parent(work, relative)
    with contextlib.suppress(OSError):
        if dest.read_bytes() == data:
            return
    write_bytes_atomic(dest, data, FILE_MODE)


def remove_stale(work: Path, old: Iterable[str], keep: Iterable[str]) -> None:
    """Remove files this node placed before (``old``) that the spec no longer names."""
    wanted = set(keep)
    for relative in old:
        if relative in wanted:
            continue
        path = work / relative
        with contextlib.suppress(OSError):
            real = os.path.realpath(path.parent)
            if real == os.path.realpath(work) or real.startswith(os.path.realpath(work) + os.sep):
                path.unlink()


def remove_tree(path: Path) -> None:
    """Remove a folder and everything in it (read-only artifact copies included)."""
    import shutil

    def writable(func: Any, target: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target) or ".", 0o700)
            os.chmod(target, 0o700)
            func(target)

    if path.is_symlink():
        path.unlink()
        return
    shutil.rmtree(path, onerror=writable)
