"""A device or mapper that speaks only KubeEdge's topics: a small blocking client on
paho-mqtt (its own network thread), for the example mapper and for integration tests
against a real node and Mosquitto::

    with KubeEdgeDeviceClient("127.0.0.1", 1883, DeviceId("default", "thermo")) as device:
        result = device.update({"temperature": ("21.5", "float")})
        twin = device.get()["twin"]
        delta = device.wait_delta(lambda d: "target" in d["delta"])

Every request carries a fresh ``event_id`` and waits for the result with the same one on
the request's own ``.../result`` topic (where edgenode also sends errors). Deltas,
documents and membership updates are collected as they arrive (bounded).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgenode.devices.kubeedge import topics
from edgenode.devices.kubeedge.topics import DeviceId

QOS: Final = 1
TIMEOUT: Final = 5.0
"""Default bound of every wait, in seconds."""
MAX_KEPT: Final = 256
"""Messages kept per topic while nobody reads them (the oldest go first)."""

Value = str | tuple[str, str]
"""A reported value: the string alone (no type) or ``(value, type)``."""


class KubeEdgeTimeout(TimeoutError):
    """No answer within the wait (the message says what was awaited)."""


def twin_entry(value: Value | None) -> dict[str, Any] | None:
    """A MsgTwin reporting ``value`` as ``actual`` (None: delete the property)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        text, value_type = value
        return {"actual": {"value": text}, "metadata": {"type": value_type}}
    return {"actual": {"value": value}}


