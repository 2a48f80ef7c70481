"""Node status: a psutil snapshot of the machine and the node, sent up as kind "status".

``collect_status`` is called every ``[status] interval`` by the daemon, which appends the
result to the outbox with ``coalesce_key="node-status"``: while the hub is unreachable only
the newest status waits, instead of weeks of them.
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any, Final

import psutil

import edgenode
from edgenode.files import APPS_FILE

STATUS_KIND: Final = "status"
STATUS_COALESCE_KEY: Final = "node-status"
STATUS_PRIORITY: Final = 7
"""Less urgent than device data (default 5): status is replaced by the next one anyway."""
MAX_TEMPERATURE_SENSORS: Final = 16
MAX_APPS_FILE_BYTES: Final = 4 * 1024 * 1024


def _temperatures() -> dict[str, float]:
    """Current temperature of each sensor the platform has, in °C (may be empty)."""
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return {}
    try:
        sensors = reader()
    except (OSError, RuntimeError):
        return {}
    found: dict[str, float] = {}
    for chip, entries in sensors.items():
        for index, entry in enumerate(entries):
            if len(found) >= MAX_TEMPERATURE_SENSORS:
                return found
            label = entry.label or str(index)
            found[f"{chip}/{label}"] = round(float(entry.current), 1)
    return found


def collect_status(
    data_dir: str, outbox: dict[str, Any], started: float, connected: bool
) -> dict[str, Any]:
    """The status body: CPU, memory, disk of ``data_dir``, load, uptime, temperatures,
    outbox figures, software version, backend and architecture."""
    memory = psutil.virtual_memory()
    try:
        disk = psutil.disk_usage(data_dir)
        disk_info: dict[str, Any] = {"total": disk.total, "used": disk.used, "free": disk.free}
    except OSError:
        disk_info = {}
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        load = []
    process = psutil.Process()
    return {
        "version": edgenode.__version__,
        "backend": edgenode.backend,
        "arch": platform.machine(),
        "python": platform.python_version(),
        # cpu_percent(None) compares with the previous call: the first sample is 0.0.
        "cpu_percent": psutil.cpu_percent(interval=None),
        "cpu_count": psutil.cpu_count() or 0,
        "memory": {"total": memory.total, "available": memory.available},
        "rss": process.memory_info().rss,
        "disk": disk_info,
        "load": load,
        "uptime": round(time.time() - psutil.boot_time(), 1),
        "process_uptime": round(time.monotonic() - started, 1),
        "temperatures": _temperatures(),
        "outbox": dict(outbox),
        "hub_connected": connected,
        "apps": _apps(data_dir),
    }


def _apps(data_dir: str) -> dict[str, Any] | None:
    """The App service's summary (``apps.json``): the container engine found at start
    (or why none), the limits mechanism, how many Apps and how many run; None before the
    service ever ran. Each App's own status travels in its ``app-status`` records."""
    try:
        with open(os.path.join(data_dir, APPS_FILE), "rb") as handle:
            summary = json.loads(handle.read(MAX_APPS_FILE_BYTES))
    except (OSError, ValueError):
        return None
    apps = summary.get("apps") if isinstance(summary, dict) else None
    if not isinstance(apps, dict):
        return None
    return {
        "enabled": bool(summary.get("enabled", True)),
        "engine": summary.get("engine"),
        "engine_reason": summary.get("engine_reason", ""),
        "limits": summary.get("limits"),
        "count": len(apps),
        "running": sum(1 for a in apps.values() if isinstance(a, dict) and a.get("pid")),
    }
