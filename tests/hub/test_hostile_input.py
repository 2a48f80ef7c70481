"""Hostile input at a real ``edgehub serve``'s operator API (issue 18): nesting, huge
integers, out-of-range query parameters, values JSON cannot carry, undecodable headers.
Each is a 4xx naming the problem; none writes a traceback to the hub's log, and the hub
keeps serving (a node connected meanwhile still gets later changes)."""

from __future__ import annotations

import asyncio
import json
import socket

from edgehub.limits import MAX_DEPTH, MAX_INTEGER_DIGITS
from edgehub.ratelog import LOG_BURST
from edgehub.simnode import SimNode

DEVICE = (
    "apiVersion: edgenode.io/v1\nkind: Device\nmetadata: {name: d}\n"
    "spec: {node: n, desired: {power: 'on'}}\n"
)


def nested_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def hub_log(hub) -> str:
    return (hub.data / "hub.log").read_text()


def assert_no_traceback_and_no_5xx(hub) -> None:
    log = hub_log(hub)
    assert "Traceback" not in log, log[-3000:]
    _, metrics = hub.call("GET", "/metrics", token="")
    assert 'edgehub_api_errors_total{status="500"}' not in metrics


def test_deep_nesting_is_a_4xx_naming_the_limit_everywhere(hub):
    hub.node_add("n")
    hub.apply(DEVICE)
    deep_doc = (
        b"apiVersion: edgenode.io/v1\nkind: Device\nmetadata: {name: e}\n"
        b"spec: {node: n, desired: " + nested_json(1000) + b"}\n"
    )
    cases = [
        ("POST", "/v1/apply", b"[" * 1000 + b"]" * 1000, "application/yaml"),
        ("POST", "/v1/apply", nested_json(1000), "application/json"),
        ("POST", "/v1/apply", b"a:\n" + b"".join(b" " * i + b"-\n" for i in range(1, 400)), ""),
        ("POST", "/v1/apply", deep_doc, "application/yaml"),
        ("POST", "/v1/apply", b"[" * 200_000 + b"]" * 200_000, "application/yaml"),
        ("PATCH", "/v1/devices/d/desired", nested_json(1000), "application/json"),
        ("PATCH", "/v1/devices/d/desired", b"[" * 100_000 + b"]" * 100_000, "application/json"),
        ("POST", "/v1/nodes/m/token", nested_json(1000), "application/json"),
    ]
    for method, path, raw, content_type in cases:
        status, body = hub.call(method, path, raw=raw, content_type=content_type or "text/plain")
        assert 400 <= status < 500, (path, raw[:60], status, body)
        assert f"deeper than {MAX_DEPTH}" in body["error"], body
    # Within the bound, nesting is refused only by the twin engine's own depth limit.
    status, body = hub.call("PATCH", "/v1/devices/d/desired", raw=nested_json(MAX_DEPTH - 2))
    assert status == 422
    assert body["field"] == "spec.desired"
    assert_no_traceback_and_no_5xx(hub)


def test_huge_integers_are_refused_before_python_converts_them(hub):
    hub.node_add("n")
    hub.apply(DEVICE)
    huge = "1" * 100_000
    for text in [
        f"x: {huge}",
        DEVICE.replace("power: 'on'", f"level: {huge}"),
        DEVICE.replace("power: 'on'", "level: 0x" + "f" * 100_000),
        DEVICE.replace("power: 'on'", "level: " + ":".join(["59"] * 100_000)),
        DEVICE.replace("power: 'on'", "level: " + "1" * (MAX_INTEGER_DIGITS + 1)),
    ]:
        status, body = hub.apply(text)
        assert status == 422, body
        assert "integer" in body["error"], body
        assert f"at most {MAX_INTEGER_DIGITS}" in body["error"], body
    status, body = hub.call("PATCH", "/v1/devices/d/desired", raw=b'{"a": ' + huge.encode() + b"}")
    assert status == 400
    assert "integer" in body["error"]
    # A large integer within the bound is kept exactly.
    big = int("9" * MAX_INTEGER_DIGITS)
    status, body = hub.call("PATCH", "/v1/devices/d/desired", raw=b'{"big": %d}' % big)
    assert status == 200, body
    assert body["spec"]["desired"]["big"] == big
    assert_no_traceback_and_no_5xx(hub)


def test_query_integers_out_of_range_are_400(hub):
    hub.node_add("n")
    hub.apply(DEVICE)
    for query in [
        "after=9223372036854775808",
        "after=" + "9" * 5000,
        "after=1e3",
        "after=%201",
        "limit=" + "9" * 5000,
        "after=%EF%BC%91",  # a full-width digit: int() would take it
    ]:
        status, body = hub.call("GET", f"/v1/devices/d/telemetry?{query}")
        assert status == 400, (query, body)
        assert "must be an integer in [0, 9223372036854775807]" in body["error"]
    status, body = hub.call("GET", "/v1/devices/d/telemetry?after=-1")
    assert (status, body["error"]) == (400, "after must not be negative")
    assert hub.call("GET", "/v1/devices/d/telemetry?after=9223372036854775807")[0] == 200
    # "At most N" parameters take any size up to the digit bound: more means everything.
    assert hub.call("GET", "/v1/devices/d/telemetry?limit=99999999999999999999")[0] == 200
    assert_no_traceback_and_no_5xx(hub)


