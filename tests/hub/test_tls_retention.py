"""TLS on both listeners (a throwaway CA made with ``cryptography``) and telemetry
retention by bytes."""

from __future__ import annotations

import asyncio
import json
import ssl
import time

from edgehub.simnode import SimNode

from edgenode.protocol import UplinkRecord
from hub.tls_certs import make_ca_and_server_cert


def test_tls_protects_node_links_and_the_api(hub_factory, tmp_path):
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    hub = hub_factory("--tls-cert", str(cert), "--tls-key", str(key))
    assert hub.link.startswith("wss://")
    assert hub.api.startswith("https://")
    hub.ssl_context = ssl.create_default_context(cafile=str(ca))
    token = hub.node_add("a")

    async def join() -> int:
        node = SimNode(hub.link, token, "a", ssl_context=ssl.create_default_context(cafile=str(ca)))
        task = asyncio.create_task(node.run_once())
        await node.wait_until(lambda: node.revision == 1)
        task.cancel()
        untrusting = SimNode(hub.link, token, "a", ssl_context=ssl.create_default_context())
        try:
            await untrusting.run_once()
        except ssl.SSLCertVerificationError:
            return node.revision
        raise AssertionError("a client without the CA must not connect")

    assert asyncio.run(join()) == 1
    assert hub.ctl("--help").returncode == 0


def test_telemetry_is_kept_within_the_byte_budget_oldest_dropped_first(hub_factory):
    hub = hub_factory("--telemetry-max-bytes", "2000", "--housekeeping", "0.1")
    token = hub.node_add("a")
    hub.apply("apiVersion: edgenode.io/v1\nkind: Device\nmetadata: {name: d}\nspec: {node: a}\n")

    async def send() -> None:
        node = SimNode(hub.link, token, "a")
        task = asyncio.create_task(node.run_once())
        await node.wait_until(lambda: node.revision == 2)
        for seq in range(1, 41):
            body = {"kind": "telemetry", "device": "d", "data": {"n": seq, "pad": "x" * 80}}
            await node.send_uplink([UplinkRecord(seq, 5, json.dumps(body).encode())])
        await node.wait_until(lambda: len(node.acked_uplink) == 40)
        task.cancel()

    asyncio.run(send())
    deadline = time.monotonic() + 5
    while True:
        _, body = hub.call("GET", "/v1/devices/d/telemetry?limit=1000")
        if len(body["items"]) < 40 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    numbers = [item["record"]["data"]["n"] for item in body["items"]]
    assert 0 < len(numbers) < 40
    assert numbers == list(range(41 - len(numbers), 41))  # the newest are kept
    _, metrics = hub.call("GET", "/metrics")
    assert "edgehub_telemetry_dropped_total" in metrics
