"""The KubeEdge client and the example mapper against a real Mosquitto, answered by a
stand-in node: the node's TwinService with its KubeEdge front over an in-memory store
(tests/unit/devices/kubeedge_node.py) behind a paho client. These pin the client side;
tests/integration/test_kubeedge_node.py runs the same against a real node daemon."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from mqtt_broker import Broker, free_port
from paho.mqtt.enums import CallbackAPIVersion

from edgenode.devices import kubeedge as ke
from edgenode.devices.kubeedge.client import KubeEdgeDeviceClient
from edgenode.devtwin import DeviceTwin
from unit.devices.kubeedge_node import KubeEdgeNode

pytestmark = pytest.mark.timeout(60)

THERMO = ke.DeviceId("default", "thermo")
NODE = "pi-1"


class StandInNode:
    """Answers KubeEdge requests on the broker with the sans-I/O API."""

    def __init__(self, port: int) -> None:
        self.node = KubeEdgeNode(DeviceTwin, {"thermo": None}, node=NODE)
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="stand-in-node")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(5), "stand-in node not subscribed"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        client.subscribe([(topic, 1) for topic in ke.subscriptions(NODE)])

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            replies = self.node.handle(message.topic, message.payload, time.time())
        for reply in replies:
            client.publish(reply.topic, reply.payload, reply.qos, reply.retain)

    def set_desired(self, desired: dict[str, Any]) -> None:
        with self.lock:
            messages = self.node.set_desired("thermo", desired, time.time())
        for message in messages:
            self.client.publish(message.topic, message.payload, message.qos)

    def view(self) -> dict[str, Any]:
        with self.lock:
            return self.node.view("thermo", time.time())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path) -> Iterator[Broker]:
    started = Broker(tmp_path, free_port())
    started.start()
    yield started
    started.stop()


@pytest.fixture
def stand_in(broker) -> Iterator[StandInNode]:
    node = StandInNode(broker.port)
    yield node
    node.close()


@pytest.fixture
def device(broker, stand_in) -> Iterator[KubeEdgeDeviceClient]:
    with KubeEdgeDeviceClient("127.0.0.1", broker.port, THERMO, node=NODE) as client:
        yield client


def test_update_get_delta_and_errors_over_mqtt(device, stand_in):
    result = device.update({"temperature": ("21.5", "float")})
    assert result["twin"]["temperature"]["actual"]["value"] == "21.5"
    assert stand_in.view()["reported"] == {"temperature": 21.5}
    assert device.wait_document()["twin"]["temperature"]["last"] is None

    stand_in.set_desired({"target": 23})
    delta = device.wait_delta()
    assert delta["delta"] == {"target": "23"}

    twin = device.get()["twin"]
    assert twin["target"]["expected"]["value"] == "23"

    bad = device.request("twin/update", b'{"event_id": "bad-1", not json')
    assert (bad["event_id"], bad["code"]) == ("bad-1", 400)
    typed = device.update({"target": ("warm", "int")})
    assert (typed["code"], typed["reason"]) == (400, "the value is not int or integer")

    assert device.state("online")["device"]["state"] == "online"
    members = device.membership()["devices"]
    assert members[0]["id"] == "default/thermo"


def test_the_example_mapper_clears_the_delta(broker, stand_in):
    stand_in.set_desired({"target": 20.0, "mode": "eco"})
    mapper = subprocess.run(
        [
            sys.executable, "-m", "edgenode.devices.kubeedge.mapper",
            "--broker", f"127.0.0.1:{broker.port}", "--device", "default/thermo",
            "--interval", "0.05", "--rate", "20", "--count", "20",
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert mapper.returncode == 0, mapper.stderr
    events = [json.loads(line) for line in mapper.stdout.splitlines()]
    assert events[0]["event"] == "connected"
    assert events[-1]["event"] == "stopped"
    view = stand_in.view()
    assert view["delta"] == {}
    assert view["reported"]["target"] == 20.0
    assert view["reported"]["mode"] == "eco"
    assert view["reported"]["temperature"] == 20.0
    assert view["state"]["value"] == "offline"  # said so on its way out
