"""Streams of a real ``edgehub serve`` (``telemetry --follow``, ``/v1/watch/{kind}``) end
when their client goes away, whether or not anything is written, and release everything
(issue 18): ``edgehub_open_streams`` in /metrics counts them. A client that stops reading
is dropped after ``--api-timeout``; the number of streams is bounded."""

from __future__ import annotations

import re
import socket
import time

from edgehub.streams import MAX_OPEN_STREAMS

DEVICE = (
    "apiVersion: edgenode.io/v1\nkind: Device\nmetadata: {name: d}\n"
    "spec: {node: n, desired: {power: 'on'}}\n"
)


def address(url: str) -> tuple[str, int]:
    host, port = url.split("//")[1].rsplit(":", 1)
    return host, int(port)


def open_streams(hub) -> float:
    _, metrics = hub.call("GET", "/metrics", token="")
    m = re.search(r"^edgehub_open_streams (\S+)$", metrics, re.MULTILINE)
    assert m is not None, metrics
    return float(m.group(1))


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def stream(hub, path: str) -> socket.socket:
    """Open a stream and read its response head (the stream has started)."""
    conn = socket.create_connection(address(hub.api), timeout=5)
    conn.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {hub.token}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += conn.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return conn


def test_abandoned_streams_are_noticed_and_release_everything(hub):
    hub.node_add("n")
    hub.apply(DEVICE)
    conns = [stream(hub, "/v1/devices/d/telemetry?follow=1") for _ in range(20)]
    conns += [stream(hub, "/v1/watch/configs") for _ in range(15)]
    # The Kubernetes API's watches (kubectl get -w) are streams like the others.
    conns += [stream(hub, "/apis/edgenode.io/v1/devices?watch=true") for _ in range(15)]
    assert open_streams(hub) == 50
    for conn in conns:
        conn.close()  # nothing is ever written to these streams: the hub must look
    wait_for(lambda: open_streams(hub) == 0)
    for i in range(50):  # changes a left-behind watcher would queue
        hub.apply(DEVICE.replace("power: 'on'", f"power: {i}"))
    assert open_streams(hub) == 0


def test_a_client_that_stops_reading_is_dropped_after_the_api_timeout(hub_factory):
    hub = hub_factory("--api-timeout", "1")
    conn = socket.create_connection(address(hub.api))
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.sendall(
        f"GET /v1/watch/configs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {hub.token}"
        "\r\n\r\n".encode()
    )
    big = "v" * 200_000
    for i in range(40):  # ~8 MB of events for a reader that never reads
        hub.apply(
            f"apiVersion: edgenode.io/v1\nkind: Config\nmetadata: {{name: c{i}}}\n"
            f"spec: {{data: {{k: {big}}}}}\n"
        )
    wait_for(lambda: open_streams(hub) == 0, timeout=15)
    conn.close()


def test_the_number_of_streams_is_bounded(hub):
    conns = [stream(hub, "/v1/watch/nodes") for _ in range(MAX_OPEN_STREAMS)]
    status, body = hub.call("GET", "/v1/watch/nodes")
    assert status == 503
    assert f"{MAX_OPEN_STREAMS} streams are open" in body["error"]
    conns.pop().close()
    wait_for(lambda: open_streams(hub) == MAX_OPEN_STREAMS - 1)
    conns.append(stream(hub, "/v1/watch/nodes"))
    for conn in conns:
        conn.close()
    wait_for(lambda: open_streams(hub) == 0)
