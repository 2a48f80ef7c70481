"""An example KubeEdge mapper: a simulated thermostat that speaks only KubeEdge's topics.

It is what a mapper written for KubeEdge does, so it shows (and integration tests check)
that such a program works unchanged against an edgenode node::

    python -m edgenode.devices.kubeedge.mapper --broker 127.0.0.1:1883 --device default/thermo

- on start: ``state/update`` online (and an offline will), ``twin/get``, then applies
  every expected value it was given;
- on each ``twin/update/delta``: applies the expected values and reports them back as
  actual values of the types the delta named;
- every ``--interval`` seconds: reports ``temperature`` (float) drifting toward
  ``target`` (``--rate`` °C per second, 0.1 °C steps), when the rounded value changes;
- logs one JSON line per event on stdout; stops on SIGTERM or Ctrl-C (state offline),
  or after ``--count`` ticks.

:class:`Thermostat` is the device logic (pure); :func:`run` is the MQTT glue, on
:class:`~edgenode.devices.kubeedge.client.KubeEdgeDeviceClient`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from edgenode.devices.kubeedge.topics import DeviceId

STEP: Final = 0.1
DEFAULT_TEMPERATURE: Final = 19.0
DEFAULT_RATE: Final = 0.5
DEFAULT_INTERVAL: Final = 0.5
TARGET: Final = "target"
TEMPERATURE: Final = "temperature"

Report = dict[str, tuple[str, str]]
"""Property -> (value, type), as a twin/update reports it."""


def _step(value: float) -> float:
    return round(round(value / STEP) * STEP, 1)


@dataclass
class Thermostat:
    """A thermostat's state: what it measures, its target, and the other properties it
    was told to hold (a mapper makes a device match what is expected of it)."""

    temperature: float = DEFAULT_TEMPERATURE
    rate: float = DEFAULT_RATE
    target: float | None = None
    held: Report = field(default_factory=dict)
    exact: float = field(init=False)
    reported_temperature: float | None = None

    def __post_init__(self) -> None:
        self.exact = self.temperature

    def apply(self, twin: Mapping[str, Any], keys: Sequence[str] | None = None) -> Report:
        """Take the expected values of ``twin`` (a KubeEdge twin map; only ``keys`` if
        given) and return what to report back: each applied property as its actual."""
        report: Report = {}
        for key, entry in twin.items():
            if keys is not None and key not in keys:
                continue
            expected = (entry or {}).get("expected") or {}
            text = expected.get("value")
            if not isinstance(text, str):
                continue
            value_type = ((entry or {}).get("metadata") or {}).get("type") or "string"
            if key == TARGET:
                try:
                    self.target = float(text)
                except ValueError:
                    continue  # a thermostat cannot aim at that: not applied
            self.held[key] = (text, value_type)
            report[key] = (text, value_type)
        return report

    def tick(self, seconds: float) -> Report:
        """Drift toward the target; the temperature to report if its 0.1 °C reading moved."""
        if self.target is not None:
            gap = self.target - self.exact
            move = min(abs(gap), self.rate * seconds)
            self.exact += move if gap > 0 else -move
        self.temperature = _step(self.exact)
        if self.temperature == self.reported_temperature:
            return {}
        self.reported_temperature = self.temperature
        return {TEMPERATURE: (repr(self.temperature), "float")}


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"t": round(time.time(), 3), "event": event, **fields}), flush=True)


def run(
    host: str,
    port: int,
    device: DeviceId,
    thermostat: Thermostat,
    interval: float,
    stop: threading.Event,
    count: int | None = None,
) -> int:
    """The MQTT glue; returns an exit status. ``count``: stop after that many ticks."""
    from edgenode.devices.kubeedge.client import KubeEdgeDeviceClient, KubeEdgeTimeout

    client = KubeEdgeDeviceClient(host, port, device)
    client.connect()
    log("connected", device=str(device), broker=f"{host}:{port}")
    reports = 0

    def report(values: Report, why: str) -> None:
        nonlocal reports
        if not values:
            return
        try:
            result = client.update(values)
        except KubeEdgeTimeout as exc:
            log("error", why=why, error=str(exc))
            return
        reports += 1
        if "code" in result:
            log("refused", why=why, code=result["code"], reason=result.get("reason"))
        else:
            log("reported", why=why, values={k: v[0] for k, v in values.items()})

    try:
        twin: dict[str, Any] = {}
        try:
            log("state", result=client.state("online"))
            twin = client.get().get("twin") or {}
            log("twin", twin=twin)
        except KubeEdgeTimeout as exc:  # no node yet: the deltas will come
            log("error", why="start", error=str(exc))
        report(thermostat.apply(twin), "twin/get")
        last = time.monotonic()
        ticks = 0
        while not stop.is_set() and (count is None or ticks < count):
            ticks += 1
            for delta in client.drain("twin/update/delta"):
                wanted = sorted((delta.get("delta") or {}).keys())
                log("delta", delta=delta.get("delta"))
                report(thermostat.apply(delta.get("twin") or {}, wanted), "delta")
            now = time.monotonic()
            report(thermostat.tick(now - last), "tick")
            last = now
            stop.wait(interval)
    finally:
        with contextlib.suppress(KubeEdgeTimeout):
            client.state("offline", timeout=2.0)
        client.close()
        log("stopped", reports=reports)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m edgenode.devices.kubeedge.mapper",
        description="A simulated thermostat speaking KubeEdge's device topics.",
    )
    parser.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT")
    parser.add_argument("--device", default="default/thermo", help="NAMESPACE/NAME")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="°C per second")
    parser.add_argument("--count", type=int, default=None, help="stop after N ticks")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    host, _, port = args.broker.rpartition(":")
    try:
        device = DeviceId.parse(args.device)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return run(
        host or "127.0.0.1",
        int(port),
        device,
        Thermostat(rate=args.rate),
        args.interval,
        stop,
        args.count,
    )


if __name__ == "__main__":
    sys.exit(main())
