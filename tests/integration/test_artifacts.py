"""Artifacts, the files Apps run: pushed to a real ``edgehub serve`` with ``edgectl
artifact push`` (resuming an interrupted upload, refusing bytes that do not hash to their
name), named by Apps (unknown digests refused at apply, a used artifact not deleted), and
fetched by a real ``edgenode run`` over its link — resuming after the link is cut in the
middle of a slow transfer, never running (never handing out) bytes whose digest is wrong."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from node.conftest import NodeProcess
from node.fakehub import Background, Proxy, wait_for

from hub.conftest import RunningHub
from integration.fleet import Fleet

pytestmark = pytest.mark.timeout(180)

MIB = 1024 * 1024
APP = """
apiVersion: edgenode.io/v1
kind: App
metadata: {{name: {name}}}
spec:
  node: ship-1
  artifacts: [{{name: tool.bin, sha256: "{digest}"}}]
  command: ["./tool.bin"]
"""
FETCHER = Path(__file__).resolve().parent / "node" / "fetcher.py"


def ctl(hub: RunningHub, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return hub.ctl(*args, stdin=stdin)


def write_random(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_push_resumes_lists_and_refuses_what_does_not_match(tmp_path: Path):
    with Fleet(tmp_path) as fleet:
        hub = fleet.hub()
        tool = tmp_path / "tool.bin"
        digest = write_random(tool, 3 * MIB)
        # An interrupted push: only its first piece reached the hub.
        status, _ = hub.call(
            "PUT",
            f"/v1/artifacts/{digest}?offset=0&size={3 * MIB}",
            raw=tool.read_bytes()[:MIB],
            content_type="application/octet-stream",
        )
        assert status == 200
        pushed = ctl(hub, "artifact", "push", str(tool))
        assert pushed.returncode == 0, pushed.stderr
        assert pushed.stdout.strip() == digest
        assert "resuming the upload at 1.0 MiB of 3.0 MiB" in pushed.stderr
        again = ctl(hub, "artifact", "push", str(tool))
        assert again.stdout.strip() == digest
        assert "already on the hub" in again.stderr
        listing = ctl(hub, "get", "artifacts").stdout.splitlines()
        assert listing[0].split() == ["DIGEST", "SIZE", "AGE", "APPS"]
        assert listing[1].split()[:3] == [digest, "3.0", "MiB"]
        # Bytes that do not hash to the name they are uploaded under are refused.
        status, body = hub.call(
            "PUT",
            f"/v1/artifacts/{'0' * 64}?offset=0&size=4",
            raw=b"evil",
            content_type="application/octet-stream",
        )
        assert status == 422
        assert "upload dropped" in body["error"]
        # Apps name artifacts by digest: an unknown one is refused at apply.
        unknown = ctl(hub, "apply", "-f", "-", stdin=APP.format(name="a", digest="1" * 64))
        assert unknown.returncode == 1
        assert "spec.artifacts[0].sha256" in unknown.stderr
        assert "edgectl artifact push" in unknown.stderr
        hub.node_add("ship-1")
        created = ctl(hub, "apply", "-f", "-", stdin=APP.format(name="a", digest=digest))
        assert created.returncode == 0, created.stderr
        assert ctl(hub, "get", "artifacts").stdout.splitlines()[1].split()[-1] == "a"
        refused = ctl(hub, "artifact", "delete", digest)
        assert refused.returncode == 1
        assert "used by App a" in refused.stderr
        assert ctl(hub, "delete", "app", "a").returncode == 0
        assert ctl(hub, "artifact", "delete", digest).returncode == 0
        assert "No artifacts found" in ctl(hub, "get", "artifacts").stderr


def start_fetcher(node: NodeProcess, url: str, token: str, digest: str) -> None:
    node.configure(url, token, mqtt={"enabled": False})
    node.start(args=[sys.executable, str(FETCHER), str(node.config_path), digest])


class Lines:
    """The fetcher's stdout, read without blocking the test."""

    def __init__(self, node: NodeProcess) -> None:
        assert node.proc is not None
        assert node.proc.stdout is not None
        os.set_blocking(node.proc.stdout.fileno(), False)
        self.stdout = node.proc.stdout
        self.lines: list[str] = []
        self._rest = b""

    def read(self) -> list[str]:
        chunk = self.stdout.read() or b""
        text = self._rest + chunk
        *complete, self._rest = text.split(b"\n")
        self.lines += [line.decode() for line in complete]
        return self.lines

    def find(self, prefix: str) -> str | None:
        return next((line for line in self.read() if line.startswith(prefix)), None)


def partial_size(node: NodeProcess, digest: str) -> int:
    try:
        return (node.data_dir / "artifacts" / "partial" / digest).stat().st_size
    except FileNotFoundError:
        return 0


def test_a_node_fetches_an_artifact_over_its_link_resuming_after_a_cut(tmp_path: Path):
    background = Background()
    with Fleet(tmp_path) as fleet:
        hub = fleet.hub()
        artifact = tmp_path / "model.bin"
        size = 2 * MIB
        digest = write_random(artifact, size)
        assert ctl(hub, "artifact", "push", str(artifact)).returncode == 0
        token = hub.node_add("ship-1")
        link_port = int(hub.link.rsplit(":", 1)[1].split("/")[0])
        proxy = Proxy(background, link_port, rate=256 * 1024)
        proxy.start()
        try:
            node = fleet.node("ship-1")
            start_fetcher(node, proxy.url, token, digest)
            out = Lines(node)
            wait_for(lambda: partial_size(node, digest) >= 512 * 1024, 30, "half a MiB fetched")
            proxy.cut()  # mid-transfer: the node reconnects and resumes
            before_cut = partial_size(node, digest)
            fetched = wait_for(lambda: out.find("fetched "), 60, "the artifact verified")
            path = Path(fetched.split(" ", 1)[1])
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
            assert oct(path.stat().st_mode & 0o777) == "0o400"  # the cache is read-only
            assert before_cut > 0
            # Resumed, not restarted: the proxy carried the artifact about once.
            assert proxy.forwarded < size * 1.4
            progress = [line for line in out.read() if line.startswith("progress ")]
            assert progress[-1] == f"progress {size} {size}"
            assert partial_size(node, digest) == 0
        finally:
            proxy.stop()
            background.close()


def test_bytes_that_do_not_match_their_digest_are_never_handed_out(tmp_path: Path):
    with Fleet(tmp_path) as fleet:
        hub = fleet.hub()
        artifact = tmp_path / "tool.bin"
        digest = write_random(artifact, 100_000)
        assert ctl(hub, "artifact", "push", str(artifact)).returncode == 0
        # The hub's copy is damaged on its disk (same size, other bytes).
        stored = hub.data / "artifacts" / "sha256" / digest
        stored.chmod(0o600)
        stored.write_bytes(os.urandom(100_000))
        token = hub.node_add("ship-1")
        node = fleet.node("ship-1")
        start_fetcher(node, hub.link, token, digest)
        out = Lines(node)
        failed = wait_for(lambda: out.find("failed "), 30, "the fetch failing")
        assert "arrived with digest" in failed
        assert not (node.data_dir / "artifacts" / "sha256" / digest).exists()
        assert partial_size(node, digest) == 0
