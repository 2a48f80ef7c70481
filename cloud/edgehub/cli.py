"""``edgehub serve``: the hub process (node link listener, operator API, housekeeping)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import logging
import os
import resource
import secrets
import signal
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

from aiohttp import web
from websockets.asyncio.server import serve

from edgehub.api import DEFAULT_API_TIMEOUT, OperatorApi
from edgehub.artifacts import DEFAULT_MAX_BYTES as DEFAULT_ARTIFACT_MAX_BYTES
from edgehub.artifacts import DEFAULT_QUOTA as DEFAULT_ARTIFACTS_QUOTA
from edgehub.artifacts import ArtifactStore
from edgehub.feed import STATUS_POLL_SECONDS
from edgehub.hub import Hub, HubSettings
from edgehub.link import LinkServer
from edgehub.metrics import HubMetrics
from edgehub.ratelog import RateLimitedLog
from edgehub.rollouts import ROLLOUT_PERIOD
from edgehub.store import SqliteHubStore
from edgenode.files import ensure_dir

DEFAULT_LISTEN = "0.0.0.0:8443"
DEFAULT_API_LISTEN = "127.0.0.1:8080"
HOUSEKEEPING_SECONDS = 60.0
ADMIN_TOKEN_FILE = "admin.token"
DB_FILE = "hub.db"
STREAM_SHUTDOWN_SECONDS = 2.0
"""At a stop, open operator streams (``edgectl watch``, ``telemetry --follow``) get this
long to end before they are cut (aiohttp's default would hold the stop for 60 s); the
client sees the connection close and says so."""
ARTIFACTS_DIR = "artifacts"
GC_YOUNG_THRESHOLD = 20_000
"""Net allocations between young garbage collections (CPython's default: 700). With
thousands of node links the heap holds millions of objects, and at the default every tenth
middle collection is a full one walking all of them: 42 s of the hub's CPU (and 85 s of the
simulator's) in a 10,000-node connect, measured. Cycles are still collected, in larger
batches; the middle and old thresholds stay CPython's."""
log = logging.getLogger("edgehub")


def raise_open_file_limit() -> int:
    """Raise the soft limit of open files to the hard limit; the new soft limit. Every
    node link is a file descriptor, and the default soft limit (often 1024) would cap a
    hub at a thousand nodes while the hard limit (systemd: 524288) allows far more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft
    return hard


class ServeError(Exception):
    """``edgehub serve`` cannot start; the message (one line) says why and what to change."""


def split_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def bind(address: tuple[str, int], flag: str) -> socket.socket:
    """A listening TCP socket on ``address`` (``flag`` names the option it came from), or
    ServeError naming the address and the flag to change."""
    host, port = address
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
            0
        ][0]
    except socket.gaierror as exc:
        raise ServeError(
            f"cannot listen on {where} ({flag}): unknown host: {exc.strerror}"
        ) from None
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        advice = f"choose another address with {flag}"
        if exc.errno == errno.EADDRINUSE:
            advice = f"another program (another edgehub?) listens there: stop it or {advice}"
        raise ServeError(f"cannot listen on {where} ({flag}): {reason}; {advice}") from None


def ensure_admin_token(data: Path) -> tuple[str, Path, bool]:
    """Read ``DIR/admin.token``, creating it (mode 0600) on first start."""
    path = data / ADMIN_TOKEN_FILE
    if path.exists():
        return path.read_text().strip(), path, False
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode is masked by the umask; this is not
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token, path, True


async def serve_hub(args: argparse.Namespace) -> None:
    open_files = raise_open_file_limit()  # before the listeners: the pending bound uses it
    # The ports first: a hub that cannot listen writes nothing (no data folder, no token).
    link_socket = bind(args.listen, "--listen")
    try:
        api_socket = bind(args.api_listen, "--api-listen")
    except ServeError:
        link_socket.close()
        raise
    ssl_context = None
    if args.tls_cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ServeError(
                f"cannot load --tls-cert {args.tls_cert} / --tls-key {args.tls_key}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None
    data = Path(args.data)
    ensure_dir(data)  # 0700: hub.db and admin.token hold the fleet's secrets
    token, token_path, created = ensure_admin_token(data)
    print(f"admin token {'created in' if created else 'in'} {token_path}", flush=True)
    settings = HubSettings(
        heartbeat_interval=args.heartbeat,
        handshake_timeout=args.handshake_timeout,
        max_handshakes=args.max_handshakes,
        retry_after=args.retry_after,
        log_keep=args.log_keep,
        snapshot_after=args.snapshot_after,
        telemetry_max_bytes=args.telemetry_max_bytes,
        telemetry_max_age=args.telemetry_max_age,
        compression=args.compression,
    )
    store = SqliteHubStore(data / DB_FILE)
    artifacts = ArtifactStore(data / ARTIFACTS_DIR, args.artifact_max_bytes, args.artifacts_quota)
    hub = Hub(store, settings, HubMetrics(), artifacts=artifacts)
    links = LinkServer(hub, max_pending=args.max_pending_links)
    tune_gc()
    listening = False
    api = OperatorApi(hub, token, lambda: listening, request_timeout=args.api_timeout)
    runner = web.AppRunner(
        api.app(), shutdown_timeout=STREAM_SHUTDOWN_SECONDS, **api.runner_options()
    )
    await runner.setup()
    site = api.site(runner, api_socket, ssl_context)
    await site.start()
    stop = asyncio.Event()
    stopped_by: list[str] = []

    def stop_on(sig: signal.Signals) -> None:
        stopped_by.append(sig.name)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_on, sig)
    async with serve(
        links.handler,
        sock=link_socket,
        process_request=links.process_request,
        ssl=ssl_context,
        **links.server_options(),
    ) as server:
        listening = True
        bound = [s.getsockname() for s in server.sockets]
        api_bound = api_socket.getsockname()
        scheme = "wss" if ssl_context else "ws"
        print(f"node links on {scheme}://{_url_host(bound[0])}/v1/connect", flush=True)
        http = "https" if ssl_context else "http"
        print(f"operator API on {http}://{_url_host(api_bound)}", flush=True)
        # Each listener names the other to clients that came to the wrong one.
        api.link_listener = (scheme, (bound[0][0], bound[0][1]))
        links.api_listener = (http, (api_bound[0], api_bound[1]))
        log.info("started at revision %d (open-file limit %d)", hub.revision, open_files)
        tasks = [
            asyncio.create_task(_every(0.5, hub.persist_acks)),
            asyncio.create_task(_every(args.housekeeping, hub.telemetry_retention)),
            asyncio.create_task(_every(ROLLOUT_PERIOD, hub.rollouts.step)),
            asyncio.create_task(_every(STATUS_POLL_SECONDS, hub.feed.poll_status)),
        ]
        await stop.wait()
        log.info(
            "stopping (%s): closing %d node links and the operator API",
            stopped_by[0] if stopped_by else "stop requested",
            len(hub.sessions.open),
        )
        hub.feed.end_all()
        for task in tasks:
            task.cancel()
        hub.persist_acks()
        server.close()
    await runner.cleanup()
    store.close()
    log.info("stopped")


def _url_host(address: tuple[Any, ...]) -> str:
    """``host:port`` of a bound socket's address, IPv6 hosts in brackets."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _every(period: float, action: object) -> None:
    assert callable(action)
    errors = RateLimitedLog(log)  # a full disk fails every run: a traceback per minute
    while True:
        await asyncio.sleep(period)
        try:
            action()
        except Exception as exc:
            errors.log(logging.ERROR, "periodic", "periodic task failed", exc_info=exc)


def tune_gc() -> None:
    """Fewer, larger garbage collections for a process holding many connections; what
    exists now (modules, the loaded resource cache) is frozen out of future scans."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgehub", description="the edgenode cloud hub")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the hub")
    s.add_argument("--data", required=True, help="data directory (SQLite, admin token)")
    s.add_argument(
        "--listen", type=split_host_port, default=DEFAULT_LISTEN, help="node links HOST:PORT"
    )
    s.add_argument(
        "--api-listen",
        type=split_host_port,
        default=DEFAULT_API_LISTEN,
        help="operator API HOST:PORT",
    )
    s.add_argument("--tls-cert")
    s.add_argument("--tls-key")
    s.add_argument("--heartbeat", type=float, default=15.0, help="heartbeat interval, seconds")
    s.add_argument(
        "--compression",
        action="store_true",
        help="grant permessage-deflate to nodes that ask for it ([hub] compression = true)",
    )
    s.add_argument(
        "--handshake-timeout",
        type=float,
        default=10.0,
        help="seconds for a node link's TLS and HTTP upgrade, then again for its hello",
    )
    s.add_argument(
        "--max-pending-links",
        type=int,
        default=None,
        help="node connections not yet authenticated (default: a quarter of the open-file "
        "limit); beyond, the oldest (or in a burst the newest) is closed",
    )
    s.add_argument(
        "--api-timeout",
        type=float,
        default=DEFAULT_API_TIMEOUT,
        help="seconds an operator API client has to send a request's headers, then its body "
        "(also the idle keep-alive time)",
    )
    s.add_argument("--max-handshakes", type=int, default=512)
    s.add_argument("--retry-after", type=float, default=5.0)
    s.add_argument("--log-keep", type=int, default=100_000, help="revisions kept in the log")
    s.add_argument(
        "--snapshot-after",
        type=int,
        default=1000,
        help="a node further behind than this many revisions gets a snapshot, not the log",
    )
    s.add_argument("--telemetry-max-bytes", type=int, default=256 * 1024 * 1024)
    s.add_argument("--telemetry-max-age", type=float, default=7 * 24 * 3600.0)
    s.add_argument(
        "--artifact-max-bytes",
        type=int,
        default=DEFAULT_ARTIFACT_MAX_BYTES,
        help="largest artifact accepted by edgectl artifact push, bytes",
    )
    s.add_argument(
        "--artifacts-quota",
        type=int,
        default=DEFAULT_ARTIFACTS_QUOTA,
        help="all artifacts together (and uploads in progress), bytes",
    )
    s.add_argument(
        "--housekeeping",
        type=float,
        default=HOUSEKEEPING_SECONDS,
        help="seconds between retention/compaction runs",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        print("edgehub: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # websockets logs every connection opened and refused at INFO: a line per node per
    # reconnect (a tenth of the hub's CPU in a fleet reconnect). Counted in /metrics instead.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_hub(args))
    except ServeError as exc:
        print(f"edgehub: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
