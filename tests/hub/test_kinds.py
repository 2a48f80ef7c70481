"""The kind registry: names resolve, tables and OpenAPI derive from it, and a new kind is
added through the registry alone — one module's worth of declarations — and every verb
of the hub works on it: apply (validated by its schema), get, list with its table,
delete, the OpenAPI documents, the fan-out to the node it targets and the uplink records
it takes (the hub in-process, a SimNode over a real websockets link)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest
from aiohttp.test_utils import TestClient, TestServer
from edgehub.api import OperatorApi
from edgehub.hub import Hub, HubSettings
from edgehub.kinds import REGISTRY, builtin_registry
from edgehub.kinds.base import Column, IngestContext, Kind, ResourceError, ViewContext, dash
from edgehub.kinds.schema import SchemaError, check
from edgehub.link import LinkServer, server_options
from edgehub.metrics import HubMetrics
from edgehub.openapi import openapi_document
from edgehub.resources import resolve_kind, validate_document
from edgehub.simnode import SimNode
from edgehub.store import SqliteHubStore, StoredResource
from edgehub.targeting import Target
from websockets.asyncio.server import serve

from edgenode.protocol import UplinkRecord


def test_every_builtin_kind_resolves_by_name_plural_singular_and_short_name():
    registry = builtin_registry()
    for text, kind in [
        ("no", "Node"),
        ("DEV", "Device"),
        ("cfg", "Config"),
        ("rt", "Route"),
        ("routes", "Route"),
    ]:
        assert registry.resolve(text).name == kind
    assert registry.names() == ["Node", "Device", "Config", "Route", "App", "AppAssignment"]
    with pytest.raises(ValueError, match="unknown kind 'pods'"):
        registry.resolve("pods")


def test_a_name_or_uplink_kind_cannot_be_registered_twice():
    registry = builtin_registry()

    class Clash(Kind):
        name = "Clash"
        plural = "clashes"
        singular = "clash"
        short_names = ("dev",)

    with pytest.raises(ValueError, match="names already registered"):
        registry.register(Clash())

    class Thief(Kind):
        name = "Thief"
        plural = "thieves"
        singular = "thief"
        uplink_kinds = frozenset({"twin"})

    with pytest.raises(ValueError, match="uplink kinds already taken"):
        registry.register(Thief())


def test_the_schema_checker_names_the_field_and_never_recurses():
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0, "maximum": 9},
            "items": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        },
        "additionalProperties": False,
    }
    check({"n": 3, "items": ["a"]}, schema, "spec")
    for value, field, message in [
        ({"n": 10}, "spec.n", "must be in [0, 9]"),
        ({"n": True}, "spec.n", "must be an integer"),
        ({"items": ["a", 1]}, "spec.items[1]", "must be a string"),
        ({"items": ["a", "b", "c"]}, "spec.items", "more than 2 items"),
        ({"other": 1}, "spec.other", "unknown field"),
    ]:
        with pytest.raises(SchemaError) as info:
            check(value, schema, "spec")
        assert (info.value.field, message in info.value.message) == (field, True)
    deep: Any = "x"
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(SchemaError, match="must be a string"):
        check(deep, {"type": "array", "items": schema["properties"]["items"]}, "v")


def test_the_table_columns_come_from_the_kind():
    config = REGISTRY.get("Config")
    view = {
        "metadata": {"name": "c", "resourceVersion": "4", "creationTimestamp": None},
        "spec": {"data": {"a": "1"}, "nodeSelector": {"site": "north"}},
        "status": {"applied": {"current": 1, "targeted": 2}},
    }
    assert config.table([view], False, 0.0) == [
        ["NAME", "KEYS", "SELECTOR", "APPLIED", "REVISION", "AGE"],
        ["c", "1", "site=north", "1/2", "4", "<unknown>"],
    ]
    assert config.table([view], True, 0.0)[0][-1] == "LABELS"


def test_age_is_read_as_utc_whatever_the_local_zone(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "America/New_York")  # a zone with daylight saving time
    time.tzset()
    try:
        node = REGISTRY.get("Node")
        created = "2026-07-01T12:00:00Z"
        view = {"metadata": {"name": "n", "creationTimestamp": created}, "status": {}}
        import calendar

        then = calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))
        row = node.table([view], False, then + 7200 + 30)[1]
        assert row[-1] == "2h"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# --- A throwaway kind, added through the registry alone ------------------------------------


def _cell(view: dict[str, Any], now: float) -> str:
    return dash(view.get("spec", {}).get("colour"))


class WidgetKind(Kind):
    """A kind a test adds: a widget on one node, with a colour, reporting its spin."""

    name = "Widget"
    plural = "widgets"
    singular = "widget"
    short_names = ("wd",)
    spec_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["node"],
        "properties": {
            "node": {"type": "string"},
            "colour": {"type": "string", "enum": ["red", "blue"]},
        },
        "additionalProperties": False,
    }
    uplink_kinds = frozenset({"widget-spin"})
    columns = (Column("COLOUR", _cell), Column("SPIN", lambda v, now: dash(v["status"]["spin"])))

    def target(self, body: Mapping[str, Any]) -> Target | None:
        return Target(str(body["spec"]["node"]), None)

    def validate(self, spec: dict[str, Any], index: int | None) -> None:
        if spec.get("colour") == "blue" and spec["node"].startswith("red-"):
            raise ResourceError(index, "spec.colour", "red nodes take red widgets")

    def status(self, ctx: ViewContext, stored: StoredResource) -> dict[str, Any] | None:
        return {"spin": ctx.store.get_status("Widget", stored.name).get("spin")}

    def ingest(self, ctx: IngestContext, node: str, record: dict[str, Any]) -> str | None:
        ctx.store.set_status("Widget", str(record["widget"]), {"spin": record["spin"]})
        return None


@pytest.fixture
def widgets() -> Iterator[None]:
    REGISTRY.register(WidgetKind())
    yield
    REGISTRY.unregister("Widget")


WIDGET = {
    "apiVersion": "edgenode.io/v1",
    "kind": "Widget",
    "metadata": {"name": "w1"},
    "spec": {"node": "n1", "colour": "red"},
}


def test_a_kind_added_through_the_registry_alone_works_in_every_verb(widgets, tmp_path):
    assert resolve_kind("wd") == "Widget"
    with pytest.raises(ResourceError, match="must be one of"):
        validate_document({**WIDGET, "spec": {"node": "n1", "colour": "green"}}, 0)
    with pytest.raises(ResourceError, match="red nodes take red widgets"):
        validate_document({**WIDGET, "spec": {"node": "red-1", "colour": "blue"}}, 0)
    document = openapi_document()
    assert document["components"]["schemas"]["Widget"]["properties"]["spec"]["required"] == ["node"]
    kinds = document["paths"]["/v1/{kind}"]["get"]["parameters"][0]["schema"]["enum"]
    assert "widgets" in kinds

    async def scenario() -> None:
        store = SqliteHubStore(tmp_path / "hub.db")
        hub = Hub(store, HubSettings(heartbeat_interval=0.2), HubMetrics())
        api = TestClient(TestServer(OperatorApi(hub, "t", lambda: True).app()))
        await api.start_server()
        links = LinkServer(hub)
        headers = {"Authorization": "Bearer t"}
        async with serve(
            links.handler,
            "127.0.0.1",
            0,
            process_request=links.process_request,
            **server_options(hub),
        ) as server:
            port = server.sockets[0].getsockname()[1]
            try:
                token = (await (await api.post("/v1/nodes/n1/token", headers=headers)).json())[
                    "token"
                ]
                reply = await api.post("/v1/apply", data=json.dumps(WIDGET), headers=headers)
                assert (await reply.json())["results"][0]["action"] == "created"
                node = SimNode(f"ws://127.0.0.1:{port}/v1/connect", token, "n1")
                task = asyncio.create_task(node.run_once())
                await node.wait_until(lambda: "Widget/default/w1" in node.desired)
                assert node.desired["Widget/default/w1"][1]["spec"]["colour"] == "red"
                spin = json.dumps({"kind": "widget-spin", "widget": "w1", "spin": 42})
                await node.send_uplink([UplinkRecord(1, 5, spin.encode())])
                await node.wait_until(lambda: 1 in node.acked_uplink)
                listing = await (await api.get("/v1/wd", headers=headers)).json()
                (item,) = listing["items"]
                assert item["status"] == {"spin": 42}
                table = REGISTRY.get("Widget").table(listing["items"], False, 0.0)
                assert table[0] == ["NAME", "COLOUR", "SPIN", "AGE"]
                assert table[1][:3] == ["w1", "red", "42"]
                deleted = await api.delete("/v1/widgets/w1", headers=headers)
                assert deleted.status == 200
                await node.wait_until(lambda: "Widget/default/w1" not in node.desired)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            finally:
                await api.close()
                store.close()

    asyncio.run(scenario())


def test_a_devices_desired_version_moves_only_when_desired_does(tmp_path):
    store = SqliteHubStore(tmp_path / "hub.db")
    hub = Hub(store, HubSettings(), HubMetrics())
    device = {
        "apiVersion": "edgenode.io/v1",
        "kind": "Device",
        "metadata": {"name": "lamp"},
        "spec": {"node": "n1", "desired": {"power": "on"}},
    }

    def versions() -> tuple[int, int]:
        view = hub.ops.view("Device", "lamp")
        assert view is not None
        return view["status"]["versions"]["desired"], view["metadata"]["generation"]

    try:
        created = hub.ops.apply([device])[0]["revision"]
        assert versions() == (created, 1)
        hub.ops.apply([{**device, "spec": {**device["spec"], "description": "hall"}}])
        assert versions() == (created, 2)  # a spec change that leaves desired alone
        # The stamped annotation does not make a re-apply of -o yaml output a change.
        shown = hub.ops.view("Device", "lamp")
        assert shown is not None
        assert hub.ops.apply([shown])[0]["action"] == "unchanged"
        view = hub.ops.twin_set("lamp", {"power": "off"})
        assert view["status"]["versions"]["desired"] == hub.revision
        assert versions()[0] > created
        # A user cannot set the hub's annotation: it is dropped and stamped again.
        forged = {
            **device,
            "metadata": {"name": "lamp", "annotations": {"edgenode.io/desired-version": "1"}},
        }
        hub.ops.apply([forged])
        assert versions()[0] == hub.revision
    finally:
        store.close()


def test_a_large_apply_in_chunks_stores_everything_or_nothing(tmp_path):
    """``apply_async`` (the API's path) commits in chunks between which the loop runs
    other work; validation still covers every document before anything is stored."""
    store = SqliteHubStore(tmp_path / "hub.db")
    hub = Hub(store, HubSettings(), HubMetrics())

    def device(i: int, node: str = "n1") -> dict[str, Any]:
        return {
            "apiVersion": "edgenode.io/v1",
            "kind": "Device",
            "metadata": {"name": f"d{i}"},
            "spec": {"node": node, "desired": {"i": i}},
        }

    async def scenario() -> None:
        bad = [device(i) for i in range(600)] + [device(600, node="Not A Name")]
        with pytest.raises(ResourceError, match=r"document 600: spec\.node"):
            await hub.ops.apply_async(bad)
        assert store.revision() == 0
        results = await hub.ops.apply_async([device(i) for i in range(600)])
        assert [r["action"] for r in results] == ["created"] * 600
        assert [r["revision"] for r in results] == list(range(1, 601))
        again = await hub.ops.apply_async([device(i) for i in range(600)])
        assert {r["action"] for r in again} == {"unchanged"}

    try:
        asyncio.run(scenario())
        assert len(hub.ops.list_views("Device", None)) == 600
    finally:
        store.close()
