"""The store's files are owner-only whatever the umask (issue 18: node.db, its -wal and
-shm were created 0644 under umask 022, with Config data in them). Both backends alike;
the umask is set here only for the test (the store never touches it)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_store_and_its_wal_and_shm_are_0600_under_umask_022(core, tmp_path, umask_022):
    path = tmp_path / "node.db"
    store = core.Store(str(path))
    store.append(b"secret", now=0)  # the WAL has a frame; -shm exists while open
    assert os.umask(0o022) == 0o022  # the store left the process umask alone
    assert {p.name: oct(mode(p)) for p in files(path)} == {p.name: "0o600" for p in files(path)}
    store.close()


def test_an_existing_world_readable_store_is_narrowed_when_opened(core, tmp_path, umask_022):
    path = tmp_path / "node.db"
    store = core.Store(str(path))
    store.append(b"secret", now=0)
    for p in files(path):
        os.chmod(p, 0o644)  # as an older version left them
    os.chmod(path, 0o664)
    again = core.Store(str(path))  # a second connection: the first keeps the files
    assert [oct(mode(p)) for p in files(path)] == ["0o600"] * 3
    again.close()
    store.close()


def test_a_salvaged_store_is_0600(core, tmp_path, umask_022):
    path = tmp_path / "node.db"
    store = core.Store(str(path))
    store.append(b"secret", now=0)
    store.close()
    dest = tmp_path / "salvaged.db"
    core.Store.salvage(str(path), str(dest))
    assert mode(dest) == 0o600


def test_a_store_in_a_missing_folder_still_fails_as_before(core, tmp_path):
    from edgenode.errors import StoreError

    with pytest.raises(StoreError, match="unable to open"):
        core.Store(str(tmp_path / "missing" / "node.db"))


def test_ensure_dir_makes_every_missing_level_0700_under_umask_022(tmp_path, umask_022):
    from edgenode.files import ensure_dir

    (tmp_path / "kept").mkdir(mode=0o755)
    os.chmod(tmp_path / "kept", 0o755)
    ensure_dir(tmp_path / "kept" / "a" / "b")
    assert mode(tmp_path / "kept") == 0o755  # what exists is left as its owner made it
    assert mode(tmp_path / "kept" / "a") == 0o700
    assert mode(tmp_path / "kept" / "a" / "b") == 0o700
    ensure_dir(tmp_path / "kept" / "a" / "b")  # again: nothing to do
