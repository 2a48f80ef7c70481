"""Bad input and faults: each gives a clear message, and nothing stored is lost."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from node.fakehub import FakeHub, wait_for


def run_briefly(node, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgenode", "run", "--config", str(node.config_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("[node]\nname = 'a'\ndata_dir = \n", "not valid TOML"),
        ("[node]\nname = 'a'\ndata_dir = 'd'\nsurprise = 1\n", "[node] unknown key 'surprise'"),
        (
            "[node]\nname = 'a'\ndata_dir = 'd'\n[mqtt]\nport = 'x'\n",
            "[mqtt] port: expected an integer",
        ),
    ],
)
def test_a_bad_config_stops_run_with_a_message_naming_the_file(node, content, expected):
    if content is not None:
        node.config_path.write_text(content)
    result = run_briefly(node)
    assert result.returncode == 2
    assert str(node.config_path) in result.stderr
    assert expected in result.stderr


def test_an_unreadable_config_directory_is_named(node):
    node.config_path.mkdir()
    result = run_briefly(node)
    assert result.returncode == 2
    assert "is a directory" in result.stderr


def test_a_data_dir_that_is_a_file_is_a_clear_error(node, tmp_path):
    node.configure(None)
    node.data_dir.write_text("I am a file")
    result = run_briefly(node)
    assert result.returncode == 1
    assert f"data_dir {node.data_dir}" in result.stderr
    assert "Traceback" not in result.stderr
    assert node.data_dir.read_text() == "I am a file"


def test_a_corrupt_database_is_reported_and_left_untouched(node):
    node.configure(None)
    node.data_dir.mkdir()
    garbage = b"this is not SQLite" * 500
    (node.data_dir / "node.db").write_bytes(garbage)
    result = run_briefly(node)
    assert result.returncode == 1
    assert "damaged" in result.stderr
    assert "Traceback" not in result.stderr
    assert (node.data_dir / "node.db").read_bytes() == garbage
    status = node.status("--json")
    assert status.returncode == 1
    assert "damaged" in status.stdout
    assert "not a readable edgenode store" in status.stdout


def test_a_rejected_token_is_logged_shown_and_retried(hub: FakeHub, node):
    node.configure(hub.url, token="wrong")
    node.start()
    wait_for(lambda: hub.auth_failures >= 3, 15, "several attempts")
    assert node.proc is not None
    assert node.proc.poll() is None
    assert "hub rejected the token (HTTP 401)" in node.log()
    status = node.status_json()
    assert status["daemon"]["running"] is True
    assert "HTTP 401" in status["hub"]["last_error"]
    # Fixing the token on the hub side is enough: the node recovers by itself.
    hub.token = "wrong"
    node.wait_state("connected", timeout=10)


@pytest.mark.parametrize("fault", ["garbage", "close_mid_frame"])
def test_a_hub_sending_garbage_or_closing_mid_frame_does_not_stop_the_node(
    hub: FakeHub, node, fault
):
    revision = hub.publish([("Config/default/a", {"v": 1})])
    node.configure(hub.url)
    if fault == "garbage":
        hub.garbage = b"\xff\x00 not cbor at all"
    else:
        hub.close_mid_frame = True
    node.start()
    wait_for(lambda: len(hub.hellos) >= 3, 15, "reconnect attempts")
    assert node.proc is not None
    assert node.proc.poll() is None
    log = node.log()
    if fault == "garbage":
        assert "hub sent an invalid message (MALFORMED_FRAME (1))" in log
    else:
        assert "link to hub lost" in log
    assert "Traceback" not in log
    # What was persisted before the fault is still there, and the link recovers.
    hub.garbage = None
    hub.close_mid_frame = False
    wait_for(lambda: hub.acked_revision.get("ship-7") == revision, 10, "the ack")
    node.wait_state("connected", timeout=10)
    assert node.status_json()["applied_revision"] == revision


def test_sigint_stops_the_daemon_cleanly(node):
    node.configure(None)
    node.start()
    wait_for(lambda: (node.data_dir / "edgenode.pid").exists(), 10, "the pid file")
    time.sleep(0.2)
    assert node.signal(signal.SIGINT) == 0
    assert "stopping" in node.log()
