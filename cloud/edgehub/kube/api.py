"""The Kubernetes resource API of the hub, for an unmodified ``kubectl`` (docs/kubectl.md).

On the operator listener, beside ``/v1``: discovery (``/version``, ``/api``, ``/apis``),
OpenAPI v3, and every kind of the registry at ``/apis/edgenode.io/v1/{plural}``: list
(selectors, pages), watch, get, create, replace, patch (merge, JSON, server-side apply),
delete, and the read-only ``status`` subresource. Writes go through the same operations
as ``edgectl apply`` (validation, admission, revisions, fan-out to nodes); the objects are
the same resources with Kubernetes metadata (``objects.py``). Every error is a ``Status``.
Authentication is the admin token, as for ``/v1``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import yaml
from aiohttp import web
from edgehub.feed import ADDED, DELETED, Change, Position, Subscriber
from edgehub.kinds.base import Kind, ResourceConflict, ResourceError
from edgehub.kube import discovery, openapi
from edgehub.kube.errors import KubeError, status_object, success
from edgehub.kube.kubeedge_group import VERSION as KUBEEDGE_VERSION
from edgehub.kube.kubeedge_group import KubeEdgeGroup
from edgehub.kube.objects import GROUP, GROUP_VERSION, VERSION, from_object, to_object
from edgehub.kube.patches import PatchError, json_patch, merge_patch, server_side_apply
from edgehub.kube.table import table, wants_table
from edgehub.limits import InputError, check_value, load_json
from edgehub.selectors import Selector, SelectorError, parse_selector
from edgehub.streams import Stream, TooManyStreams, open_stream
from edgehub.targeting import labels_of

from edgenode.devices.kubeedge.crd import GROUP as KUBEEDGE_GROUP

if TYPE_CHECKING:
    from edgehub.hub import Hub
    from edgehub.store import StoredResource

log = logging.getLogger("edgehub.kube")

PREFIX: Final = f"/apis/{GROUP_VERSION}"
BOOKMARK_SECONDS: Final = 10.0
"""How often a watch that asked for bookmarks gets one while nothing happens."""
IDLE_CHECK_SECONDS: Final = 1.0
"""How often an idle watch checks that its client is still there."""
MAX_WATCH_SECONDS: Final = 3600.0
"""Longest watch (kubectl's reflectors ask for 5-10 minutes and come back)."""
MAX_LIMIT: Final = 10_000
DEFAULT_REQUEST_TIMEOUT: Final = 30.0
"""As ``edgehub serve --api-timeout``'s default (the operator API passes its own)."""
CONFLICT_MESSAGE: Final = (
    "the object has been modified; please apply your changes to the latest version and try again"
)
JSON_MEDIA: Final = "application/json"
MERGE_PATCH: Final = "application/merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"
STRATEGIC_PATCH: Final = "application/strategic-merge-patch+json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _error_response(error: KubeError) -> web.Response:
    return _json(error.status(), error.code)


def _not_found_path() -> KubeError:
    return KubeError(404, "the server could not find the requested resource")


class KubeApi:
    """The Kubernetes API handlers of one hub."""

    def __init__(
        self, hub: Hub, admin_token: str, request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    ) -> None:
        self.hub = hub
        self.admin_token = admin_token
        self.request_timeout = request_timeout
        """Bounds a request body's arrival and each write of a watch (``--api-timeout``)."""

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/version", self._open(self.version))
        for path, handler in (
            ("/api", self.core_versions),
            ("/api/v1", self.core_resources),
            ("/apis", self.groups),
            (f"/apis/{GROUP}", self.group),
            (PREFIX, self.resources),
            ("/openapi/v3", self.openapi_index),
            (f"/openapi/v3/apis/{GROUP_VERSION}", self.openapi_group),
            (f"/openapi/v3/{openapi.KUBEEDGE_PATH}", self.openapi_kubeedge),
            (f"{PREFIX}/{{plural}}", self.list_or_watch),
            (f"{PREFIX}/{{plural}}/{{name}}", self.get),
            (f"{PREFIX}/{{plural}}/{{name}}/status", self.get),
        ):
            r.add_get(path, self.guarded(handler))
        r.add_post(f"{PREFIX}/{{plural}}", self.guarded(self.create))
        r.add_put(f"{PREFIX}/{{plural}}/{{name}}", self.guarded(self.replace))
        r.add_patch(f"{PREFIX}/{{plural}}/{{name}}", self.guarded(self.patch))
        r.add_delete(f"{PREFIX}/{{plural}}/{{name}}", self.guarded(self.delete))
        for method in ("PUT", "PATCH"):
            r.add_route(
                method, f"{PREFIX}/{{plural}}/{{name}}/status", self.guarded(self.status_write)
            )
        r.add_delete(f"{PREFIX}/{{plural}}", self.guarded(self.delete_collection))
        KubeEdgeGroup(self).add_routes(app)
        r.add_route("*", "/apis/{tail:.*}", self.guarded(self.unknown))
        r.add_route("*", "/api/{tail:.*}", self.guarded(self.unknown))

    # --- Plumbing ---------------------------------------------------------------------------

    def _open(self, handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            return await self._run(handler, request)

        return run

    def guarded(self, handler: Handler) -> Handler:
        """The admin token, then the handler; every failure becomes a Status."""

        async def run(request: web.Request) -> web.StreamResponse:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                return _error_response(KubeError(401, "Unauthorized"))
            if not hmac.compare_digest(
                token.strip().encode("utf-8", "replace"), self.admin_token.encode()
            ):
                return _error_response(KubeError(401, "Unauthorized"))
            return await self._run(handler, request)

        return run

    async def _run(self, handler: Handler, request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except KubeError as exc:
            return _error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error_response(KubeError(exc.status, exc.reason))

    def _kind(self, request: web.Request) -> Kind:
        plural = request.match_info["plural"]
        for kind in self.hub.registry:
            if kind.plural == plural:
                return kind
        raise _not_found_path()

    def _stored(self, kind: Kind, name: str) -> StoredResource:
        stored = self.hub.cache.get(kind.name, name)
        if stored is None:
            raise KubeError(
                404,
                f'{kind.plural}.{GROUP} "{name}" not found',
                kind=kind.plural,
                name=name,
            )
        return stored

    def _object(self, stored: StoredResource) -> dict[str, Any]:
        position = self.hub.feed.object_position(stored.kind, stored.name, stored.revision)
        return to_object(self.hub.ops.render(stored), stored.created, position)

    async def read_body(self, request: web.Request, *, yaml_ok: bool = True) -> Any:
        try:
            async with asyncio.timeout(self.request_timeout):
                raw = await request.read()
        except TimeoutError:
            raise KubeError(
                408, f"the request body did not arrive within {self.request_timeout:g} s"
            ) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise KubeError(400, "the body is not UTF-8") from None
        media = request.content_type
        try:
            if media in (JSON_MEDIA, MERGE_PATCH, JSON_PATCH) or not yaml_ok:
                return load_json(raw)  # within the operator API's bounds (limits.py)
            documents = list(yaml.load_all(text, Loader=_loader()))
            check_value(documents)
        except InputError as exc:
            raise KubeError(400, f"the body cannot be read: {str(exc)[:200]}") from None
        except (ValueError, yaml.YAMLError) as exc:
            raise KubeError(400, f"the body cannot be read: {str(exc)[:200]}") from None
        if len(documents) != 1:
            raise KubeError(400, "the body must be one object")
        return documents[0]

    # --- Discovery --------------------------------------------------------------------------

    async def version(self, request: web.Request) -> web.StreamResponse:
        return _json(discovery.version())

    async def core_versions(self, request: web.Request) -> web.StreamResponse:
        return _json(discovery.core_versions())

    async def core_resources(self, request: web.Request) -> web.StreamResponse:
        return _json(discovery.core_resources())

    async def groups(self, request: web.Request) -> web.StreamResponse:
        return _json(discovery.group_list([(KUBEEDGE_GROUP, KUBEEDGE_VERSION)]))

    async def group(self, request: web.Request) -> web.StreamResponse:
        return _json(discovery.group(GROUP, VERSION))

    async def resources(self, request: web.Request) -> web.StreamResponse:
        return _json(discovery.resource_list(self.hub.registry))

    async def openapi_index(self, request: web.Request) -> web.StreamResponse:
        return _json(
            openapi.index(
                {
                    openapi.GROUP_PATH: openapi.group_document(self.hub.registry),
                    openapi.KUBEEDGE_PATH: openapi.kubeedge_group_document(),
                }
            )
        )

    async def openapi_group(self, request: web.Request) -> web.StreamResponse:
        return _json(openapi.group_document(self.hub.registry))

    async def openapi_kubeedge(self, request: web.Request) -> web.StreamResponse:
        return _json(openapi.kubeedge_group_document())

    async def unknown(self, request: web.Request) -> web.StreamResponse:
        raise _not_found_path()

    # --- Reads ------------------------------------------------------------------------------

    async def get(self, request: web.Request) -> web.StreamResponse:
        kind = self._kind(request)
        obj = self._object(self._stored(kind, request.match_info["name"]))
        if wants_table(request.headers.get("Accept", "")):
            include = request.query.get("includeObject", "Metadata")
            return _json(
                table(kind, [obj], obj["metadata"]["resourceVersion"], include_object=include)
            )
        return _json(obj)

    async def list_or_watch(self, request: web.Request) -> web.StreamResponse:
        kind = self._kind(request)
        selector = _label_selector(request)
        names = _field_selector(request)
        if request.query.get("watch", "") in ("1", "true", "True"):
            return await self._watch(request, kind, selector, names)
        limit = _int(request, "limit", 0)
        after = _continue_from(request.query.get("continue", ""))
        self.hub.feed.look(kind.name)  # a watch from this list's position misses nothing
        position = str(self.hub.feed.position)
        items: list[dict[str, Any]] = []
        token = ""
        for stored in self.hub.cache.of_kind(kind.name):
            if after is not None and stored.name <= after:
                continue
            if not _matches(stored.body, stored.name, selector, names):
                continue
            if limit and len(items) >= min(limit, MAX_LIMIT):
                token = _continue_token(items[-1]["metadata"]["name"])
                break
            items.append(self._object(stored))
        if wants_table(request.headers.get("Accept", "")):
            include = request.query.get("includeObject", "Metadata")
            result = table(kind, items, position, include_object=include)
            if token:
                result["metadata"]["continue"] = token
            return _json(result)
        metadata: dict[str, Any] = {"resourceVersion": position}
        if token:
            metadata["continue"] = token
        return _json(
            {
                "apiVersion": GROUP_VERSION,
                "kind": kind.list_kind,
                "metadata": metadata,
                "items": items,
            }
        )

    # --- Watch ------------------------------------------------------------------------------

    async def _watch(
        self,
        request: web.Request,
        kind: Kind,
        selector: Selector | None,
        names: tuple[set[str], set[str]],
    ) -> web.StreamResponse:
        as_table = wants_table(request.headers.get("Accept", ""))
        bookmarks = request.query.get("allowWatchBookmarks", "") in ("1", "true")
        timeout = min(
            float(_int(request, "timeoutSeconds", 0)) or MAX_WATCH_SECONDS, MAX_WATCH_SECONDS
        )
        text = request.query.get("resourceVersion", "")
        since: Position | None = None
        if text not in ("", "0"):
            try:
                since = Position.parse(text)
            except ValueError as exc:
                raise KubeError(400, str(exc)) from None
        try:
            stream = open_stream(
                request, self.request_timeout, self.hub.metrics, content_type=JSON_MEDIA
            )
        except TooManyStreams as exc:
            raise KubeError(503, str(exc)) from None
        feed = self.hub.feed
        subscriber = feed.follow(kind.name) if since is None else feed.resume(kind.name, since)
        try:
            async with stream:
                if subscriber is None:
                    await self._send(stream, "ERROR", _gone(text))
                    return stream.response
                if since is None:
                    # No position: the current objects first, as ADDED (Kubernetes' way).
                    for stored in list(self.hub.cache.of_kind(kind.name)):
                        if _matches(stored.body, stored.name, selector, names):
                            obj = self._event_object(kind, self._object(stored), as_table)
                            await self._send(stream, ADDED, obj)
                await self._follow(
                    stream, kind, subscriber, selector, names, as_table, bookmarks, timeout
                )
        finally:
            if subscriber is not None:
                feed.unsubscribe(subscriber)
        return stream.response

    async def _follow(
        self,
        stream: Stream,
        kind: Kind,
        subscriber: Subscriber,
        selector: Selector | None,
        names: tuple[set[str], set[str]],
        as_table: bool,
        bookmarks: bool,
        timeout: float,
    ) -> None:
        deadline = time.monotonic() + timeout
        last_sent = time.monotonic()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                change = await asyncio.wait_for(
                    subscriber.queue.get(), min(left, IDLE_CHECK_SECONDS)
                )
            except TimeoutError:
                if stream.gone():
                    return
                if bookmarks and time.monotonic() - last_sent >= BOOKMARK_SECONDS:
                    await self._send(stream, "BOOKMARK", self._bookmark(kind))
                    last_sent = time.monotonic()
                continue
            if change is None:
                gone = status_object(410, f"{subscriber.why}: list again", "Gone")
                await self._send(stream, "ERROR", gone)
                return
            obj = self._change_object(change)
            if obj is None or not _matches(obj, change.name, selector, names):
                continue
            await self._send(stream, change.type, self._event_object(kind, obj, as_table))
            last_sent = time.monotonic()

    def _change_object(self, change: Change) -> dict[str, Any] | None:
        """The object of a change, at the change's position (its status as now)."""
        if change.type == DELETED:
            body = json.loads(json.dumps(change.body))
            body.setdefault("metadata", {})
            return to_object(body, change.created or 0.0, change.position)
        stored = self.hub.cache.get(change.kind, change.name)
        if stored is None:
            return None  # deleted since: its DELETED follows
        return to_object(self.hub.ops.render(stored), stored.created, change.position)

    def _event_object(self, kind: Kind, obj: dict[str, Any], as_table: bool) -> dict[str, Any]:
        if not as_table:
            return obj
        return table(kind, [obj], obj["metadata"]["resourceVersion"])

    def _bookmark(self, kind: Kind) -> dict[str, Any]:
        return {
            "kind": kind.name,
            "apiVersion": GROUP_VERSION,
            "metadata": {"resourceVersion": str(self.hub.feed.position)},
        }

    @staticmethod
    async def _send(stream: Stream, event_type: str, obj: dict[str, Any]) -> None:
        await stream.send({"type": event_type, "object": obj})

    # --- Writes -----------------------------------------------------------------------------

    async def _store(
        self, request: web.Request, kind: Kind, document: dict[str, Any]
    ) -> dict[str, Any]:
        """Apply one object through the hub's operations (or only check it, with
        ``dryRun=All``); the object as it is now."""
        name = (
            document.get("metadata", {}).get("name")
            if isinstance(document.get("metadata"), dict)
            else None
        )
        try:
            if request.query.get("dryRun") == "All":
                (checked,) = self.hub.ops.check([from_object(document)])
                result: dict[str, Any] = checked
                return result
            await self.hub.ops.apply_async([from_object(document)])
        except ResourceConflict as exc:
            raise KubeError(
                409, exc.message, reason="Conflict", kind=kind.plural, name=name
            ) from None
        except ResourceError as exc:
            where = f"{exc.field}: " if exc.field else ""
            message = f'{kind.name} "{name}" is invalid: {where}{exc.message}'
            raise KubeError(
                422, message, kind=kind.name, name=name, field=exc.field or None, cause=exc.message
            ) from None
        return self._object(self._stored(kind, str(name)))

    def _check_identity(self, kind: Kind, document: Any, name: str | None) -> dict[str, Any]:
        if not isinstance(document, dict):
            raise KubeError(400, "the body must be an object")
        if document.get("apiVersion", GROUP_VERSION) != GROUP_VERSION:
            raise KubeError(
                400, f"apiVersion must be {GROUP_VERSION}, not {document.get('apiVersion')!r}"
            )
        if document.get("kind", kind.name) != kind.name:
            raise KubeError(400, f"kind must be {kind.name}, not {document.get('kind')!r}")
        checked: dict[str, Any] = {"apiVersion": GROUP_VERSION, "kind": kind.name, **document}
        metadata = checked.get("metadata")
        if not isinstance(metadata, dict):
            raise KubeError(
                422, f"{kind.name} is invalid: metadata: Required value", field="metadata"
            )
        if metadata.get("generateName") and not metadata.get("name"):
            raise KubeError(
                422, "generateName is not supported: give metadata.name", field="metadata.name"
            )
        if name is not None:
            given = metadata.get("name", name)
            if given != name:
                raise KubeError(
                    400, f"the name in the body ({given!r}) is not the one in the URL ({name!r})"
                )
            metadata["name"] = name
        return checked

    def check_version(self, plural: str, stored: StoredResource, document: dict[str, Any]) -> None:
        """Optimistic concurrency: a resourceVersion older than the object's last spec
        change is a conflict (status changes do not count: people write only spec)."""
        text = document.get("metadata", {}).get("resourceVersion")
        if not text:
            return
        try:
            seen = Position.parse(str(text))
        except ValueError:
            raise KubeError(409, CONFLICT_MESSAGE, kind=plural, name=stored.name) from None
        if seen.revision < stored.revision:
            raise KubeError(
                409,
                f"Operation cannot be fulfilled on {plural}.{GROUP} "
                f'"{stored.name}": {CONFLICT_MESSAGE}',
                kind=plural,
                name=stored.name,
            )

    async def create(self, request: web.Request) -> web.StreamResponse:
        kind = self._kind(request)
        document = self._check_identity(kind, await self.read_body(request), None)
        name = document["metadata"].get("name")
        if isinstance(name, str) and self.hub.cache.get(kind.name, name) is not None:
            raise KubeError(
                409,
                f'{kind.plural}.{GROUP} "{name}" already exists',
                reason="AlreadyExists",
                kind=kind.plural,
                name=name,
            )
        return _json(await self._store(request, kind, document), 201)

    async def replace(self, request: web.Request) -> web.StreamResponse:
        kind = self._kind(request)
        name = request.match_info["name"]
        document = self._check_identity(kind, await self.read_body(request), name)
        stored = self._stored(kind, name)
        self.check_version(kind.plural, stored, document)
        return _json(await self._store(request, kind, document))

    async def patch(self, request: web.Request) -> web.StreamResponse:
        kind = self._kind(request)
        name = request.match_info["name"]
        media = request.content_type
        if media == STRATEGIC_PATCH:
            raise KubeError(
                415,
                "strategic merge patch is for Kubernetes' built-in kinds; use --type merge or json",
            )
        if media == APPLY_PATCH:
            return await self._apply_patch(request, kind, name)
        if media not in (MERGE_PATCH, JSON_PATCH):
            raise KubeError(415, f"unsupported patch type {media!r}")
        stored = self._stored(kind, name)
        current = from_object(self._object(stored))
        current["metadata"]["resourceVersion"] = None  # set only if the patch sets it
        patch_body = await self.read_body(request, yaml_ok=False)
        try:
            if media == MERGE_PATCH:
                if not isinstance(patch_body, dict):
                    raise PatchError("a merge patch is a JSON object")
                patched = merge_patch(current, patch_body)
            else:
                patched = json_patch(current, patch_body)
        except PatchError as exc:
            raise KubeError(400, str(exc)) from None
        document = self._check_identity(kind, patched, name)
        self.check_version(kind.plural, stored, document)
        return _json(await self._store(request, kind, document))

    async def _apply_patch(self, request: web.Request, kind: Kind, name: str) -> web.StreamResponse:
        manager = request.query.get("fieldManager", "")
        if not manager:
            raise KubeError(
                422, "fieldManager is required for server-side apply", field="fieldManager"
            )
        applied = self._check_identity(kind, await self.read_body(request), name)
        stored = self.hub.cache.get(kind.name, name)
        current = None if stored is None else from_object(self._object(stored))
        try:
            document = server_side_apply(current, applied, manager)
        except PatchError as exc:
            raise KubeError(400, str(exc)) from None
        obj = await self._store(request, kind, document)
        return _json(obj, 201 if stored is None else 200)

    async def delete(self, request: web.Request) -> web.StreamResponse:
        kind = self._kind(request)
        name = request.match_info["name"]
        stored = self._stored(kind, name)
        if request.query.get("dryRun") == "All":
            return _json(success(kind.plural, name))
        obj = self._object(stored)
        self.hub.ops.delete(kind.name, name)
        del obj
        return _json(success(kind.plural, name))

    async def delete_collection(self, request: web.Request) -> web.StreamResponse:
        raise KubeError(405, "delete them by name (kubectl delete KIND NAME... or -f FILE)")

    async def status_write(self, request: web.Request) -> web.StreamResponse:
        kind = self._kind(request)
        name = request.match_info["name"]
        raise KubeError(
            403,
            f'{kind.plural}.{GROUP} "{name}": status is written by the nodes and the hub, '
            "not by clients",
            kind=kind.plural,
            name=name,
        )


# --- Helpers ----------------------------------------------------------------------------------


def _loader() -> Any:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _int(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or len(text) > 12:
        raise KubeError(400, f"{name} must be a non-negative integer")
    return int(text)


def _label_selector(request: web.Request) -> Selector | None:
    text = request.query.get("labelSelector", "")
    if not text:
        return None
    try:
        return parse_selector(text)
    except SelectorError as exc:
        raise KubeError(400, f"unable to parse requirement: {exc}") from None


def _field_selector(request: web.Request) -> tuple[set[str], set[str]]:
    """(names required, names excluded) of ``fieldSelector`` (``metadata.name`` only)."""
    text = request.query.get("fieldSelector", "")
    wanted: set[str] = set()
    excluded: set[str] = set()
    for term in filter(None, (t.strip() for t in text.split(","))):
        for operator, target in (("!=", excluded), ("==", wanted), ("=", wanted)):
            field, sep, value = term.partition(operator)
            if sep:
                if field.strip() != "metadata.name":
                    raise KubeError(
                        400,
                        f'field label not supported: "{field.strip()}" (only metadata.name)',
                    )
                target.add(value.strip())
                break
        else:
            raise KubeError(400, f"invalid field selector {term!r}")
    if len(wanted) > 1:
        wanted = {"\0"}  # two different names: nothing matches
    return wanted, excluded


def _matches(
    body: dict[str, Any], name: str, selector: Selector | None, names: tuple[set[str], set[str]]
) -> bool:
    wanted, excluded = names
    if wanted and name not in wanted:
        return False
    if name in excluded:
        return False
    return selector is None or selector.matches(labels_of(body))


def _continue_token(name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": name}).encode()).decode()


def _continue_from(token: str) -> str | None:
    if not token:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error) as exc:
        raise KubeError(400, f"continue token is not one this hub gave: {exc}") from None
    after = value.get("after") if isinstance(value, dict) else None
    if not isinstance(after, str):
        raise KubeError(400, "continue token is not one this hub gave")
    return after


def _gone(since: str) -> dict[str, Any]:
    return status_object(410, f"too old resource version: {since[:40]} (list again)", "Expired")
