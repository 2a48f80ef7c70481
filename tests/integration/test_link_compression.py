"""permessage-deflate on the node link (issue 15: thin links), opt-in on both ends: a node
with ``[hub] compression = true`` gets it from a hub started with ``--compression``, and
runs uncompressed, unharmed, against a hub without it. Real hub and node processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hub.conftest import RunningHub
from integration.fleet import Fleet, eventually

pytestmark = pytest.mark.timeout(90)

CONFIG = """\
apiVersion: edgenode.io/v1
kind: Config
metadata: {{name: tuning}}
spec: {{nodeSelector: {{ship: "{node}"}}, data: {{band: "{band}"}}}}
"""


def synced(hub: RunningHub, node: str, revision: int) -> bool:
    code, body = hub.call("GET", f"/v1/nodes/{node}")
    status = body.get("status") or {} if code == 200 else {}
    return status.get("state") == "Ready" and status.get("revision", -1) >= revision


@pytest.mark.parametrize("hub_grants", [True, False], ids=["granted", "not-granted"])
def test_a_node_that_asks_for_compression_gets_it_only_where_the_hub_grants_it(
    tmp_path: Path, hub_grants: bool
):
    async def scenario() -> None:
        with Fleet(tmp_path) as fleet:
            hub = fleet.hub()
            if hub_grants:
                hub.stop()
                hub.extra.append("--compression")
                hub.start()
            node = fleet.node("ship-a")
            node.configure(
                hub.link,
                hub.node_add("ship-a", {"ship": "ship-a"}),
                hub={"compression": True},
                mqtt={"enabled": False},
            )
            node.start()
            code, body = hub.apply(CONFIG.format(node="ship-a", band="x" * 2000))
            assert code == 200, body
            await eventually(lambda: synced(hub, "ship-a", int(body["revision"])), "in sync")
            config_file = node.data_dir / "config" / "tuning.json"
            await eventually(config_file.exists, "the Config on the node")
            log = node.log()
            assert "connected to hub" in log
            assert ("compressed)" in log) is hub_grants, log

    asyncio.run(scenario())
