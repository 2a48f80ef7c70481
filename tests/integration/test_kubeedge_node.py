"""KubeEdge devices and mappers against a real edgenode node (issue 16): a real ``edgehub
serve``, a real Mosquitto, a real ``edgenode run``, and a device written with paho-mqtt
that speaks only KubeEdge's topics (``edgenode.devices.kubeedge.client``).

The site's KubeEdge manifest is applied unchanged with ``edgectl apply``; the device
reads and reports its twin on ``$hw/events/device/line-a/thermo/...``; operators read and
set the same twin with ``edgectl twin get|set line-a_thermo``; a device on edgenode's own
API (``$edge/devices/line-a_thermo/...``) sees the same twin.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import pytest
from node.conftest import NodeProcess
from paho.mqtt.enums import CallbackAPIVersion

from edgenode.devices import kubeedge as ke
from edgenode.devices.kubeedge.client import KubeEdgeDeviceClient, KubeEdgeTimeout
from hub.conftest import RunningHub
from integration.fleet import Fleet

pytestmark = pytest.mark.timeout(180)

T = TypeVar("T")

THERMO = ke.DeviceId("line-a", "thermo")
NODE = "pi-1"
MANIFEST = """
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: thermo
  namespace: line-a
  labels: {description: hall-3-thermostat, site: north}
spec:
  deviceModelRef: {name: thermostat-model}
  nodeName: pi-1
  protocol: {protocolName: modbus, configData: {serialPort: /dev/ttyS0}}
  properties:
  - name: target
    desired: {value: "23", metadata: {type: int}}
    visitors: {protocolName: modbus, configData: {register: HoldingRegister, offset: 2}}
  - name: mode
    desired: {value: eco}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: thermostat-model, namespace: line-a}
spec:
  protocol: modbus
  properties:
  - {name: target, type: INT, accessMode: ReadWrite}
"""


def wait_for(condition: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def ctl(hub: RunningHub, *args: str, stdin: str | None = None) -> str:
    result = hub.ctl(*args, stdin=stdin)
    assert result.returncode == 0, f"edgectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def twin_at_hub(hub: RunningHub, device: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(ctl(hub, "twin", "get", device))
    return parsed


def state_at_hub(hub: RunningHub, device: str) -> str | None:
    status, body = hub.call("GET", f"/v1/devices/{device}")
    assert status == 200, body
    state: str | None = body["status"].get("state")
    return state


def start_node(fleet: Fleet, hub: RunningHub, port: int) -> NodeProcess:
    token = ctl(hub, "node", "add", NODE).splitlines()[-1]
    node = fleet.node(NODE)
    node.configure(hub.link, token, mqtt={"port": port, "keepalive": 5})
    node.start()
    node.wait_state("connected", 20)
    return node


def served(client: KubeEdgeDeviceClient) -> dict[str, Any] | None:
    """The device's twin/get result once the node serves it (None before)."""
    try:
        answer = client.get(timeout=2.0)
    except KubeEdgeTimeout:
        return None
    return None if answer.get("code") == 404 else answer


