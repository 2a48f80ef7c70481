"""KubeEdge's ``devices.kubeedge.io/v1beta1`` served by the hub's Kubernetes API, so a
KubeEdge site's manifests apply unchanged with ``kubectl apply`` (docs/kubeedge.md).

A KubeEdge ``Device`` (namespaced) is an edgenode Device under its mapped name
(``line-a/thermo`` is ``line-a_thermo``; ``edgenode.devices.kubeedge.ids``): writes are
translated (``crd.translate``) and applied like any edgenode Device, reads translated back
(``crd.to_kubeedge``), with the reported values in ``status.twins``. ``DeviceModel``
documents are accepted and not kept (edgenode needs none): a create answers with the
object, a get finds nothing, a delete succeeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from edgehub import kubeedge
from edgehub.kinds.base import ResourceConflict, ResourceError
from edgehub.kube import discovery
from edgehub.kube.errors import KubeError, success
from edgehub.kube.objects import uid
from edgehub.kube.patches import PatchError, json_patch, merge_patch, server_side_apply

from edgenode.devices.kubeedge import DeviceId, KubeEdgeSpecError, device_id_of, edgenode_name
from edgenode.devices.kubeedge.crd import API_VERSION, GROUP, to_kubeedge
from edgenode.devices.kubeedge.values import to_text

if TYPE_CHECKING:
    from edgehub.kube.api import KubeApi
    from edgehub.store import StoredResource

VERSION: Final = "v1beta1"
PREFIX: Final = f"/apis/{API_VERSION}"
DEVICE_VERBS: Final = ["create", "delete", "get", "list", "patch", "update"]


def resource_list() -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": API_VERSION,
        "resources": [
            {
                "name": "devices",
                "singularName": "device",
                "namespaced": True,
                "kind": "Device",
                "verbs": DEVICE_VERBS,
            },
            {
                "name": "devicemodels",
                "singularName": "devicemodel",
                "namespaced": True,
                "kind": "DeviceModel",
                "verbs": DEVICE_VERBS,
            },
        ],
    }


class KubeEdgeGroup:
    """The handlers of ``devices.kubeedge.io`` (on the hub's KubeApi plumbing)."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.hub = api.hub

    def add_routes(self, app: web.Application) -> None:
        g = self.api.guarded
        r = app.router
        r.add_get(f"/apis/{GROUP}", g(self.group))
        r.add_get(PREFIX, g(self.resources))
        r.add_get(f"{PREFIX}/devices", g(self.list_all))
        ns = f"{PREFIX}/namespaces/{{namespace}}"
        r.add_get(f"{ns}/devices", g(self.list_namespace))
        r.add_post(f"{ns}/devices", g(self.create))
        r.add_get(f"{ns}/devices/{{name}}", g(self.get))
        r.add_put(f"{ns}/devices/{{name}}", g(self.replace))
        r.add_patch(f"{ns}/devices/{{name}}", g(self.patch))
        r.add_delete(f"{ns}/devices/{{name}}", g(self.delete))
        r.add_get(f"{PREFIX}/devicemodels", g(self.no_models))
        r.add_get(f"{ns}/devicemodels", g(self.no_models))
        r.add_post(f"{ns}/devicemodels", g(self.model_accepted))
        r.add_get(f"{ns}/devicemodels/{{name}}", g(self.model_missing))
        r.add_route("PUT", f"{ns}/devicemodels/{{name}}", g(self.model_accepted))
        r.add_route("PATCH", f"{ns}/devicemodels/{{name}}", g(self.model_accepted))
        r.add_delete(f"{ns}/devicemodels/{{name}}", g(self.model_deleted))

    # --- Discovery --------------------------------------------------------------------------

    async def group(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(discovery.group(GROUP, VERSION))

    async def resources(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(resource_list())

    # --- Devices ----------------------------------------------------------------------------

    def _devices(self, namespace: str | None) -> Iterator[tuple[DeviceId, StoredResource]]:
        for stored in self.hub.cache.of_kind("Device"):
            try:
                device = device_id_of(stored.body)
            except KubeEdgeSpecError:
                continue
            if namespace is None or device.namespace == namespace:
                yield device, stored

    def _find(self, namespace: str, name: str) -> StoredResource | None:
        device = DeviceId(namespace, name)
        try:
            stored = self.hub.cache.get("Device", edgenode_name(device))
        except ValueError:
            return None
        if stored is None:
            return None
        try:
            return stored if device_id_of(stored.body) == device else None
        except KubeEdgeSpecError:
            return None

    def _stored(self, namespace: str, name: str) -> StoredResource:
        stored = self._find(namespace, name)
        if stored is None:
            raise KubeError(404, f'devices.{GROUP} "{name}" not found', kind="devices", name=name)
        return stored

    def _object(self, stored: StoredResource) -> dict[str, Any]:
        obj = to_kubeedge(stored.body)
        position = self.hub.feed.object_position("Device", stored.name, stored.revision)
        metadata = obj["metadata"]
        metadata["uid"] = uid("Device", stored.name, stored.created)
        metadata["resourceVersion"] = str(position)
        metadata["generation"] = stored.generation
        view = self.hub.ops.render(stored)
        metadata["creationTimestamp"] = view["metadata"].get("creationTimestamp")
        reported = (view.get("status") or {}).get("reported") or {}
        obj["status"] = {
            "twins": [
                {"propertyName": key, "reported": {"value": to_text(value)}}
                for key, value in reported.items()
            ]
        }
        return obj

    def _list(self, namespace: str | None) -> web.Response:
        items = [self._object(stored) for _device, stored in self._devices(namespace)]
        return web.json_response(
            {
                "apiVersion": API_VERSION,
                "kind": "DeviceList",
                "metadata": {"resourceVersion": str(self.hub.feed.position)},
                "items": items,
            }
        )

    async def list_all(self, request: web.Request) -> web.StreamResponse:
        return self._list(None)

    async def list_namespace(self, request: web.Request) -> web.StreamResponse:
        return self._list(request.match_info["namespace"])

    async def get(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        return web.json_response(self._object(self._stored(ns, name)))

    def _document(self, body: Any, namespace: str, name: str | None) -> dict[str, Any]:
        """A KubeEdge Device of this URL (namespace, name checked or filled in)."""
        if not isinstance(body, dict):
            raise KubeError(400, "the body must be an object")
        if (
            body.get("apiVersion", API_VERSION) != API_VERSION
            or body.get("kind", "Device") != "Device"
        ):
            raise KubeError(400, f"expected a {API_VERSION} Device")
        document: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "Device", **body}
        metadata = document.get("metadata")
        if not isinstance(metadata, dict):
            raise KubeError(422, "Device is invalid: metadata: Required value", field="metadata")
        if metadata.get("namespace", namespace) != namespace:
            raise KubeError(400, "the namespace of the object does not match the URL")
        metadata = {**metadata, "namespace": namespace}
        if name is not None:
            if metadata.get("name", name) != name:
                raise KubeError(400, "the name of the object does not match the URL")
            metadata["name"] = name
        for key in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"):
            metadata.pop(key, None)
        document["metadata"] = metadata
        document.pop("status", None)
        return document

    async def _store(self, request: web.Request, document: dict[str, Any]) -> dict[str, Any]:
        """Translate and apply one KubeEdge Device (or only check it with dryRun=All)."""
        name = str(document["metadata"].get("name"))
        try:
            incoming, _skipped = kubeedge.translate(
                [document], self.hub.cache, keep_last_applied=True
            )
            resources = [item.doc for item in incoming]
            if request.query.get("dryRun") == "All":
                self.hub.ops.check(resources)
            else:
                await self.hub.ops.apply_async(resources)
        except ResourceConflict as exc:
            raise KubeError(409, exc.message, kind="devices", name=name) from None
        except ResourceError as exc:
            where = f"{exc.field}: " if exc.field else ""
            raise KubeError(
                422,
                f'Device "{name}" is invalid: {where}{exc.message}',
                kind="Device",
                name=name,
                field=exc.field or None,
                cause=exc.message,
            ) from None
        stored = self._find(str(document["metadata"]["namespace"]), name)
        if stored is None:  # a dry run
            return document
        return self._object(stored)

    async def create(self, request: web.Request) -> web.StreamResponse:
        ns = request.match_info["namespace"]
        document = self._document(await self.api.read_body(request), ns, None)
        name = document["metadata"].get("name")
        if isinstance(name, str) and self._find(ns, name) is not None:
            raise KubeError(
                409,
                f'devices.{GROUP} "{name}" already exists',
                reason="AlreadyExists",
                kind="devices",
                name=name,
            )
        return web.json_response(await self._store(request, document), status=201)

    async def replace(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        body = await self.api.read_body(request)
        stored = self._stored(ns, name)
        if isinstance(body, dict):
            self.api.check_version("devices", stored, body)
        return web.json_response(await self._store(request, self._document(body, ns, name)))

    async def patch(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        media = request.content_type
        stored = self._find(ns, name)
        current = None if stored is None else self._object(stored)
        if current is not None:
            current.pop("status", None)
            current["metadata"]["resourceVersion"] = None
        try:
            if media == "application/apply-patch+yaml":
                manager = request.query.get("fieldManager", "")
                if not manager:
                    raise KubeError(422, "fieldManager is required for server-side apply")
                applied = self._document(await self.api.read_body(request), ns, name)
                patched = server_side_apply(current, applied, manager)
            elif current is None or stored is None:
                raise KubeError(
                    404, f'devices.{GROUP} "{name}" not found', kind="devices", name=name
                )
            elif media == "application/merge-patch+json":
                patched = merge_patch(current, await self.api.read_body(request, yaml_ok=False))
            elif media == "application/json-patch+json":
                patched = json_patch(current, await self.api.read_body(request, yaml_ok=False))
            else:
                raise KubeError(415, f"unsupported patch type {media!r} (use merge or json)")
        except PatchError as exc:
            raise KubeError(400, str(exc)) from None
        if stored is not None and isinstance(patched, dict):
            self.api.check_version("devices", stored, patched)
        document = self._document(patched, ns, name)
        return web.json_response(
            await self._store(request, document), status=201 if stored is None else 200
        )

    async def delete(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        stored = self._stored(ns, name)
        if request.query.get("dryRun") != "All":
            self.hub.ops.delete("Device", stored.name)
        return web.json_response(success("devices", name))

    # --- DeviceModels: accepted, not kept -----------------------------------------------------

    async def no_models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "apiVersion": API_VERSION,
                "kind": "DeviceModelList",
                "metadata": {"resourceVersion": str(self.hub.feed.position)},
                "items": [],
            }
        )

    async def model_accepted(self, request: web.Request) -> web.StreamResponse:
        body = await self.api.read_body(request)
        if not isinstance(body, dict):
            raise KubeError(400, "the body must be an object")
        return web.json_response(body, status=201 if request.method == "POST" else 200)

    async def model_missing(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        raise KubeError(
            404,
            f'devicemodels.{GROUP} "{name}" not found (edgenode keeps no DeviceModels: '
            "declare property types on the Device, docs/kubeedge.md)",
            kind="devicemodels",
            name=name,
        )

    async def model_deleted(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(success("devicemodels", request.match_info["name"]))
