"""The fault proxy's switches that the ship test uses (tests/integration/node/fakehub.py):
added latency without serialising, stalls that lose nothing, refusing new connections."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from node.fakehub import Background, Proxy


@pytest.fixture
def echo(background: Background) -> Iterator[int]:
    """A TCP echo server on 127.0.0.1:0; its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def start() -> asyncio.Server:
        return await asyncio.start_server(handle, "127.0.0.1", 0)

    server = background.call(start())
    yield int(server.sockets[0].getsockname()[1])
    server.close()


def exchange(port: int, payload: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send ``payload`` through 127.0.0.1:port, read it all back; (bytes, seconds)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    return got, time.monotonic() - start


def test_delay_adds_the_round_trip_once_not_per_chunk(background: Background, echo: int):
    proxy = Proxy(background, echo, delay=0.2)
    proxy.start()
    try:
        payload = bytes(range(256)) * 1024  # 256 KiB: many 4 KiB chunks in flight
        got, seconds = exchange(proxy.port, payload)
        assert got == payload
        # Two delayed directions: at least 0.4 s; chunk by chunk would be minutes.
        assert 0.4 <= seconds < 5.0
    finally:
        proxy.stop()


def test_a_stall_holds_the_bytes_and_then_delivers_them(background: Background, echo: int):
    proxy = Proxy(background, echo, delay=0.05)
    proxy.start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), 10) as sock:
            proxy.paused = True
            sock.sendall(b"held")
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(16)
            proxy.paused = False
            sock.settimeout(5)
            assert sock.recv(16) == b"held"
    finally:
        proxy.stop()


def test_refusing_closes_new_connections_at_once(background: Background, echo: int):
    proxy = Proxy(background, echo)
    proxy.start()
    try:
        proxy.refusing = True
        with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
            sock.settimeout(5)
            assert sock.recv(16) == b""  # closed by the proxy, never forwarded
        assert proxy.connections == 0
        proxy.refusing = False
        assert exchange(proxy.port, b"back")[0] == b"back"
    finally:
        proxy.stop()
