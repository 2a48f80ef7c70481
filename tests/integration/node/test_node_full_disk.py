"""A full disk: the daemon reports it, keeps running, loses nothing, and recovers by itself.

data_dir is a real 4 MiB tmpfs mounted by the test (tests run as root) and filled with a
filler file; freeing the space is all it takes to recover.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.fakehub import FakeHub, wait_for

TMPFS_SIZE = "4m"


@pytest.fixture
def small_disk(node) -> Iterator[Path]:
    node.data_dir.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(node.data_dir)],
        check=True,
        timeout=10,
    )
    yield node.data_dir
    node.stop()
    subprocess.run(["umount", "-l", str(node.data_dir)], check=False, timeout=10)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full (unbuffered, so no write is pending)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_is_reported_and_the_node_recovers_when_space_returns(
    hub: FakeHub, node, small_disk
):
    first = hub.publish([("Config/default/a", {"v": 1})])
    # persist_interval 0.1: while the link is down (it drops on the persist error) the
    # status is stored at every sample, so the full disk refuses it too.
    node.configure(hub.url, status={"interval": 0.1, "persist_interval": 0.1})
    node.start()
    wait_for(lambda: hub.acked_revision.get("ship-7") == first, 10, "the first ack")
    filler = fill(small_disk)

    # Desired state that cannot be persisted is not acknowledged.
    second = hub.publish([("Config/default/b", {"big": "x" * 200_000})])
    wait_for(lambda: "cannot persist desired state" in node.log(), 10, "the persist error")
    wait_for(lambda: "cannot queue node status" in node.log(), 10, "the status error")
    assert hub.acked_revision["ship-7"] == first
    assert node.proc is not None
    assert node.proc.poll() is None
    status = node.status_json()
    assert status["applied_revision"] == first
    assert [r["key"] for r in status["resources"]] == ["Config/default/a"]
    assert status["disk"]["free"] == 0
    assert "disk:      FULL: 0 bytes free" in node.status().stdout
    assert "cannot write the link state file" in node.log()

    assert not list(small_disk.glob(".*.tmp"))  # no half-written state files left behind
    filler.unlink()
    wait_for(lambda: hub.acked_revision.get("ship-7") == second, 15, "the ack after recovery")
    assert node.status_json()["applied_revision"] == second
    assert "Traceback" not in node.log()
