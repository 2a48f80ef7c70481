"""A real ``edgenode run`` pointed at the hub's operator port is told where node links
are, in its log and in ``edgenode status`` (issue 18: it used to read "wrong admin
token"); pointed at the right port it connects."""

from __future__ import annotations

import time

import pytest
from node.conftest import NodeProcess

from hub.conftest import RunningHub

pytestmark = pytest.mark.timeout(120)


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)
    return value


def test_a_node_at_the_operator_port_is_told_where_node_links_are(tmp_path):
    hub = RunningHub(tmp_path / "hub", log_file=tmp_path / "hub.log")
    node = NodeProcess(tmp_path / "node")
    (tmp_path / "node").mkdir()
    try:
        hub.start()
        token = hub.node_add("ship-7")
        wrong = "ws://" + hub.api.split("//")[1]  # the operator port, as a newcomer writes it
        node.configure(wrong, token=token, mqtt={"enabled": False})
        node.start()
        expected = f"hub answered HTTP 404: this is the operator API; node links are at {hub.link}"
        error = wait_for(lambda: node.link_state().get("last_error"))
        assert error == expected
        status = node.status()
        assert expected in status.stdout, status.stdout
        assert expected in node.log()
        node.stop()
        node.configure(hub.link, token=token, mqtt={"enabled": False})
        node.start()
        node.wait_state("connected")
    finally:
        node.stop()
        hub.stop()
