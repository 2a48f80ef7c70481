"""Simulated devices: real MQTT clients speaking the device API (docs/device-api.md).

The demo (``scripts/demo.sh``) and the end-to-end test start these as separate processes;
a user can run them against any node's broker too::

    python -m edgenode.devices.simulate thermostat --broker 127.0.0.1:1883 --device thermo-1
    python -m edgenode.devices.simulate meter --broker 127.0.0.1:1883 --device meter-1

- **thermostat**: takes ``target_temp`` from its twin delta (retained, so it gets the
  current one on connect), reports it back with an ack of the desired version, then
  reports ``temperature`` drifting toward the target (``--rate`` °C per second, in steps
  of 0.1 °C, reported each time the rounded value changes).
- **meter**: publishes ``{"n": N, "power_w": ..., "energy_wh": ...}`` on
  ``$edge/devices/{d}/telemetry/energy`` every ``--interval`` seconds with QoS 1; ``n``
  counts readings from 0, so a receiver can tell a lost reading from a duplicate.

Both publish ``online`` (retained) on ``$edge/devices/{d}/state`` with an ``offline``
will, log one line per event on stdout, reconnect forever, stop cleanly on SIGTERM or
SIGINT, and, with ``--state-file``, keep a JSON summary of what the broker acknowledged
(atomically rewritten) so a script can compare it with what the hub received.

The device logic (:class:`Thermostat`, :class:`Meter`) is pure; :func:`run` is the MQTT
glue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

TOPIC_ROOT: Final = "$edge/devices"
QOS: Final = 1
MIN_TARGET: Final = 5.0
MAX_TARGET: Final = 35.0
"""The range of ``target_temp`` a thermostat accepts (°C); anything else is refused."""
STEP: Final = 0.1
"""Resolution of the reported temperature (°C)."""
DEFAULT_TEMPERATURE: Final = 19.0
DEFAULT_RATE: Final = 0.5
"""Default drift of the thermostat toward its target, °C per second."""
DEFAULT_INTERVAL: Final = 0.5
"""Default tick of both devices (seconds)."""
BASE_POWER_W: Final = 1200.0
POWER_SWING_W: Final = 150.0
RECONNECT_DELAY: Final = 0.5
MAX_RECONNECT_DELAY: Final = 5.0
KEEPALIVE: Final = 10
OPERATION_TIMEOUT: Final = 10.0


def round_step(value: float) -> float:
    """``value`` on the 0.1 °C grid (no float noise like 20.300000000000001)."""
    return round(round(value / STEP) * STEP, 1)


@dataclass
class Thermostat:
    """A thermostat's state: what it measures and the target it was told."""

    temperature: float = DEFAULT_TEMPERATURE
    target_temp: float | None = None
    rate: float = DEFAULT_RATE
    """°C per second toward the target."""
    applied_version: int = 0
    """The desired version whose ``target_temp`` this thermostat applied last."""
    exact: float = field(init=False)
    """The temperature without rounding (``temperature`` is what it reports)."""

    def __post_init__(self) -> None:
        self.exact = self.temperature
        self.temperature = round_step(self.temperature)

    def apply_delta(
        self, version: int, delta: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Take ``target_temp`` from a delta: the reported patch and the ack to send.

        A delta without ``target_temp`` (keys this thermostat does not know) is acked as
        accepted with nothing applied; a ``target_temp`` that is not a number in
        [MIN_TARGET, MAX_TARGET] is acked as rejected and changes nothing.
        """
        if "target_temp" not in delta:
            return {}, {"version": version, "status": "accepted"}
        value = delta["target_temp"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not MIN_TARGET <= value <= MAX_TARGET
        ):
            reason = f"target_temp must be a number in [{MIN_TARGET:g}, {MAX_TARGET:g}]"
            return {}, {"version": version, "status": "rejected", "reason": reason}
        self.target_temp = float(value)
        self.applied_version = version
        return {"target_temp": value}, {"version": version, "status": "accepted"}

    def step(self, seconds: float) -> bool:
        """Drift toward the target for ``seconds``; True if the reported value changed.

        The drift is kept exact; only the reported ``temperature`` is on the 0.1 °C grid
        (rounding every step would lose the fractions of a slow drift).
        """
        if self.target_temp is None or seconds <= 0:
            return False
        before = self.temperature
        gap = self.target_temp - self.exact
        self.exact += math.copysign(min(abs(gap), self.rate * seconds), gap)
        self.temperature = round_step(self.exact)
        return self.temperature != before

    def reported(self) -> dict[str, Any]:
        """The whole reported document this thermostat stands for."""
        document: dict[str, Any] = {"temperature": self.temperature}
        if self.target_temp is not None:
            document["target_temp"] = self.target_temp
        return document


@dataclass
class Meter:
    """An energy meter: reading ``n`` is the ``n``-th one (from 0)."""

    sent: int = 0
    """Readings acknowledged by the broker: 0 .. sent-1."""
    energy_wh: float = 0.0
    interval: float = DEFAULT_INTERVAL

    def reading(self) -> dict[str, Any]:
        """The next reading (``n == sent``); call :meth:`acknowledged` once it is out."""
        power = BASE_POWER_W + POWER_SWING_W * math.sin(self.sent / 5)
        return {
            "n": self.sent,
            "power_w": round(power, 1),
            "energy_wh": round(self.energy_wh + power * self.interval / 3600, 3),
        }

    def acknowledged(self, reading: Mapping[str, Any]) -> None:
        """The broker acknowledged ``reading``: count it, advance the energy total."""
        self.sent = int(reading["n"]) + 1
        self.energy_wh = float(reading["energy_wh"])


def parse_delta(payload: bytes) -> tuple[int, dict[str, Any]] | None:
    """``(version, delta)`` of a delta message; None for the empty "in sync" one or junk."""
    if not payload:
        return None
    try:
        message = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    version, delta = message.get("version"), message.get("delta")
    if isinstance(version, bool) or not isinstance(version, int) or not isinstance(delta, dict):
        return None
    return version, delta


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST``: port 1883)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, 1883
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def write_state(path: Path | None, state: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``state`` as JSON atomically (readers never see half)."""
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, sort_keys=True) + "\n")
    os.replace(tmp, path)


