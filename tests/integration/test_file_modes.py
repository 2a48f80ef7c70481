"""Under umask 022, a real ``edgehub serve`` and a real ``edgenode run`` keep every file
they create owner-only (issue 18): folders 0700, files 0600 — the hub's data folder,
``hub.db`` with its -wal and -shm and ``admin.token``; the node's data_dir, ``node.db``
with its -wal and -shm, its state files and the Config it received (Config data is often a
secret). Files from an older version, left 0644, are narrowed at the next start."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from node.conftest import NodeProcess

from hub.conftest import RunningHub

pytestmark = pytest.mark.timeout(120)

CONFIG = """
apiVersion: edgenode.io/v1
kind: Config
metadata: {name: secrets}
spec: {data: {password: hunter2}}
"""


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)  # inherited by the processes started below
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, str]:
    """Every folder and file under ``root`` (itself included) with its mode."""
    found = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = oct(stat.S_IMODE(path.stat().st_mode))
    return found


def owner_only(found: dict[str, str], root: Path) -> dict[str, str]:
    """The entries of ``found`` that are not 0700 folders or 0600 files."""
    return {
        name: mode
        for name, mode in found.items()
        if mode != ("0o700" if (root / name).is_dir() else "0o600")
    }


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_hub_and_node_files_are_owner_only_under_umask_022(tmp_path, umask_022):
    hub_dir = tmp_path / "hub-data"  # created by the hub itself
    hub = RunningHub(hub_dir, log_file=tmp_path / "hub.log")
    node = NodeProcess(tmp_path / "node")
    (tmp_path / "node").mkdir()
    try:
        hub.start()
        token = hub.node_add("ship-7")
        assert hub.apply(CONFIG)[0] == 200
        node.configure(hub.link, token=token, mqtt={"enabled": False})
        node.start()
        wait_for((node.data_dir / "config" / "secrets.json").exists)
        wait_for((node.data_dir / "node.db-wal").exists)
        hub_modes = modes(hub_dir)
        node_modes = modes(node.data_dir)
    finally:
        node.stop()
        hub.stop()
    assert {"hub.db", "hub.db-wal", "hub.db-shm", "admin.token"} <= set(hub_modes)
    assert owner_only(hub_modes, hub_dir) == {}
    assert {"node.db", "node.db-wal", "node.db-shm", "config", "config/secrets.json"} <= set(
        node_modes
    )
    assert owner_only(node_modes, node.data_dir) == {}


def test_files_an_older_version_left_world_readable_are_narrowed(tmp_path, umask_022):
    hub_dir = tmp_path / "hub-data"
    hub = RunningHub(hub_dir, log_file=tmp_path / "hub.log")
    hub.start()
    hub.node_add("ship-7")
    hub.stop()
    for name in ("hub.db", "hub.db-wal", "hub.db-shm"):
        if (hub_dir / name).exists():
            os.chmod(hub_dir / name, 0o644)
    hub.start()
    try:
        found = modes(hub_dir)
    finally:
        hub.stop()
    assert found["hub.db"] == "0o600"
    assert owner_only(found, hub_dir) == {}
