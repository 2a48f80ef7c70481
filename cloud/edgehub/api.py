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
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgehub.artifacts import ArtifactInfo, ArtifactStore, ArtifactStoreError
from edgehub.hub import Hub
from edgehub.kinds.base import ResourceConflict, iso_time
from edgehub.kube.api import KubeApi
from edgehub.logstreams import LogsUnsupported, NodeNotConnected
from edgehub.openapi import openapi_document
from edgehub.operations import cooperatively
from edgehub.resources import PARSE_PROGRESS, ResourceError, iter_documents, resolve_kind
from edgehub.selectors import SelectorError, check_label_key, check_label_value, parse_selector
from edgenode.uplink import iso_timestamp

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest request body (apply of many documents); larger is 413."""
MAX_TELEMETRY_PAGE = 1000
MAX_SINCE_SECONDS = 100 * 365 * 86400
"""``sinceSeconds`` beyond this (a century) means everything."""
MAX_TAIL_LINES = 2**62
DEFAULT_LOG_TAIL = 100
MAX_LOG_TAIL = 100_000
LOG_POLL_SECONDS = 1.0
"""How often a log stream with nothing new checks that its reader is still there."""
FOLLOW_POLL_SECONDS = 0.2
WATCH_IDLE_CHECK = 1.0
"""How often a watch with nothing to send checks that its client is still there."""
WATCH_ENDED = "the watch fell 10,000 changes behind or the hub is stopping; run the command again"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class OperatorApi:
    def __init__(self, hub: Hub, admin_token: str, ready: Callable[[], bool]) -> None:
        self.hub = hub
        self.admin_token = admin_token
        self.ready = ready

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
        KubeApi(self.hub, self.admin_token).add_routes(app)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.hub.metrics.api_errors.labels(str(exc.status)).inc()
            if exc.status >= 400:
                return _error(exc.status, exc.reason)
            raise
        if response.status >= 400:
            self.hub.metrics.api_errors.labels(str(response.status)).inc()
        return response

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v1/") or request.path == "/v1":
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                return _error(401, "missing admin token (Authorization: Bearer ...)")
            if not hmac.compare_digest(token.strip().encode(), self.admin_token.encode()):
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
            raise web.HTTPNotFound(reason=str(exc)) from None

    async def apply(self, request: web.Request) -> web.Response:
        raw = await request.read()
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
        view = self.hub.ops.view(kind, request.match_info["name"])
        if view is None:
            return _error(404, f"{kind} {request.match_info['name']!r} not found")
        return web.json_response(view)

    async def delete(self, request: web.Request) -> web.Response:
        kind = self._kind(request)
        name = request.match_info["name"]
        entry = self.hub.ops.delete(kind, name)
        if entry is None:
            return _error(404, f"{kind} {name!r} not found")
        return web.json_response({"kind": kind, "name": name, "revision": entry.revision})

    async def _json(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read() or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise web.HTTPBadRequest(reason=f"malformed JSON: {exc}") from None

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
        name = request.match_info["name"]
        if ("Node", name) not in self.hub.cache and not self.hub.store.has_live_token(name):
            return _error(404, f"Node {name!r} not found")
        count = self.hub.ops.revoke(name)
        return web.json_response({"node": name, "revoked": count})

    async def twin_set(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        patch = await self._json(request)
        if not isinstance(patch, dict):
            return _error(400, "a desired patch must be a JSON object", field="spec.desired")
        try:
            view = self.hub.ops.twin_set(name, patch)
        except KeyError:
            return _error(404, f"Device {name!r} not found")
        except ResourceError as exc:
            return _error(422, str(exc), field=exc.field)
        return web.json_response(view)

    def _int_query(self, request: web.Request, name: str, default: int) -> int:
        try:
            value = int(request.query.get(name, default))
        except ValueError:
            raise web.HTTPBadRequest(reason=f"{name} must be an integer") from None
        if value < 0:
            raise web.HTTPBadRequest(reason=f"{name} must not be negative")
        return value

    async def telemetry(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        after = self._int_query(request, "after", 0)
        limit = min(self._int_query(request, "limit", 100), MAX_TELEMETRY_PAGE)
        follow = request.query.get("follow", "") in ("1", "true")
        since = tail = None
        if "sinceSeconds" in request.query:  # as Kubernetes' pod logs: the last N seconds
            seconds = min(self._int_query(request, "sinceSeconds", 0), MAX_SINCE_SECONDS)
            since = time.time() - seconds
        if "tailLines" in request.query:  # the newest N records (then pages after them)
            tail = min(self._int_query(request, "tailLines", 0), MAX_TAIL_LINES)
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
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            while True:
                items = page(after)
                for item in items:
                    await response.write((json.dumps(item) + "\n").encode())
                    after = item["id"]
                if not items:
                    await asyncio.sleep(FOLLOW_POLL_SECONDS)
        except ConnectionResetError:  # the reader went away: the normal end of a follow
            return response

    async def watch(self, request: web.Request) -> web.StreamResponse:
        """What exists (ADDED), then every change of the kind, spec and status (the change
        feed, ``edgehub.feed``); an ERROR event and the end when the watcher fell too far
        behind or the hub stops."""
        kind = self._kind(request)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        feed = self.hub.feed
        subscriber = feed.follow(kind)
        try:
            for view in self.hub.ops.list_views(kind, None):
                added = {"type": "ADDED", "kind": kind, "object": view}
                await response.write((json.dumps(added) + "\n").encode())
            while True:
                try:
                    change = await asyncio.wait_for(subscriber.queue.get(), WATCH_IDLE_CHECK)
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        return response
                    continue
                if change is None:
                    ended = {"type": "ERROR", "message": subscriber.why}
                    await response.write((json.dumps(ended) + "\n").encode())
                    return response
                stored = None if change.type == "DELETED" else self.hub.cache.get(kind, change.name)
                if stored is None and change.type != "DELETED":
                    continue  # deleted since: its DELETED follows
                view = change.body if stored is None else self.hub.ops.render(stored)
                event: dict[str, Any] = {
                    "type": change.type,
                    "revision": change.position.revision,
                    "resourceVersion": str(change.position),
                    "kind": kind,
                    "name": change.name,
                    "object": view,
                }
                await response.write((json.dumps(event) + "\n").encode())
        except ConnectionResetError:  # the watcher went away: the normal end of a watch
            return response
        finally:
            feed.unsubscribe(subscriber)

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
        data = await request.read()
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
        tail = min(self._int_query(request, "tail", DEFAULT_LOG_TAIL), MAX_LOG_TAIL)
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
        response: web.StreamResponse | None = None
        try:
            while True:
                try:
                    piece = await asyncio.wait_for(stream.queue.get(), LOG_POLL_SECONDS)
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        return response or web.Response(status=499)
                    continue
                if piece is None:
                    break
                if response is None:
                    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
                    await response.prepare(request)
                await response.write(piece)
            if response is None:
                if stream.code:
                    status = stream.code if 400 <= stream.code < 600 else 502
                    return _error(status, stream.message or "the node ended the request")
                response = web.StreamResponse(headers={"Content-Type": "text/plain"})
                await response.prepare(request)
            elif stream.code:
                await response.write(f"\n[edgehub: {stream.message}]\n".encode())
            await response.write_eof()
            return response
        except ConnectionResetError:
            return response or web.Response(status=499)
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
