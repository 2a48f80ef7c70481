"""What ``edgenode status`` reads without the daemon answering: state files and the store.

The daemon writes ``link-state.json`` in ``data_dir`` atomically (temporary file, fsync,
rename) whenever the link changes state, and ``edgenode.pid`` while it runs. ``read_status``
combines them with a read-only look at ``node.db`` (SQLite opened with ``mode=ro``, so a
status query never writes the daemon's database and works while the daemon runs).
Wall-clock times here are for people to read; nothing decides anything by them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import edgenode
from edgenode.errors import StoreError
from edgenode.files import (
    APPS_FILE,
    CONFIGS_FILE,
    DB_FILE,
    DEVICES_FILE,
    PID_FILE,
    STATE_FILE,
    write_json_atomic,
)

MAX_SHOWN_DEVICES: Final = 20
"""Device names in the text form of ``status`` (``--json`` has the whole list)."""
STATUS_BUSY_TIMEOUT_MS: Final = 2000
MAX_STATE_FILE_BYTES: Final = 64 * 1024
LOW_DISK_FREE_BYTES: Final = 1024 * 1024
"""Below this much free space in data_dir, ``edgenode status`` warns that the disk is full
(the daemon may then be unable to write even its state file)."""

# Link states, as shown by ``edgenode status``.
STANDALONE: Final = "standalone"
CONNECTING: Final = "connecting"
CONNECTED: Final = "connected"
DISCONNECTED: Final = "disconnected"
STOPPED: Final = "stopped"


@dataclass
class LinkState:
    """The cloud link as last recorded by the daemon."""

    state: str = CONNECTING
    since: float = field(default_factory=time.time)
    hub_url: str = ""
    last_error: str = ""
    last_error_at: float = 0.0
    hub_revision: int | None = None
    clock_offset: float | None = None
    """Seconds this node's wall clock was ahead of the hub's at the last welcome."""
    in_doubt: int = 0
    """Stored uplink records in flight when a connection of this daemon ended (their ack
    may have been lost): if the quota or a TTL drops one before it is sent again, it is
    counted dropped though the hub may have it. At most this many such double counts."""
    pid: int = field(default_factory=os.getpid)
    metrics: str = ""
    """The address the metrics endpoint is bound to (empty: disabled)."""
    backend: str = field(default_factory=lambda: edgenode.backend)
    version: str = field(default_factory=lambda: edgenode.__version__)
    """The daemon's backend and version (``status`` may run with other ones)."""


def write_link_state(data_dir: Path, state: LinkState) -> None:
    write_json_atomic(data_dir / STATE_FILE, asdict(state))


def read_link_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        with open(data_dir / STATE_FILE, "rb") as handle:
            raw = handle.read(MAX_STATE_FILE_BYTES)
        data = json.loads(raw)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_pid_file(data_dir: Path) -> None:
    write_json_atomic(data_dir / PID_FILE, {"pid": os.getpid(), "started": time.time()})


def remove_pid_file(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / PID_FILE).unlink()


def daemon_pid(data_dir: Path) -> int | None:
    """The pid of a running daemon of this data_dir, or None (no pid file, or it is dead)."""
    try:
        data = json.loads((data_dir / PID_FILE).read_bytes()[:MAX_STATE_FILE_BYTES])
        pid = int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid <= 0 or not _alive(pid):
        return None
    return pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    # A stale pid file whose pid was reused: on Linux, check it is an edgenode process.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    # A zombie (killed, not yet reaped) has an empty command line: not running.
    return b"edgenode" in cmdline


def drops_by_priority(rows: Sequence[tuple[int, int, int]]) -> dict[str, dict[str, int]]:
    """``Store.drop_counts()`` rows as status shows them: ``{"9": {"expired": 0,
    "quota": 2}}`` (priorities with drops only; keys are strings, as in JSON)."""
    return {str(p): {"expired": e, "quota": q} for p, e, q in rows}