def say(device: str, text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {device}: {text}", flush=True)


@dataclass
class Settings:
    kind: str
    device: str
    host: str
    port: int
    interval: float = DEFAULT_INTERVAL
    rate: float = DEFAULT_RATE
    temperature: float = DEFAULT_TEMPERATURE
    count: int | None = None
    state_file: Path | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def topic(self, suffix: str) -> str:
        return f"{TOPIC_ROOT}/{self.device}/{suffix}"


async def _thermostat(client: Any, settings: Settings, thermostat: Thermostat) -> None:
    """One connection's life: follow the delta, drift, report."""
    await client.subscribe(settings.topic("twin/delta"), qos=QOS)
    await client.subscribe(settings.topic("twin/update/+"), qos=QOS)

    async def report(patch: dict[str, Any], ack: dict[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"reported": patch}
        if ack is not None:
            body["ack"] = ack
        await client.publish(settings.topic("twin/update"), json.dumps(body), qos=QOS)
        write_state(
            settings.state_file,
            {"reported": thermostat.reported(), "applied_version": thermostat.applied_version},
        )

    async def listen() -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if topic.endswith("/twin/update/rejected"):
                say(settings.device, f"report rejected: {payload.decode(errors='replace')}")
                continue
            if topic.endswith("/twin/update/accepted"):
                continue
            parsed = parse_delta(payload)
            if parsed is None:
                continue
            version, delta = parsed
            patch, ack = thermostat.apply_delta(version, delta)
            verdict = "applying" if ack["status"] == "accepted" else f"refusing ({ack['reason']})"
            say(settings.device, f"delta v{version} {json.dumps(delta, sort_keys=True)}: {verdict}")
            patch.setdefault("temperature", thermostat.temperature)
            await report(patch, ack)
            say(settings.device, f"reported {json.dumps(patch, sort_keys=True)}")

    listener = asyncio.get_running_loop().create_task(listen())
    try:
        await report(thermostat.reported())
        while not settings.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settings.stop.wait(), settings.interval)
            if listener.done():
                listener.result()  # the connection died: raise its error
            if thermostat.step(settings.interval):
                await report({"temperature": thermostat.temperature})
                say(settings.device, f"reported temperature {thermostat.temperature}")
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def _meter(client: Any, settings: Settings, meter: Meter) -> None:
    """One connection's life: a reading every interval until stopped (or ``count``)."""
    topic = settings.topic("telemetry/energy")
    while not settings.stop.is_set():
        if settings.count is not None and meter.sent >= settings.count:
            say(settings.device, f"done: {meter.sent} readings published")
            settings.stop.set()
            return
        reading = meter.reading()
        await client.publish(topic, json.dumps(reading, sort_keys=True), qos=QOS)
        meter.acknowledged(reading)
        write_state(settings.state_file, {"published": meter.sent})
        say(settings.device, f"published {json.dumps(reading, sort_keys=True)}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(settings.stop.wait(), settings.interval)


async def run(settings: Settings) -> None:
    """Connect, run the device, reconnect after a lost connection, until ``stop``."""
    import aiomqtt  # here: the pure logic above imports without the MQTT client

    thermostat = Thermostat(temperature=settings.temperature, rate=settings.rate)
    meter = Meter(interval=settings.interval)
    delay = RECONNECT_DELAY
    state = settings.topic("state")
    while not settings.stop.is_set():
        try:
            async with aiomqtt.Client(
                settings.host,
                settings.port,
                identifier=f"sim-{settings.device}-{os.getpid()}",
                keepalive=KEEPALIVE,
                timeout=OPERATION_TIMEOUT,
                will=aiomqtt.Will(state, b"offline", qos=QOS, retain=True),
            ) as client:
                say(settings.device, f"connected to {settings.host}:{settings.port}")
                delay = RECONNECT_DELAY
                await client.publish(state, b"online", qos=QOS, retain=True)
                if settings.kind == "thermostat":
                    await _thermostat(client, settings, thermostat)
                else:
                    await _meter(client, settings, meter)
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.publish(state, b"offline", qos=QOS, retain=True)
        except aiomqtt.MqttError as exc:
            say(settings.device, f"broker connection lost ({exc}); retrying in {delay:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settings.stop.wait(), delay)
            delay = min(delay * 2, MAX_RECONNECT_DELAY)
    say(settings.device, "stopped")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edgenode.devices.simulate",
        description="a simulated device: a real MQTT client of the device API",
    )
    parser.add_argument("kind", choices=["thermostat", "meter"])
    parser.add_argument("--device", required=True, help="device name (topic level)")
    parser.add_argument(
        "--broker",
        type=parse_broker,
        default=("127.0.0.1", 1883),
        help="HOST:PORT of the node's Mosquitto (default 127.0.0.1:1883)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        help="seconds between ticks (readings, temperature steps)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        help="thermostat: °C per second toward the target",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=DEFAULT_TEMPERATURE,
        help="thermostat: the temperature it starts at",
    )
    parser.add_argument("--count", type=int, help="meter: stop after this many readings")
    parser.add_argument(
        "--state-file", type=Path, help="JSON summary of what the broker acknowledged, kept current"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.interval <= 0 or args.rate <= 0:
        print("simulate: --interval and --rate must be positive", file=sys.stderr)
        return 2
    host, port = args.broker
    settings = Settings(
        kind=args.kind,
        device=args.device,
        host=host,
        port=port,
        interval=args.interval,
        rate=args.rate,
        temperature=args.temperature,
        count=args.count,
        state_file=args.state_file,
    )

    async def main_async() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, settings.stop.set)
        await run(settings)

    asyncio.run(main_async())
    return 0


if __name__ == "__main__":
    sys.exit(main())
