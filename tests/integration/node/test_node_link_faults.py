"""Link liveness and reconnect with real sockets: a proxy that blackholes or cuts the link,
a hub that asks for a retry-after."""

from __future__ import annotations

import time

from node.fakehub import FakeHub, Proxy, wait_for

HEARTBEAT = 0.2  # the test hub's heartbeat interval; its deadline is 3 intervals


def test_a_blackholed_link_is_detected_within_about_three_heartbeats(
    hub: FakeHub, proxy: Proxy, node
):
    node.configure(proxy.url)
    node.start()
    node.wait_state("connected")
    proxy.blackhole()
    cut_at = time.time()
    lost = node.wait_state("disconnected", timeout=5)
    detected = lost["since"] - cut_at
    assert detected < 3 * HEARTBEAT + 0.5, detected
    assert "heartbeat deadline" in lost["last_error"]
    proxy.blackhole(False)
    node.wait_state("connected", timeout=10)
    assert "link to hub lost" in node.log()


def test_a_clean_cut_reconnects_with_back_off(hub: FakeHub, proxy: Proxy, node):
    node.configure(proxy.url)
    node.start()
    node.wait_state("connected")
    connections = proxy.connections
    for _ in range(3):
        proxy.cut()
        wait_for(lambda c=connections: proxy.connections > c, 10, "a new connection")
        connections = proxy.connections
        node.wait_state("connected", timeout=10)
    assert len(hub.hellos) >= 4


def test_the_node_waits_at_least_the_hubs_retry_after(hub: FakeHub, node):
    hub.retry_after = 1.0
    hub.retry_after_count = 2
    node.configure(hub.url)
    node.start()
    node.wait_state("connected", timeout=15)
    times = hub.accept_times
    assert len(times) == 3
    assert times[1] - times[0] >= 1.0
    assert times[2] - times[1] >= 1.0
    assert "retry after 1.0 s" in node.log()


def test_desired_changes_made_while_cut_arrive_after_the_reconnect(
    hub: FakeHub, proxy: Proxy, node
):
    node.configure(proxy.url)
    node.start()
    node.wait_state("connected")
    proxy.blackhole()
    node.wait_state("disconnected", timeout=5)
    revision = hub.publish([("Config/default/late", {"v": 1})])
    proxy.blackhole(False)
    wait_for(lambda: hub.acked_revision.get("ship-7") == revision, 10, "the ack after reconnect")
    assert node.status_json()["applied_revision"] == revision


def test_an_http_retry_after_header_is_honoured_too(hub: FakeHub, node):
    hub.http_status = 503
    node.configure(hub.url)
    node.start()
    wait_for(lambda: len(hub.accept_times) >= 3, 15, "three attempts")
    times = hub.accept_times[:3]
    assert times[1] - times[0] >= 1.0
    assert times[2] - times[1] >= 1.0
    assert "hub answered HTTP 503" in node.log()
    hub.http_status = None
    node.wait_state("connected", timeout=10)