def store_summary(db_path: Path) -> dict[str, Any]:
    """Applied revision, resources, twins and outbox figures, read without writing.

    ``StoreError`` when the file is missing or not a readable edgenode store.
    """
    # Imported here: the daemon (which imports this module for the state file) uses the
    # Rust store and should not carry the sqlite3 module and library in memory.
    import sqlite3

    if not db_path.exists():
        raise StoreError(f"{db_path}: no store yet (the daemon creates it on first start)")
    uri = f"file:{db_path}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=STATUS_BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise StoreError(f"{db_path}: cannot open: {exc}") from None
    try:
        meta = db.execute(
            "SELECT applied_revision, next_seq, outbox_bytes, dropped_expired, dropped_quota, "
            "rejected, coalesced, clock FROM meta"
        ).fetchone()
        resources = db.execute(
            "SELECT key, revision FROM resources WHERE data IS NOT NULL ORDER BY key"
        ).fetchall()
        twins = db.execute(  # '@' keys are the node's own records (App rollouts)
            "SELECT count(*) FROM twins WHERE device NOT LIKE '@%'"
        ).fetchone()[0]
        count, oldest = db.execute("SELECT count(*), min(created) FROM outbox").fetchone()
        try:
            drops = db.execute(
                "SELECT priority, expired, quota FROM drops ORDER BY priority"
            ).fetchall()
        except sqlite3.OperationalError:  # schema version 2: the daemon has not migrated it
            drops = []
    except sqlite3.Error as exc:
        raise StoreError(f"{db_path}: not a readable edgenode store: {exc}") from None
    finally:
        db.close()
    if meta is None:
        raise StoreError(f"{db_path}: not a readable edgenode store: no meta row")
    applied, next_seq, outbox_bytes, expired, quota, rejected, coalesced, clock = meta
    return {
        "applied_revision": applied,
        "resources": [{"key": key, "revision": rev} for key, rev in resources],
        "devices": twins,
        "outbox": {
            "messages": count,
            "bytes": outbox_bytes,
            # Store-clock seconds as of the last write: a lower bound while the daemon runs.
            "oldest_age": max(0.0, clock - oldest) if oldest is not None else 0.0,
            "next_seq": next_seq,
            "dropped_expired": expired,
            "dropped_quota": quota,
            "rejected": rejected,
            "coalesced": coalesced,
            "dropped_by_priority": drops_by_priority(drops),
        },
    }


def read_status(
    data_dir: Path, node_name: str, hub_url: str, mqtt_enabled: bool = True
) -> dict[str, Any]:
    """Everything ``edgenode status`` shows; ``store_error`` is set if the store is unreadable.
    With ``mqtt_enabled`` false (``[mqtt] enabled = false``) the device layer never runs:
    what an earlier run recorded about the broker is not shown."""
    pid = daemon_pid(data_dir)
    link = read_link_state(data_dir) or {}
    state = link.get("state", STANDALONE if not hub_url else DISCONNECTED)
    if pid is None and state != STANDALONE:
        # The daemon is not running: whatever it last wrote is history.
        state = STOPPED if link else DISCONNECTED
    status: dict[str, Any] = {
        "node": node_name,
        "data_dir": str(data_dir),
        "daemon": {"running": pid is not None, "pid": pid},
        "hub": {
            "url": hub_url,
            "state": state if hub_url else STANDALONE,
            "since": link.get("since"),
            "last_error": link.get("last_error", ""),
            "last_error_at": link.get("last_error_at"),
            "hub_revision": link.get("hub_revision"),
            "uplink_in_doubt": link.get("in_doubt", 0),
        },
        # The daemon's, as it recorded them; this process's when it never ran.
        "backend": link.get("backend", edgenode.backend),
        "version": link.get("version", edgenode.__version__),
    }
    try:
        usage = shutil.disk_usage(data_dir)
        status["disk"] = {"total": usage.total, "free": usage.free}
    except OSError:
        status["disk"] = None
    try:
        status.update(store_summary(data_dir / DB_FILE))
    except StoreError as exc:
        status["store_error"] = str(exc)
    status["mqtt_enabled"] = mqtt_enabled
    status["device_layer"] = _device_layer(data_dir, pid) if mqtt_enabled else None
    status["configs"] = _configs(data_dir)
    status["apps"] = _apps(data_dir, pid)
    return status


