"""Fixtures of the device-layer tests: real Mosquitto brokers on free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mqtt_broker import Broker, free_port


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """``make(users=..., acl=..., tls=...)``: a started broker, stopped after the test."""
    started: list[Broker] = []

    def make(users: dict[str, str] | None = None, acl: str = "", tls: bool = False) -> Broker:
        directory = tmp_path / f"broker{len(started)}"
        directory.mkdir()
        broker = Broker(directory, free_port(), users or {}, acl, free_port() if tls else None)
        started.append(broker)
        broker.start()
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    return broker_factory()
