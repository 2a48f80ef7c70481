"""A newcomer's mistakes at a real ``edgehub serve`` (issue 18): the wrong port is named
(a node at the operator API, ``edgectl`` at the node-link listener), and a Device whose
node does not exist is accepted with a warning that ``edgectl apply`` prints and
``describe`` shows until the node exists."""

from __future__ import annotations

import asyncio

import yaml
from edgehub.simnode import SimNode

DEVICE = (
    "apiVersion: edgenode.io/v1\nkind: Device\nmetadata: {name: lamp}\n"
    "spec: {node: ship-9, desired: {power: 'on'}}\n"
)


def test_a_node_pointed_at_the_operator_api_is_told_where_node_links_are(hub):
    token = hub.node_add("a")
    api_port = hub.api.rsplit(":", 1)[1]
    for url in (f"ws://127.0.0.1:{api_port}/v1/connect", f"ws://127.0.0.1:{api_port}"):
        result = asyncio.run(SimNode(url, token, "a").run_once())
        assert result.http_status == 404, result
        assert result.http_body.strip() == (
            f"this is the operator API; node links are at {hub.link}"
        ), result.http_body


def test_edgectl_pointed_at_the_node_link_listener_is_told_where_the_api_is(hub):
    link = "http://" + hub.link.split("//")[1].split("/")[0]
    for args in (("get", "nodes"), ("node", "add", "x")):
        out = hub.ctl("--hub", link, *args)
        assert out.returncode == 1
        assert out.stderr.strip() == (
            f"edgectl: 404: this is the node-link listener; the operator API is at {hub.api}"
        ), out.stderr
    # A node that uses the right port still connects.
    token = hub.node_add("a")

    async def scenario() -> None:
        node = SimNode(hub.link, token, "a")
        task = asyncio.create_task(node.run_once())
        await node.wait_until(lambda: node.revision == 1)
        task.cancel()

    asyncio.run(scenario())


def test_a_device_of_a_missing_node_is_accepted_with_a_warning_until_the_node_exists(hub):
    status, body = hub.apply(DEVICE)
    assert status == 200
    warning = (
        "spec.node: there is no Node ship-9 on this hub yet; the device is served once it "
        "is added (edgectl node add ship-9)"
    )
    assert body["results"][0]["warnings"] == [warning]
    out = hub.ctl("apply", "-f", "-", stdin=DEVICE.replace("'on'", "'off'"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "device/lamp configured"
    assert out.stderr.strip() == f"Warning: device/lamp: {warning}"
    out = hub.ctl("describe", "device", "lamp")
    assert yaml.safe_load(out.stdout)["status"]["warnings"] == [warning]
    _, view = hub.call("GET", "/v1/devices/lamp")
    assert view["status"]["warnings"] == [warning]
    # Once the node exists the warning is gone, from the view and from later applies.
    hub.node_add("ship-9")
    _, view = hub.call("GET", "/v1/devices/lamp")
    assert "warnings" not in view["status"]
    status, body = hub.apply(DEVICE)
    assert "warnings" not in body["results"][0]
    out = hub.ctl("apply", "-f", "-", stdin=DEVICE)
    assert out.stderr == ""
    # A Node and its Device applied together: no warning.
    status, body = hub.apply(
        DEVICE.replace("ship-9", "ship-10").replace("lamp", "fan")
        + "---\napiVersion: edgenode.io/v1\nkind: Node\nmetadata: {name: ship-10}\n"
    )
    assert all("warnings" not in r for r in body["results"]), body