class KubeEdgeDeviceClient:
    """One device's (or a mapper's) MQTT connection to the node's broker."""

    def __init__(
        self,
        host: str,
        port: int,
        device: DeviceId,
        *,
        node: str | None = None,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        offline_will: bool = True,
    ) -> None:
        """``node``: also follow that node's membership topics. ``offline_will``: the
        broker publishes ``{"state": "offline"}`` on state/update if the client dies."""
        self.host = host
        self.port = port
        self.device = device
        self.node = node
        self._lock = threading.Condition()
        self._inbox: dict[str, deque[dict[str, Any]]] = {}
        self._pending_subscriptions: set[int] = set()
        self._subscribed = False
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id
            or f"kubeedge-{device.namespace}-{device.name}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if offline_will:
            self._client.will_set(
                self.topic(topics.STATE_UPDATE), json.dumps({"state": "offline"}), QOS
            )
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    # ------------------------------------------------------------ plumbing ----

    def topic(self, suffix: str) -> str:
        return topics.device_topic(self.device, suffix)

    def subscriptions(self) -> list[str]:
        wanted = [
            self.topic(topics.TWIN_UPDATE_RESULT),
            self.topic(topics.TWIN_UPDATE_DELTA),
            self.topic(topics.TWIN_UPDATE_DOCUMENT),
            self.topic(topics.TWIN_GET_RESULT),
            self.topic(topics.STATE_UPDATE_RESULT),
        ]
        if self.node is not None:
            wanted += [
                topics.node_topic(self.node, topics.MEMBERSHIP_GET_RESULT),
                topics.node_topic(self.node, topics.MEMBERSHIP_UPDATED),
            ]
        return wanted

    def connect(self, timeout: float = TIMEOUT) -> None:
        """Connect and subscribe; returns once the broker acknowledged the subscription.
        paho reconnects by itself after a lost connection, and the client subscribes
        again each time (its session is clean)."""
        self._client.on_connect = self._on_connect
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        with self._lock:
            if not self._lock.wait_for(lambda: self._subscribed, timeout):
                self._client.loop_stop()
                raise KubeEdgeTimeout(f"not subscribed at {self.host}:{self.port} in {timeout} s")

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, code: Any, properties: Any
    ) -> None:
        if code.is_failure:
            return
        result, mid = client.subscribe([(topic, QOS) for topic in self.subscriptions()])
        if result == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            with self._lock:
                self._pending_subscriptions.add(mid)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> KubeEdgeDeviceClient:
        self.connect()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, properties: Any
    ) -> None:
        with self._lock:
            if mid in self._pending_subscriptions:
                self._pending_subscriptions.discard(mid)
                self._subscribed = True
            self._lock.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            parsed = json.loads(message.payload)
        except ValueError:
            parsed = {"raw": message.payload.decode("utf-8", "replace")}
        if not isinstance(parsed, dict):
            parsed = {"raw": parsed}
        with self._lock:
            self._inbox.setdefault(message.topic, deque(maxlen=MAX_KEPT)).append(parsed)
            self._lock.notify_all()

    def publish(self, suffix: str, payload: bytes, timeout: float = TIMEOUT) -> None:
        """Publish raw bytes on this device's ``suffix`` (QoS 1, waits for the PUBACK)."""
        info = self._client.publish(self.topic(suffix), payload, QOS)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise KubeEdgeTimeout(f"no PUBACK for {self.topic(suffix)}")

    def wait(
        self,
        topic: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda message: True,
        timeout: float = TIMEOUT,
    ) -> dict[str, Any]:
        """The first unread message on ``topic`` that ``predicate`` accepts (taken)."""

        def take() -> dict[str, Any] | None:
            queue = self._inbox.get(topic)
            for message in list(queue or ()):
                if predicate(message):
                    assert queue is not None
                    queue.remove(message)
                    return message
            return None

        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = take()
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise KubeEdgeTimeout(f"nothing on {topic} within {timeout} s")
                self._lock.wait(left)

    def request(
        self, operation: str, body: Mapping[str, Any] | bytes, timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """Publish on ``operation`` (``twin/update``...) and return its result. A mapping
        gets a fresh event_id (unless it has one) and the result with that event_id is
        returned; raw bytes get the first result that arrives."""
        if isinstance(body, bytes):
            self.publish(operation, body, timeout)
            return self.wait(self.topic(f"{operation}/result"), timeout=timeout)
        message = dict(body)
        message.setdefault("event_id", str(uuid.uuid4()))
        message.setdefault("timestamp", int(time.time() * 1000))
        self.publish(operation, json.dumps(message).encode(), timeout)
        event_id = message["event_id"]
        return self.wait(
            self.topic(f"{operation}/result"),
            lambda result: result.get("event_id") == event_id,
            timeout,
        )

    # ------------------------------------------------------------ requests ----

    def update(
        self, values: Mapping[str, Value | None], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """Report actual values (``"21.5"`` or ``("21.5", "float")``; None deletes)."""
        twin = {key: twin_entry(value) for key, value in values.items()}
        return self.request(topics.TWIN_UPDATE, {"twin": twin}, timeout)

    def get(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        return self.request(topics.TWIN_GET, {}, timeout)

    def state(self, state: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        return self.request(topics.STATE_UPDATE, {"state": state}, timeout)

    def membership(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The node's device list (``node`` must be given)."""
        if self.node is None:
            raise ValueError("membership needs the node's name")
        event_id = str(uuid.uuid4())
        payload = json.dumps({"event_id": event_id, "timestamp": int(time.time() * 1000)})
        info = self._client.publish(
            topics.node_topic(self.node, topics.MEMBERSHIP_GET), payload.encode(), QOS
        )
        info.wait_for_publish(timeout)
        return self.wait(
            topics.node_topic(self.node, topics.MEMBERSHIP_GET_RESULT),
            lambda result: result.get("event_id") == event_id,
            timeout,
        )

    def wait_delta(
        self,
        predicate: Callable[[dict[str, Any]], bool] = lambda message: True,
        timeout: float = TIMEOUT,
    ) -> dict[str, Any]:
        return self.wait(self.topic(topics.TWIN_UPDATE_DELTA), predicate, timeout)

    def wait_document(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        return self.wait(self.topic(topics.TWIN_UPDATE_DOCUMENT), timeout=timeout)

    def drain(self, suffix: str) -> list[dict[str, Any]]:
        """Take every unread message on this device's ``suffix``."""
        with self._lock:
            queue = self._inbox.get(self.topic(suffix))
            if not queue:
                return []
            taken = list(queue)
            queue.clear()
            return taken
