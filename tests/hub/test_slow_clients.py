"""Slow and unauthenticated clients at a real ``edgehub serve`` (issue 18): headers and
bodies are bounded in time on the operator API (``--api-timeout``), and on both listeners
the connections that have not authenticated are bounded in number (the oldest goes), so
trickling connections cannot hold the process's file descriptors. Node links keep working
throughout."""

from __future__ import annotations

import asyncio
import re
import socket
import time

from edgehub.api import MAX_UNAUTHENTICATED
from edgehub.guard import PENDING_GRACE_SECONDS
from edgehub.simnode import SimNode

API_TIMEOUT = 1.0


def address(url: str) -> tuple[str, int]:
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    return host, int(port)


def gauge(hub, listener: str) -> float:
    _, metrics = hub.call("GET", "/metrics", token="")
    m = re.search(rf'edgehub_unauthenticated_connections{{listener="{listener}"}} (\S+)', metrics)
    assert m is not None, metrics
    return float(m.group(1))


def closed_by_peer(conn: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Read until the hub closes the connection (True) or ``timeout`` passes (False)."""
    conn.settimeout(timeout)
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except TimeoutError:
        return False, data
    except ConnectionResetError:
        pass
    return True, data


def test_a_client_trickling_headers_is_cut_off_after_the_api_timeout(hub_factory):
    hub = hub_factory("--api-timeout", str(API_TIMEOUT))
    started = time.monotonic()
    loris = socket.create_connection(address(hub.api))
    loris.sendall(b"GET /v1/nodes HTTP/1.1\r\nHost: x\r\n")
    silent = socket.create_connection(address(hub.api))
    for _ in range(10):  # one header line every 0.3 s: more than 3 s for the whole head
        try:
            loris.sendall(b"X-Trickle: 1\r\n")
        except OSError:
            break
        time.sleep(0.3)
    assert closed_by_peer(loris, 5)[0]
    assert closed_by_peer(silent, 5)[0]
    assert time.monotonic() - started < API_TIMEOUT + 3
    assert hub.call("GET", "/v1/nodes")[0] == 200


def test_a_body_trickling_in_gets_408_and_a_closed_connection(hub_factory):
    hub = hub_factory("--api-timeout", str(API_TIMEOUT))
    conn = socket.create_connection(address(hub.api))
    conn.sendall(
        b"POST /v1/apply HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + hub.token.encode()
        + b"\r\nContent-Type: application/yaml\r\nContent-Length: 1000\r\n\r\nkind: "
    )
    started = time.monotonic()
    closed, answer = closed_by_peer(conn, 5)
    assert closed
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"did not arrive within 1 s" in answer
    assert time.monotonic() - started < API_TIMEOUT + 3


def test_an_idle_keep_alive_connection_is_closed_after_the_api_timeout(hub_factory):
    hub = hub_factory("--api-timeout", str(API_TIMEOUT))
    conn = socket.create_connection(address(hub.api))
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.settimeout(5)
    assert conn.recv(1000).startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    assert closed_by_peer(conn, 5)[0]
    assert time.monotonic() - started < API_TIMEOUT + 3


def trickler(url: str, path: str) -> socket.socket:
    conn = socket.create_connection(address(url))
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode())  # never finished
    return conn


def test_unauthenticated_api_connections_are_bounded_and_the_oldest_go_first(hub):
    conns = [trickler(hub.api, "/v1/nodes") for _ in range(MAX_UNAUTHENTICATED)]
    # A burst over the bound while every pending connection is fresh: the newest go.
    burst = [trickler(hub.api, "/v1/nodes") for _ in range(5)]
    assert all(closed_by_peer(c, 2)[0] for c in burst)
    assert not closed_by_peer(conns[0], 0.2)[0]
    time.sleep(PENDING_GRACE_SECONDS + 0.2)
    # Now the tricklers are old: an operator still gets in (its connection pushes out the
    # oldest), and so do later connections, each at the cost of an old one.
    assert hub.call("GET", "/v1/nodes")[0] == 200
    late = [trickler(hub.api, "/v1/nodes") for _ in range(20)]
    assert all(closed_by_peer(c, 2)[0] for c in conns[:20])
    assert not closed_by_peer(late[-1], 0.2)[0]
    # The hub never held more unauthenticated connections than its bound.
    assert gauge(hub, "api") <= MAX_UNAUTHENTICATED
    _, metrics = hub.call("GET", "/metrics", token="")
    closed = re.search(r'edgehub_unauthenticated_closed_total{listener="api"} (\S+)', metrics)
    assert closed is not None
    assert float(closed.group(1)) >= 5 + 20
    for conn in conns + late:
        conn.close()


def test_unauthenticated_node_connections_are_bounded_and_nodes_still_connect(hub_factory):
    hub = hub_factory("--max-pending-links", "10")
    token = hub.node_add("a")
    conns = [trickler(hub.link, "/v1/connect") for _ in range(10)]
    burst = [trickler(hub.link, "/v1/connect") for _ in range(5)]
    assert all(closed_by_peer(c, 2)[0] for c in burst)
    assert gauge(hub, "link") <= 10
    time.sleep(PENDING_GRACE_SECONDS + 0.2)

    async def scenario() -> None:
        node = SimNode(hub.link, token, "a")
        task = asyncio.create_task(node.run_once())
        await node.wait_until(lambda: node.revision == 1)
        task.cancel()

    asyncio.run(scenario())
    late = [trickler(hub.link, "/v1/connect") for _ in range(5)]
    assert all(closed_by_peer(c, 2)[0] for c in conns[:5])
    assert gauge(hub, "link") <= 10
    for conn in conns + late:
        conn.close()
