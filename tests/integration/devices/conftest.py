"""Fixtures of the device-layer integration tests: a real Mosquitto per test, stopped in
a finalizer (helpers in mqtt_broker.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mqtt_broker import Broker, free_port


@pytest.fixture
def broker_factory(tmp_path) -> Iterator[Any]:
    started: list[Broker] = []

    def make(users: dict[str, str] | None = None, acl: str = "") -> Broker:
        directory = tmp_path / f"broker{len(started)}"
        directory.mkdir()
        broker = Broker(directory, free_port(), users or {}, acl)
        started.append(broker)
        broker.start()
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()
