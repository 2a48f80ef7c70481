"""Text that reaches an operator's terminal (issue 18): control characters and ANSI escapes
are refused at apply in what operators write (annotations, descriptions, every spec string
that is text), naming the field; what nodes and devices report (which the hub cannot
refuse with a 422) is escaped in ``edgectl get`` tables. Data (Config values, desired
documents) keeps any character."""

from __future__ import annotations

import asyncio
import json

import cbor2
from edgehub.simnode import SimNode

from edgenode.protocol import UplinkRecord

ESC = "\x1b"


def resource(kind: str, spec: str, metadata: str = "{name: x}") -> str:
    return f"apiVersion: edgenode.io/v1\nkind: {kind}\nmetadata: {metadata}\nspec: {spec}\n"


def test_control_characters_in_text_are_refused_at_apply_naming_the_field(hub):
    hub.node_add("n")
    for text, field in [
        (
            resource("Node", "{}", '{name: x, annotations: {note: "\\e[31mred\\e[0m"}}'),
            "metadata.annotations.note",
        ),
        (resource("Node", "{}", '{name: x, annotations: {"k\\e[2J": v}}'), "metadata.annotations"),
        (resource("Node", '{description: "\\e]0;owned\\a"}'), "spec.description"),
        (resource("Device", '{node: n, model: "a\\rb"}'), "spec.model"),
        (resource("Device", '{node: n, description: "x\\u009b31m"}'), "spec.description"),
        (resource("Device", '{node: n, description: "evil\\u202egnp.exe"}'), "spec.description"),
        (resource("Route", '{from: "a/\\e[1m", to: upstream}'), "spec.from"),
        (resource("Route", '{from: "a/#", to: "topic:b/\\x7f"}'), "spec.to"),
        (resource("Config", '{data: {"k\\e": v}}'), "spec.data"),
    ]:
        status, body = hub.apply(text)
        assert status == 422, (text, body)
        assert body["field"] == field, body
        assert "control character" in body["error"], body
    # Tabs and newlines are text; data keeps any character.
    status, body = hub.apply(
        resource("Device", '{node: n, description: "line 1\\nline 2\\tend", desired: {b: "\\e"}}')
        + "---\n"
        + resource("Config", '{data: {pem: "a\\r\\nb", raw: "\\e[0m"}}', "{name: c}")
    )
    assert status == 200, body
    _, config = hub.call("GET", "/v1/configs/c")
    assert config["spec"]["data"] == {"pem": "a\r\nb", "raw": ESC + "[0m"}


def test_what_nodes_and_devices_report_is_escaped_in_tables(hub):
    token = hub.node_add("n")
    hub.apply(resource("Device", "{node: n}", "{name: d}"))
    status = {
        "v": 1,
        "kind": "status",
        "node": "n",
        "ts": 1.5,
        "body": {"arch": "x\u202e", "version": ESC + "]0;owned\x07" + ESC + "[2J"},
    }
    state = {"kind": "device-state", "device": "d", "state": ESC + "[31mon\r\nfire"}

    async def scenario() -> None:
        node = SimNode(hub.link, token, "n")
        task = asyncio.create_task(node.run_once())
        await node.wait_until(lambda: node.revision > 0)
        await node.send_uplink(
            [
                UplinkRecord(1, 5, json.dumps(status).encode()),
                UplinkRecord(2, 5, cbor2.dumps(state)),
            ]
        )
        await node.wait_until(lambda: node.acked_uplink >= {1, 2})
        for command in (("get", "nodes", "-o", "wide"), ("get", "devices", "-o", "wide")):
            out = await asyncio.to_thread(hub.ctl, *command)
            assert out.returncode == 0, out.stderr
            assert ESC not in out.stdout
            assert "\x07" not in out.stdout
            assert "\u202e" not in out.stdout
            assert "\r" not in out.stdout
            assert len(out.stdout.splitlines()) == 2, out.stdout  # header and one row
            if command[1] == "nodes":
                assert "\\e]0;owned\\x07\\e[2J" in out.stdout
                assert "x\\u202e" in out.stdout
            else:
                assert "\\e[31mon\\r\\nfire" in out.stdout
        task.cancel()

    asyncio.run(scenario())
