"""The operator HTTP/JSON API (aiohttp) on ``--api-listen``.

``websockets`` can answer plain GETs from ``process_request`` but has no request bodies,
methods other than GET, or streaming responses; apply, delete, twin patches and watch need
all three, hence aiohttp (see ARCHITECTURE.md). Everything under ``/v1`` requires the admin
token as ``Authorization: Bearer``; ``/healthz``, ``/readyz``, ``/metrics`` and
``/openapi.json`` do not.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgehub.artifacts import ArtifactInfo, ArtifactStore, ArtifactStoreError
from edgehub.guard import GuardedProtocol, PendingConnections
from edgehub.hub import Hub
from edgehub.kinds.base import ResourceConflict, iso_time
from edgehub.kube.api import KubeApi
from edgehub.limits import InputError, load_json, query_integer
from edgehub.link import LINK_PATH, listener_url
from edgehub.logstreams import LogsUnsupported, NodeNotConnected
from edgehub.openapi import openapi_document
from edgehub.operations import cooperatively
from edgehub.ratelog import ClientErrorFilter, RateLimitedLog
from edgehub.resources import (
    PARSE_PROGRESS,
    ResourceError,
    check_name,
    iter_documents,
    resolve_kind,
)
from edgehub.selectors import SelectorError, check_label_key, check_label_value, parse_selector
from edgehub.streams import STREAM_CHECK_SECONDS, Stream, TooManyStreams, open_stream
from edgenode.uplink import iso_timestamp

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest request body (apply of many documents); larger is 413."""
DEFAULT_API_TIMEOUT = 30.0
"""``--api-timeout``: seconds a client has to send a request's headers (after connecting,
or after its previous answer: also how long an idle keep-alive connection stays open) and
again to send its body. Past it the connection is closed (a body: 408 first). 30 s lets a
4 MiB apply through at 140 KB/s; a slow loris holds a connection for no longer."""
MAX_UNAUTHENTICATED = 128
"""Operator API connections that have not sent the admin token yet (health checks and
Prometheus scrapes never do): beyond, the oldest is closed (``guard.py``). Operators,
scrapers and load-balancer probes need a handful; a slow loris gets this many at most."""
LISTEN_BACKLOG = 128
MAX_TELEMETRY_PAGE = 1000
MAX_SINCE_SECONDS = 100 * 365 * 86400
"""``sinceSeconds`` beyond this (a century) means everything."""
MAX_TAIL_LINES = 2**62
DEFAULT_LOG_TAIL = 100
MAX_LOG_TAIL = 100_000
LOG_POLL_SECONDS = 1.0
"""How often a log stream with nothing new checks that its reader is still there."""
FOLLOW_POLL_SECONDS = 0.2
"""How often ``telemetry?follow=1`` looks for new records (and for its client leaving)."""
WATCH_ENDED = "the watch fell 10,000 changes behind or the hub is stopping; run the command again"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("edgehub.api")
http_log = logging.getLogger("edgehub.http")
"""What aiohttp's HTTP server logs (it writes a traceback for every malformed request):
through :class:`ClientErrorFilter`, one rate-limited line per client error."""
http_log.addFilter(ClientErrorFilter((HttpProcessingError, ConnectionError)))


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class ApiError(Exception):
    """A client's error: answered as ``{"error": message, ...}`` with ``status``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


class GuardedSite(web.BaseSite):
    """aiohttp's ``SockSite`` (on a socket ``edgehub serve`` bound first) with every
    accepted connection counted in ``pending`` until it authenticates (``guard.py``) and
    the TLS handshake bounded by ``timeout``."""

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        *,
        ssl_context: ssl.SSLContext | None,
        pending: PendingConnections,
        timeout: float,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=LISTEN_BACKLOG)
        self._sock = sock
        self._pending = pending
        self._timeout = timeout
        self.server: asyncio.Server | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        host, port = self._sock.getsockname()[:2]
        return f"{scheme}://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        factory = self._runner.server
        assert factory is not None
        pending = self._pending
        self.server = self._server = await asyncio.get_running_loop().create_server(
            lambda: GuardedProtocol(factory(), pending),
            sock=self._sock,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._timeout if self._ssl_context else None,
            backlog=self._backlog,
        )


class OperatorApi:
    def __init__(
        self,
        hub: Hub,
        admin_token: str,
        ready: Callable[[], bool],
        *,
        request_timeout: float = DEFAULT_API_TIMEOUT,
    ) -> None:
        self.hub = hub
        self.admin_token = admin_token
        self.ready = ready
        self.request_timeout = request_timeout
        self.pending = PendingConnections("api", MAX_UNAUTHENTICATED, hub.metrics)
        self.link_listener: tuple[str, tuple[str, int]] | None = None
        """The node-link listener's scheme and bound address (set once both listen):
        named to nodes that come here."""
        self._error_log = RateLimitedLog(log)

    def runner_options(self) -> dict[str, Any]:
        """Options of the ``web.AppRunner`` serving :meth:`app`. aiohttp's keep-alive
        timer runs from the connection's start and from each answer until the next
        request's headers are complete: the header and idle bound in one. The rest of a
        body no handler read (a 401, a 408) is drained for at most as long, then the
        connection is closed."""
        return {
            "access_log": None,
            "logger": http_log,
            "keepalive_timeout": self.request_timeout,
            "lingering_time": self.request_timeout,
        }

    def site(
        self, runner: web.BaseRunner, sock: socket.socket, ssl_context: ssl.SSLContext | None
    ) -> GuardedSite:
        """The listening site of ``runner`` (set up from :meth:`app`) on ``sock``."""
        return GuardedSite(
            runner,
            sock,
            ssl_context=ssl_context,
            pending=self.pending,
            timeout=self.request_timeout,
        )

    async def _read(self, request: web.Request) -> bytes:
        """The request body, within ``request_timeout`` (408 and a closed connection
        otherwise) and ``MAX_BODY_BYTES`` (413)."""
        try:
            async with asyncio.timeout(self.request_timeout):
                return await request.read()
        except TimeoutError:
            raise ApiError(
                408, f"the request body did not arrive within {self.request_timeout:g} s"
            ) from None

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_BODY_BYTES, middlewares=[self._errors, self._auth]
        )
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.metrics)
        r.add_get("/openapi.json", self.openapi)
        r.add_post("/v1/apply", self.apply)
        r.add_get("/v1/watch/{kind}", self.watch)
        r.add_post("/v1/nodes/{name}/token", self.node_add)
        r.add_post("/v1/nodes/{name}/revoke", self.node_revoke)
        r.add_patch("/v1/devices/{name}/desired", self.twin_set)
        r.add_get("/v1/devices/{name}/telemetry", self.telemetry)
        r.add_get("/v1/artifacts", self.artifacts_list)
        r.add_get("/v1/artifacts/{digest}", self.artifact_get)
        r.add_put("/v1/artifacts/{digest}", self.artifact_put)
        r.add_delete("/v1/artifacts/{digest}", self.artifact_delete)
        r.add_get("/v1/apps/{name}/logs", self.app_logs)
        r.add_post("/v1/apps/{name}/rollout/undo", self.rollout_undo)
        r.add_get("/v1/{kind}", self.list)
        r.add_get("/v1/{kind}/{name}", self.get)
        r.add_delete("/v1/{kind}/{name}", self.delete)
        KubeApi(self.hub, self.admin_token, self.request_timeout).add_routes(app)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every answer is JSON; a client's error (4xx) is never logged; anything else
        (a bug of the hub) is a 500 whose traceback is logged, rate-limited."""
        try:
            response = await handler(request)
        except ApiError as exc:
            response = _error(exc.status, exc.message, **exc.extra)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _error(exc.status, exc.reason)
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client went away: nothing to answer, nothing to log
        except Exception as exc:
            self._error_log.log(
                logging.ERROR,
                "api-500",
                "operator API %s %s failed: %s: %s",
                request.method,
                request.path[:200],
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
            response = _error(500, f"internal error of the hub ({type(exc).__name__}), logged")
        if response.status >= 400:
            self.hub.metrics.api_errors.labels(str(response.status)).inc()
        if response.status == 408:
            response.force_close()  # the rest of a late body must not be read as a request
        return response

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket" or request.path == LINK_PATH:
            # A node configured with this port: tell it where node links are (the node
            # shows this text in its log and `edgenode status`).
            hint = "this is the operator API; node links are on the --listen port"
            if self.link_listener is not None:
                scheme, bound = self.link_listener
                url = listener_url(scheme, request.headers.get("Host"), bound, LINK_PATH)
                hint = f"this is the operator API; node links are at {url}"
            return web.Response(status=404, text=hint + "\n")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        # Header bytes that are not UTF-8 arrive as surrogate escapes: compare bytes.
        given = token.strip().encode("utf-8", "surrogateescape")
        valid = scheme.lower() == "bearer" and hmac.compare_digest(given, self.admin_token.encode())
        if valid:  # on any path (the Kubernetes API checks the token itself)
            self.pending.authenticated(request.transport)
        if request.path.startswith("/v1/") or request.path == "/v1":
            if scheme.lower() != "bearer" or not token:
                return _error(401, "missing admin token (Authorization: Bearer ...)")
            if not valid:
                return _error(401, "wrong admin token")
        return await handler(request)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        try:
            self.hub.store.revision()
        except Exception as exc:
            return _error(503, f"store unavailable: {exc}")
        if not self.ready():
            return _error(503, "node link listener not started")
        return web.json_response({"status": "ready", "revision": self.hub.revision})

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.hub.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    def _kind(self, request: web.Request) -> str:
        try:
            return resolve_kind(request.match_info["kind"])
        except ValueError as exc:
            raise ApiError(404, str(exc)) from None

    def _name(self, request: web.Request, kind: str) -> str:
        """The resource name of the path: one that is not a valid name cannot exist
        (404), and never reaches the store (a lone surrogate could not be bound)."""
        name = request.match_info["name"]
        try:
            check_name(name, rule=self.hub.registry.get(kind).name_rule)
        except ResourceError:
            raise ApiError(404, f"{kind} {name[:300]!r} not found") from None
        return name

    async def apply(self, request: web.Request) -> web.Response:
        raw = await self._read(request)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "body is not UTF-8", index=None, field="")
        try:
            # Parsed on the loop, letting other work run every STALL_BUDGET: node links
            # and other requests are served while a large apply is read.
            docs = [
                doc
                async for doc in cooperatively(iter_documents(text))
                if doc is not PARSE_PROGRESS
            ]
            if not docs:
                raise ResourceError(None, "", "no documents")
            results = await self.hub.ops.apply_async(docs)
        except ResourceError as exc:
            status = 409 if isinstance(exc, ResourceConflict) else 422
            return _error(status, str(exc), index=exc.index, field=exc.field)
        for result in results:  # after the whole apply: a Node applied with it counts
            stored = self.hub.cache.get(result["kind"], result["name"])
            if stored is not None:
                warnings = self.hub.registry.get(result["kind"]).warnings(self.hub, stored)
                if warnings:
                    result["warnings"] = warnings
        return web.json_response({"results": results, "revision": self.hub.revision})

    async def list(self, request: web.Request) -> web.Response:
        kind = self._kind(request)
        selector = None
        if "labelSelector" in request.query:
            try:
                selector = parse_selector(request.query["labelSelector"])
            except SelectorError as exc:
                return _error(400, str(exc), field="labelSelector")
        items = self.hub.ops.list_views(kind, selector)
        return web.json_response(
            {"kind": f"{kind}List", "revision": self.hub.revision, "items": items}
        )

    async def get(self, request: web.Request) -> web.Response:
        kind = self._kind(request)
        name = self._name(request, kind)
        view = self.hub.ops.view(kind, name)
        if view is None:
            return _error(404, f"{kind} {name!r} not found")
        return web.json_response(view)

    async def delete(self, request: web.Request) -> web.Response:
        kind = self._kind(request)
        name = self._name(request, kind)
        entry = self.hub.ops.delete(kind, name)
        if entry is None:
            return _error(404, f"{kind} {name!r} not found")
        return web.json_response({"kind": kind, "name": name, "revision": entry.revision})

    async def _json(self, request: web.Request, path: str = "") -> Any:
        """The JSON body (``{}`` when empty), within ``limits``' bounds: 400 naming the
        field under ``path`` otherwise."""
        try:
            return load_json(await self._read(request) or b"{}", path)
        except InputError as exc:
            raise ApiError(400, str(exc), field=exc.field) from None

    async def node_add(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await self._json(request)
        labels = body.get("labels", {}) if isinstance(body, dict) else None
        if not isinstance(labels, dict):
            return _error(400, "labels must be a map", field="labels")
        try:
            for key, value in labels.items():
                check_label_key(key)
                check_label_value(value)
        except SelectorError as exc:
            return _error(400, str(exc), field="labels")
        try:
            token, revision = self.hub.ops.node_add(name, labels)
        except ResourceError as exc:
            return _error(400, str(exc), field=exc.field)
        except ValueError as exc:
            return _error(409, str(exc))
        return web.json_response({"node": name, "token": token, "revision": revision}, status=201)

    async def node_revoke(self, request: web.Request) -> web.Response:
        name = self._name(request, "Node")
        if ("Node", name) not in self.hub.cache and not self.hub.store.has_live_token(name):
            return _error(404, f"Node {name!r} not found")
        count = self.hub.ops.revoke(name)
        return web.json_response({"node": name, "revoked": count})

    async def twin_set(self, request: web.Request) -> web.Response:
        name = self._name(request, "Device")
        patch = await self._json(request, "spec.desired")
        if not isinstance(patch, dict):
            return _error(400, "a desired patch must be a JSON object", field="spec.desired")
        try:
            view = self.hub.ops.twin_set(name, patch)
        except KeyError:
            return _error(404, f"Device {name!r} not found")
        except ResourceError as exc:
            return _error(422, str(exc), field=exc.field)
        return web.json_response(view)

    def _int_query(
        self, request: web.Request, name: str, default: int, cap: int | None = None
    ) -> int:
        try:
            return query_integer(request.query.get(name), name, default, cap=cap)
        except InputError as exc:
            raise ApiError(400, exc.message, field=name) from None

    def _stream(self, request: web.Request, **options: Any) -> Stream:
        """A stream to use as ``async with``; 503 over ``MAX_OPEN_STREAMS``."""
        try:
            return open_stream(request, self.request_timeout, self.hub.metrics, **options)
        except TooManyStreams as exc:
            raise ApiError(503, str(exc)) from None

    async def telemetry(self, request: web.Request) -> web.StreamResponse:
        name = self._name(request, "Device")
        after = self._int_query(request, "after", 0)
        limit = self._int_query(request, "limit", 100, MAX_TELEMETRY_PAGE)
        follow = request.query.get("follow", "") in ("1", "true")
        since = tail = None
        if "sinceSeconds" in request.query:  # as Kubernetes' pod logs: the last N seconds
            seconds = self._int_query(request, "sinceSeconds", 0, MAX_SINCE_SECONDS)
            since = time.time() - seconds
        if "tailLines" in request.query:  # the newest N records (then pages after them)
            tail = self._int_query(request, "tailLines", 0, MAX_TAIL_LINES)
        if ("Device", name) not in self.hub.cache:
            return _error(404, f"Device {name!r} not found")
        if since is not None or tail is not None:
            after = self.hub.store.telemetry_start(name, after, since, tail)

        def page(after_id: int) -> list[dict[str, Any]]:
            return [
                {
                    "id": r.id,
                    "node": r.node,
                    "received": iso_timestamp(r.received),
                    "record": r.body,
                }
                for r in self.hub.store.telemetry(name, after_id, limit)
            ]

        if not follow:
            return web.json_response({"device": name, "items": page(after)})
        async with self._stream(request) as stream:
            while not stream.gone():
                items = page(after)
                for item in items:
                    await stream.send(item)
                    after = item["id"]
                if not items:
                    await asyncio.sleep(FOLLOW_POLL_SECONDS)
        return stream.response

    async def watch(self, request: web.Request) -> web.StreamResponse:
        """What exists (ADDED), then every change of the kind, spec and status (the change
        feed, ``edgehub.feed``); an ERROR event and the end when the watcher fell too far
        behind or the hub stops."""
        kind = self._kind(request)
        async with self._stream(request) as stream:
            feed = self.hub.feed
            subscriber = feed.follow(kind)
            try:
                for view in self.hub.ops.list_views(kind, None):
                    await stream.send({"type": "ADDED", "kind": kind, "object": view})
                while not stream.gone():
                    try:
                        async with asyncio.timeout(STREAM_CHECK_SECONDS):
                            change = await subscriber.queue.get()
                    except TimeoutError:
                        continue
                    if change is None:
                        await stream.send({"type": "ERROR", "message": subscriber.why})
                        break
                    stored = (
                        None if change.type == "DELETED" else self.hub.cache.get(kind, change.name)
                    )
                    if stored is None and change.type != "DELETED":
                        continue  # deleted since: its DELETED follows
                    view = change.body if stored is None else self.hub.ops.render(stored)
                    await stream.send(
                        {
                            "type": change.type,
                            "revision": change.position.revision,
                            "resourceVersion": str(change.position),
                            "kind": kind,
                            "name": change.name,
                            "object": view,
                        }
                    )
            finally:
                feed.unsubscribe(subscriber)
        return stream.response

    # --- Artifacts ---------------------------------------------------------------------------

    def _artifact_store(self) -> ArtifactStore:
        if self.hub.artifacts is None:
            raise web.HTTPNotFound(reason="this hub keeps no artifacts")
        return self.hub.artifacts

    def _artifact_view(self, info: ArtifactInfo) -> dict[str, Any]:
        return {
            "digest": info.digest,
            "size": info.size,
            "received": info.size,
            "created": iso_time(info.created),
            "complete": info.complete,
            "apps": self.hub.ops.apps_using(info.digest),
        }

    async def artifacts_list(self, request: web.Request) -> web.Response:
        store = self._artifact_store()
        items = [self._artifact_view(info) for info in store.list()]
        return web.json_response({"items": items, "bytes": store.usage(), "quota": store.quota})

    async def artifact_get(self, request: web.Request) -> web.Response:
        store = self._artifact_store()
        try:
            info = store.info(request.match_info["digest"])
        except ArtifactStoreError as exc:
            return _error(exc.status, exc.message)
        if info is None:
            return _error(404, f"no artifact {request.match_info['digest'][:12]}")
        return web.json_response(self._artifact_view(info))

    async def artifact_put(self, request: web.Request) -> web.Response:
        """One piece of an upload: ``?offset=N&size=S`` (S the whole artifact's size); the
        last piece makes the artifact (verified against its name)."""
        store = self._artifact_store()
        offset = self._int_query(request, "offset", 0)
        size = self._int_query(request, "size", -1)
        if size < 0:
            return _error(400, "size (the whole artifact's bytes) is required")
        data = await self._read(request)
        try:
            info = store.write(request.match_info["digest"], offset, data, size)
        except ArtifactStoreError as exc:
            return _error(exc.status, exc.message, **exc.details)
        status = 201 if info.complete else 200
        return web.json_response(
            {"digest": info.digest, "received": info.size, "complete": info.complete},
            status=status,
        )

    async def artifact_delete(self, request: web.Request) -> web.Response:
        store = self._artifact_store()
        digest = request.match_info["digest"]
        users = self.hub.ops.apps_using(digest)
        if users:
            return _error(409, f"artifact {digest[:12]} is used by App {', '.join(users)}")
        try:
            found = store.delete(digest)
        except ArtifactStoreError as exc:
            return _error(exc.status, exc.message)
        if not found:
            return _error(404, f"no artifact {digest[:12]}")
        return web.json_response({"digest": digest, "deleted": True})

    # --- App logs ----------------------------------------------------------------------------

    async def app_logs(self, request: web.Request) -> web.StreamResponse:
        """An App's log from one node, fetched over its link: ``?node=N&tail=100&follow=1``."""
        name = request.match_info["name"]
        node = request.query.get("node", "")
        tail = self._int_query(request, "tail", DEFAULT_LOG_TAIL, MAX_LOG_TAIL)
        follow = request.query.get("follow", "") in ("1", "true")
        app = self.hub.cache.get("App", name)
        if app is None:
            return _error(404, f"App {name!r} not found")
        if not node:
            return _error(400, "node is required (the App's log is kept on each node)")
        if node not in self.hub.cache.targeted_nodes(app.body):
            return _error(404, f"App {name!r} does not run on node {node!r}")
        try:
            stream = self.hub.logs.open(node, name, tail, follow)
        except (NodeNotConnected, LogsUnsupported) as exc:
            return _error(409, str(exc))
        except ValueError as exc:
            return _error(429, str(exc))
        try:
            async with self._stream(request, content_type="text/plain", lazy=True) as out:
                while True:
                    try:
                        piece = await asyncio.wait_for(stream.queue.get(), LOG_POLL_SECONDS)
                    except TimeoutError:
                        if out.gone():
                            break
                        continue
                    if piece is None:
                        break
                    await out.write(piece)
                if not out.gone():
                    if not out.response.prepared and stream.code:
                        status = stream.code if 400 <= stream.code < 600 else 502
                        return _error(status, stream.message or "the node ended the request")
                    if stream.code:
                        await out.write(f"\n[edgehub: {stream.message}]\n".encode())
                    await out.start()
                    await out.response.write_eof()
            return out.response if out.response.prepared else web.Response(status=499)
        finally:
            self.hub.logs.close(stream)

    async def rollout_undo(self, request: web.Request) -> web.Response:
        """Back to ``?toRevision=N`` (default: the previous good revision), at once."""
        name = request.match_info["name"]
        target = self._int_query(request, "toRevision", 0) or None
        try:
            result = self.hub.rollouts.undo(name, target)
        except KeyError:
            return _error(404, f"App {name!r} not found")
        except ValueError as exc:
            return _error(422, str(exc))
        except ResourceError as exc:
            return _error(422, str(exc), field=exc.field)
        return web.json_response(result)