def _apps(data_dir: Path, pid: int | None) -> dict[str, Any] | None:
    """The Apps as the App service last recorded them (``apps.json``): each App's phase,
    readiness, restarts, revision and reason; the container engine; the limits mechanism.
    None if the service never ran. ``stale``: the daemon that wrote it is not running."""
    try:
        with open(data_dir / APPS_FILE, "rb") as handle:
            value = json.loads(handle.read(MAX_STATE_FILE_BYTES * 16))
    except (OSError, ValueError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("apps"), dict):
        return None
    value["stale"] = pid is None or value.get("pid") != pid
    return value


def _configs(data_dir: Path) -> dict[str, Any]:
    """The Configs the node applied, as the Config service last recorded them
    (``configs.json``): name → generation, source (hub or local) and number of keys."""
    try:
        value = json.loads((data_dir / CONFIGS_FILE).read_bytes()[: MAX_STATE_FILE_BYTES * 16])
    except (OSError, ValueError):
        return {}
    configs = value.get("configs") if isinstance(value, dict) else None
    return configs if isinstance(configs, dict) else {}


def _device_layer(data_dir: Path, pid: int | None) -> dict[str, Any] | None:
    """The device layer as the daemon last recorded it (``devices.json``); None if it
    never ran. The broker counts as disconnected unless the running daemon wrote it."""
    try:
        value = json.loads((data_dir / DEVICES_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(value, dict):
        return None
    if pid is None or value.get("pid") != pid:
        value["broker_connected"] = False
    return value


def _when(stamp: Any) -> str:
    if not isinstance(stamp, int | float) or not stamp:
        return "-"
    text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
    return f"{text} ({max(0, int(time.time() - stamp))} s ago)"


def _served(layer: dict[str, Any] | None) -> str:
    if not layer:
        return "; device layer not running"
    names = layer.get("devices") or []
    count = layer.get("device_count", len(names))
    shown = ", ".join(str(n) for n in names[:MAX_SHOWN_DEVICES])
    if count > MAX_SHOWN_DEVICES:
        shown += f", ... ({count - MAX_SHOWN_DEVICES} more)"
    broker = "connected" if layer.get("broker_connected") else "not connected"
    text = f"; {count} served ({shown or 'none'}), broker {layer.get('broker')} {broker}"
    dropped = layer.get("broker_dropped") or 0
    if dropped:
        text += f"; THE BROKER DROPPED {dropped} messages (queue limits too small)"
    return text


def _configs_text(configs: dict[str, Any]) -> str:
    """``tuning@2, local (local)``: each Config with its generation (or where from)."""
    if not configs:
        return "none"
    shown = []
    for name, entry in sorted(configs.items())[:MAX_SHOWN_DEVICES]:
        generation = entry.get("generation") if isinstance(entry, dict) else None
        local = isinstance(entry, dict) and entry.get("source") == "local"
        shown.append(f"{name} (local)" if local else f"{name}@{generation}")
    if len(configs) > MAX_SHOWN_DEVICES:
        shown.append(f"... ({len(configs) - MAX_SHOWN_DEVICES} more)")
    return ", ".join(shown)


def _apps_text(apps: dict[str, Any] | None) -> list[str]:
    """``apps:      2 (sampler Running ready, web CrashLoopBackOff: Error, 4 restarts)``
    (a staged App that rolled back: ``, rolled back from revision 3``)
    and a line on the container engine."""
    if apps is None:
        return []
    entries = apps.get("apps") or {}
    shown = []
    for name, app in sorted(entries.items())[:MAX_SHOWN_DEVICES]:
        if not isinstance(app, dict):
            continue
        text = f"{name} {app.get('phase')}"
        if app.get("ready"):
            text += " ready"
        if app.get("reason"):
            text += f": {app.get('reason')}"
        if app.get("restarts"):
            text += f", {app.get('restarts')} restarts"
        if app.get("rolledBack"):
            text += f", rolled back from revision {app.get('failedRevision')}"
        shown.append(text)
    if len(entries) > MAX_SHOWN_DEVICES:
        shown.append(f"... ({len(entries) - MAX_SHOWN_DEVICES} more)")
    line = f"apps:      {len(entries)}" + (f" ({', '.join(shown)})" if shown else "")
    if not apps.get("enabled", True):
        line += "; disabled ([apps] enabled = false)"
    if apps.get("stale") and entries:
        line += "; as last recorded (the daemon is not running)"
    engine = apps.get("engine") or f"none ({apps.get('engine_reason') or 'not looked for'})"
    limits = apps.get("limits") or "-"
    return [line, f"           limits by {limits}; container engine: {engine}"]


def format_status(status: dict[str, Any]) -> str:
    """The human-readable form of ``read_status``'s result."""
    daemon = status["daemon"]
    hub = status["hub"]
    lines = [
        f"node:      {status['node']}  (edgenode {status['version']}, backend {status['backend']})",
        "daemon:    " + (f"running, pid {daemon['pid']}" if daemon["running"] else "not running"),
    ]
    if hub["state"] == STANDALONE:
        lines.append("hub:       standalone (no [hub] url)")
    else:
        lines.append(f"hub:       {hub['state']} since {_when(hub['since'])}  {hub['url']}")
        if hub["last_error"]:
            lines.append(f"last error: {hub['last_error']} at {_when(hub['last_error_at'])}")
    disk = status.get("disk")
    if disk is not None and disk["free"] < LOW_DISK_FREE_BYTES:
        lines.append(f"disk:      FULL: {disk['free']} bytes free in {status['data_dir']}")
    if "store_error" in status:
        lines.append(f"store:     ERROR {status['store_error']}")
        return "\n".join(lines)
    outbox = status["outbox"]
    lines += [
        f"revision:  {status['applied_revision']} applied"
        + (f" (hub at {hub['hub_revision']})" if hub.get("hub_revision") is not None else ""),
        f"resources: {len(status['resources'])}",
        *(f"  {r['key']} @{r['revision']}" for r in status["resources"][:50]),
        *(
            [f"  ... and {len(status['resources']) - 50} more (--json lists all)"]
            if len(status["resources"]) > 50
            else []
        ),
        f"devices:   {status['devices']} twins in the store"
        + (
            _served(status.get("device_layer"))
            if status.get("mqtt_enabled", True)
            else "; device layer off ([mqtt] enabled = false)"
        ),
        "configs:   " + _configs_text(status.get("configs") or {}),
        *_apps_text(status.get("apps")),
        f"outbox:    {outbox['messages']} messages, {outbox['bytes']} bytes, oldest "
        f"{outbox['oldest_age']:.0f} s, dropped {outbox['dropped_expired']} expired + "
        f"{outbox['dropped_quota']} over quota, {outbox['rejected']} rejected"
        + _by_priority_text(outbox.get("dropped_by_priority") or {}),
    ]
    return "\n".join(lines)


def _by_priority_text(drops: dict[str, dict[str, int]]) -> str:
    """``; by priority: 9: 2 over quota, 5: 1 expired``, least urgent first (empty
    when nothing was dropped)."""
    parts = []
    for priority in sorted(drops, key=int, reverse=True):
        counts = drops[priority]
        words = [f"{counts[k]} {w}" for k, w in (("expired", "expired"), ("quota", "over quota"))]
        parts.append(f"{priority}: " + " + ".join(w for w in words if not w.startswith("0 ")))
    return "; by priority " + ", ".join(parts) if parts else ""