def test_values_json_cannot_carry_are_refused_naming_the_field(hub):
    hub.node_add("n")
    hub.apply(DEVICE)
    for raw, fragment in [
        (b'{"a": NaN}', "NaN"),
        (b'{"a": Infinity}', "Infinity"),
        (b'{"a": 1e999}', "finite"),
        (b'{"a": "\\ud800"}', "surrogate"),
        (b'{"\\udfff": 1}', "surrogate"),
    ]:
        status, body = hub.call("PATCH", "/v1/devices/d/desired", raw=raw)
        assert status == 400, (raw, body)
        assert fragment in body["error"], body
    for text, field, fragment in [
        (DEVICE.replace("power: 'on'", "power: .inf"), "spec.desired.power", "finite"),
        (DEVICE.replace("power: 'on'", "when: 2024-01-01"), "spec.desired.when", "date"),
        (DEVICE.replace("power: 'on'", "1: on"), "spec.desired", "keys must be strings"),
        (DEVICE.replace("power: 'on'", "blob: !!binary aGVsbG8="), "spec.desired.blob", "bytes"),
    ]:
        status, body = hub.apply(text)
        assert status == 422, (text, body)
        assert body["field"] == field, body
        assert fragment in body["error"], body
    # A lone surrogate: libyaml refuses the escape itself; PyYAML's pure loader builds it
    # and the hub refuses the value, naming the field.
    status, body = hub.apply(DEVICE.replace("power: 'on'", 'power: "\\ud800"'))
    assert status == 422, body
    assert "surrogate" in body["error"] or "invalid Unicode" in body["error"], body
    assert_no_traceback_and_no_5xx(hub)


def test_a_connected_node_keeps_syncing_after_hostile_applies(hub):
    token = hub.node_add("n")

    async def scenario() -> None:
        node = SimNode(hub.link, token, "n")
        task = asyncio.create_task(node.run_once())
        await node.wait_until(lambda: node.revision == 1)
        for text in (
            # A lone surrogate cannot be encoded (UTF-8, CBOR): stored, it would break
            # the fan-out to the node the resource targets (a Node targets itself).
            "apiVersion: edgenode.io/v1\nkind: Node\nmetadata: {name: n}\n"
            'spec: {description: "\\udc80"}\n',
            DEVICE.replace("power: 'on'", "x: " + "[" * 900 + "]" * 900),
        ):
            status, _ = await asyncio.to_thread(hub.apply, text)
            assert status == 422
        status, _ = await asyncio.to_thread(hub.apply, DEVICE)
        assert status == 200
        await node.wait_until(lambda: "Device/default/d" in node.desired)
        task.cancel()

    asyncio.run(scenario())
    assert_no_traceback_and_no_5xx(hub)


def test_undecodable_headers_and_path_names_are_4xx(hub):
    host, port = hub.api.split("//")[1].rsplit(":", 1)

    def raw_request(request: bytes) -> bytes:
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(request)
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            return data

    answer = raw_request(
        b"GET /v1/nodes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Connection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 401"), answer
    token = hub.token.encode()
    for request_line in [
        b"DELETE /v1/nodes/%ED%A0%80 HTTP/1.1",
        b"POST /v1/nodes/%ED%A0%80/revoke HTTP/1.1",
        b"DELETE /v1/nodes/" + b"a" * 4000 + b" HTTP/1.1",
    ]:
        answer = raw_request(
            request_line
            + b"\r\nHost: x\r\nAuthorization: Bearer "
            + token
            + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 404"), answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert_no_traceback_and_no_5xx(hub)


def test_malformed_http_requests_write_no_traceback_and_their_logging_is_rate_limited(hub):
    host, port = hub.api.split("//")[1].rsplit(":", 1)
    malformed = [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 10_000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHo st: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    ]
    for _ in range(20):
        for request in malformed:
            with socket.create_connection((host, int(port)), timeout=5) as conn:
                conn.sendall(request)
                assert conn.recv(100).startswith(b"HTTP/1.0 400")
    log = hub_log(hub)
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "Error handling request" in line]
    assert 0 < len(lines) <= LOG_BURST, lines
    assert hub.call("GET", "/healthz")[0] == 200


def test_the_kubernetes_api_bounds_its_bodies_too(hub):
    for raw, content_type in [
        (nested_json(5000), "application/json"),
        (
            b'{"apiVersion": "edgenode.io/v1", "kind": "Device", "n": ' + b"1" * 5000 + b"}",
            "application/json",
        ),
        (b"a: " + b"[" * 900 + b"]" * 900, "application/yaml"),
    ]:
        status, body = hub.call(
            "POST", "/apis/edgenode.io/v1/devices", raw=raw, content_type=content_type
        )
        assert 400 <= status < 500, (raw[:40], status, body)
    assert_no_traceback_and_no_5xx(hub)