class EdgenodeApiDevice:
    """A device on edgenode's own API, to check that both APIs share one twin."""

    def __init__(self, port: int, device: str) -> None:
        self.device = device
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"native-{device}")
        self.replies: list[dict[str, Any]] = []
        self.client.on_message = lambda _c, _u, m: self.replies.append(json.loads(m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"$edge/devices/{device}/twin/+/accepted", 1)
        self.client.loop_start()
        time.sleep(0.3)

    def request(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        token = f"t-{time.monotonic_ns()}"
        info = self.client.publish(
            f"$edge/devices/{self.device}/twin/{operation}",
            json.dumps({**body, "clientToken": token}),
            1,
        )
        info.wait_for_publish(5)
        return wait_for(
            lambda: next((r for r in self.replies if r.get("clientToken") == token), None),
            f"the answer to {operation}",
        )

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_a_kubeedge_device_works_unchanged_against_a_node(tmp_path: Path) -> None:
    with Fleet(tmp_path) as fleet:
        hub = fleet.hub()
        broker = fleet.broker("a")
        start_node(fleet, hub, broker.port)

        # The KubeEdge manifest applies unchanged; what edgenode ignores is said.
        out = ctl(hub, "apply", "-f", "-", stdin=MANIFEST)
        assert "device/line-a_thermo created (KubeEdge device line-a/thermo; ignored: " in out
        assert "spec.protocol" in out
        assert "spec.properties[0].visitors" in out
        assert "devicemodel/thermostat-model skipped: a DeviceModel" in out

        with KubeEdgeDeviceClient("127.0.0.1", broker.port, THERMO, node=NODE) as device:
            # get -> the document, desired values as KubeEdge's typed strings.
            twin = wait_for(lambda: served(device), "the node to serve line-a/thermo")["twin"]
            assert twin["target"]["expected"]["value"] == "23"
            assert twin["target"]["metadata"] == {"type": "int"}
            assert twin["mode"]["expected"]["value"] == "eco"

            # update -> result with the same event_id; document; shows at the hub.
            result = device.request(
                "twin/update",
                {
                    "event_id": "upd-1",
                    "twin": {
                        "temperature": {
                            "actual": {"value": "21.5"},
                            "metadata": {"type": "float"},
                        },
                        "target": {"actual": {"value": "23"}},
                    },
                },
            )
            assert result["event_id"] == "upd-1"
            assert "code" not in result
            assert result["twin"]["temperature"]["actual"]["value"] == "21.5"
            document = device.wait_document()
            assert document["event_id"] == "upd-1"
            assert document["twin"]["temperature"]["last"] is None
            assert document["twin"]["temperature"]["current"]["actual"]["value"] == "21.5"
            hub_twin = wait_for(
                lambda: (
                    (t := twin_at_hub(hub, "line-a_thermo"))["reported"].get("temperature") and t
                ),
                "the report at the hub",
            )
            assert hub_twin["reported"]["target"] == 23
            assert hub_twin["delta"] == {"mode": "eco"}

            # edgectl twin set -> a KubeEdge delta.
            ctl(hub, "twin", "set", "line-a_thermo", "target=25")
            delta = device.wait_delta(lambda m: m.get("delta", {}).get("target") == "25")
            assert delta["twin"]["target"]["expected"]["value"] == "25"
            assert delta["twin"]["target"]["actual"]["value"] == "23"

            # A desired value of the wrong type never reaches the device.
            refused = hub.ctl("twin", "set", "line-a_thermo", "target=warm")
            assert refused.returncode != 0
            assert "not a int" in refused.stderr or "not an int" in refused.stderr

            # Invalid types and bad JSON -> error results on the device's own topic.
            typed = device.request(
                "twin/update",
                {"event_id": "bad-type", "twin": {"target": {"actual": {"value": "warm"}}}},
            )
            assert (typed["event_id"], typed["code"]) == ("bad-type", 400)
            assert typed["reason"] == "the value is not int or integer"
            broken = device.request("twin/update", b'{"event_id": "bad-json", not json')
            assert (broken["event_id"], broken["code"]) == ("bad-json", 400)
            empty = device.request("twin/update", b"{}")
            assert empty["code"] == 400

            # state and membership.
            state = device.state("online")
            assert state["device"]["state"] == "online"
            members = device.membership()["devices"]
            assert [m["id"] for m in members] == ["line-a/thermo"]
            wait_for(lambda: state_at_hub(hub, "line-a_thermo") == "online", "the state at the hub")

            # Both APIs on one twin: an edgenode-API report shows to KubeEdge, and back.
            native = EdgenodeApiDevice(broker.port, "line-a_thermo")
            try:
                native.request("update", {"reported": {"mode": "eco"}})
                got = native.request("get", {})
                assert got["reported"]["temperature"] == 21.5
                assert got["desired"]["target"] == 25
                kubeedge_view = device.get()["twin"]
                assert kubeedge_view["mode"]["actual"]["value"] == "eco"
                assert kubeedge_view["target"]["expected"]["value"] == "25"
            finally:
                native.close()
            device.update({"target": ("25", "int")})
            wait_for(lambda: twin_at_hub(hub, "line-a_thermo")["delta"] == {}, "the delta cleared")


def test_kubeedge_names_never_silently_merge(tmp_path: Path) -> None:
    """line-a/thermo and line-b/thermo are two Devices; a native Device holding a mapped
    name, or a second Device claiming a served KubeEdge ID, is refused with 409."""
    with Fleet(tmp_path) as fleet:
        hub = fleet.hub()
        for namespace in ("line-a", "line-b"):
            status, body = hub.apply(
                MANIFEST.split("---")[0].replace("line-a", namespace).replace("pi-1", "n1")
            )
            assert status == 200, body
        names = [item["metadata"]["name"] for item in hub.call("GET", "/v1/devices")[1]["items"]]
        assert sorted(names) == ["line-a_thermo", "line-b_thermo"]

        status, body = hub.apply(
            "apiVersion: edgenode.io/v1\nkind: Device\n"
            "metadata: {name: line-c_pump}\nspec: {node: n1}\n"
        )
        assert status == 200, body
        status, body = hub.apply(
            "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\n"
            "metadata: {name: pump, namespace: line-c}\nspec: {nodeName: n1}\n"
        )
        assert status == 409, body
        assert "device/line-c_pump" in body["error"]

        status, body = hub.apply(
            "apiVersion: edgenode.io/v1\nkind: Device\nmetadata: {name: other}\n"
            "spec: {node: n1, kubeedge: {namespace: line-a, name: thermo}}\n"
        )
        assert status == 409, body
        assert "device/line-a_thermo" in body["error"]
        # On another node the same KubeEdge ID is no clash (each node has its broker).
        status, body = hub.apply(
            "apiVersion: edgenode.io/v1\nkind: Device\nmetadata: {name: other}\n"
            "spec: {node: n2, kubeedge: {namespace: line-a, name: thermo}}\n"
        )
        assert status == 200, body


def test_the_example_mapper_runs_against_a_node(tmp_path: Path) -> None:
    """docs/kubeedge.md's mapper, unchanged, clears the delta of a node's device."""
    with Fleet(tmp_path) as fleet:
        hub = fleet.hub()
        broker = fleet.broker("a")
        start_node(fleet, hub, broker.port)
        ctl(hub, "apply", "-f", "-", stdin=MANIFEST.replace("line-a", "default"))
        with KubeEdgeDeviceClient(
            "127.0.0.1", broker.port, ke.DeviceId("default", "thermo")
        ) as device:
            wait_for(lambda: served(device), "the node to serve default/thermo")
        mapper = subprocess.run(
            [
                sys.executable, "-m", "edgenode.devices.kubeedge.mapper",
                "--broker", f"127.0.0.1:{broker.port}", "--device", "default/thermo",
                "--interval", "0.05", "--rate", "20", "--count", "20",
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert mapper.returncode == 0, mapper.stderr
        twin = wait_for(
            lambda: (t := twin_at_hub(hub, "thermo"))["delta"] == {} and t,
            "the mapper's reports at the hub",
        )
        assert twin["reported"]["target"] == 23
        assert twin["reported"]["mode"] == "eco"
        # The mapper says so on its way out.
        wait_for(lambda: state_at_hub(hub, "thermo") == "offline", "the state at the hub")
