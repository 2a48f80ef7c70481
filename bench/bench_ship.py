"""The ship test (issue 15): a month offline, a thin lossy link, then the checks.

Real processes: a hub (``edgehub serve``) and its operator API on 127.0.0.1; one node
(``edgenode run``) in its own network namespace with its own Mosquitto, simulated
devices (``bench/ship_devices.py``: telemetry of four classes that the node's Routes
send upstream at priorities 0/3/6/9 with no TTL / 10 d / 2 d / 20 d; 500 messages/s
while the full run's days pass, 300 a simulated hour; 600/s in ``--quick``) and an App
(``bench/ship_app.py``, pushed as an artifact: a heartbeat on the node's bus). The
namespace is joined to the host by a veth pair shaped with ``tbf`` at 64 kbit/s each
way; on the host end a userspace TCP proxy (``tests/integration/node/fakehub.py``'s
``Proxy``) adds 300 ms each way (600 ms RTT), stalls, half-open cuts and the outage
itself, and forwards to the hub.

Node time: Debian's libfaketime, preloaded into the unmodified ``edgenode run``, its
offset read from a file the scenario rewrites (the node offers no injected clock at the
process level), once per wall-clock second (``FAKETIME_CACHE``; the scenario writes each
advance just before a second begins). The App does not get it: the node gives an App an
environment of its own (docs/apps.md), without ``LD_PRELOAD``, so the App runs on the
real clock, which the scenario reads its log by. The offset moves the wall clock and the
monotonic clock together, which is how days pass: the store clock (persisted value +
monotonic time since open) and the node's timers see them. It only moves forward while
the node runs, and only while the link is down (sped-up timers would trip every
heartbeat on a live link). The clock jumps of an RTC-less board after a power cut (3
days back, 2 days forward) are offset changes made while the node is down, at its two
SIGKILL restarts: a new process never sees its monotonic clock go back, only its wall
clock differ.

Phases: connected (real time), link down (half-open first, until the node notices; then
refused), 30 simulated days with the operator changing desired state (twins, a Config, a
Route, a new revision of the App) and two SIGKILLs (the first a power cut that kills the
App too, the second the daemon alone), the outbox filling its quota; the link returns
thin and lossy (stalls, one half-open cut) and the node converges. Then the checks,
printed as JSON and written to ``bench/results/ship.json`` (``--out``):

- every desired change applied on the node, in order (the node's applied revision never
  goes back while it catches up; at the end each resource is at the hub's revision, the
  twins hold the last desired values, the Config file the last data);
- every record the devices handed to the bus is delivered at the hub exactly once, or
  dropped by its policy: its TTL passed on the store clock before it could be sent, or
  the quota evicted or refused it (lowest priority first); per class, against the node's
  counters per priority (refusals, counted by the store in total only, inferred);
- the devices published at the rate asked, and the node kept up with them;
- the App ran through the outage, one instance at a time, started again by the node
  after each restart; after the return it runs the new revision and the hub says so;
- the store clock at the return is the 30 days plus the real time the node ran, and the
  node reports its wall clock 29 days ahead of the hub's (from the welcome's hub time);
- time to converge, bytes on the link per delivered record (veth counters: IP bytes both
  ways; and the proxy's payload bytes).

Needs root (network namespaces, tc), Mosquitto and libfaketime. ``--quick`` (``QUICK``)
runs the same month in about 2 minutes, for the ``ship`` pytest marker
(tests/integration/test_ship.py); it writes ``bench/results/ship-quick.json``.
"""

from __future__ import annotations

import argparse
import array
import bisect
import contextlib
import dataclasses
import datetime
import glob
import itertools
import json
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from node.fakehub import Background, Proxy  # noqa: E402

BIN = Path(sys.executable).parent
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
BROKER_SETTINGS = ROOT / "deploy" / "mosquitto" / "edgenode.conf"
DEVICES_SCRIPT = ROOT / "bench" / "ship_devices.py"
APP_SCRIPT = ROOT / "bench" / "ship_app.py"
APP = "ship-app"
APP_RESTART_TIMEOUT = 60.0
"""Real seconds within which a restarted node must have started the App again."""
APP_MAX_GAP = 20.0
"""Real seconds the App's beats may pause while the days pass (a restart of the node)."""
DEFAULT_OUT = ROOT / "bench" / "results" / "ship.json"
DAY = 86400.0
NODE = "ship-1"
DEVICES = 3
MQTT_PORT = 1883
RATE = "64kbit"
ONE_WAY_DELAY = 0.3
HUB_HEARTBEAT = 5.0
POLL = 0.5
FAKETIME_CACHE = "0"
"""``FAKETIME_CACHE_DURATION``: libfaketime reads the offset file again at the process's
first clock reading in each new second of the (real) wall clock. (``FAKETIME_NO_CACHE``,
a read at every clock reading, costs 8.5 us a reading: the node took only ~260 records/s
under it, against ~800/s with this.)"""
STEP_AT = 0.95
"""Clock advances are written at this fraction of a wall-clock second, so the node sees
each one within about 0.05 s (the next second's first reading), not up to a second late;
hence steps of one second."""
FAKETIME_SETTLE = 0.5
"""Real seconds after a clock advance before a SIGKILL or the link's return: the node has
read the new offset (a new wall-clock second began meanwhile) and stored records since."""
STAMP_SLACK = 1.5
"""Seconds a busy node may still stamp records with the offset before the newest."""

# class: (route name, priority, ttl seconds or None)
CLASSES: dict[str, tuple[int, float | None]] = {
    "alarm": (0, None),
    "energy": (3, 10 * DAY),
    "temp": (6, 2 * DAY),
    "bulk": (9, 20 * DAY),
}
CLASS_NAMES = tuple(CLASSES)


@dataclass(frozen=True)
class Profile:
    name: str
    connected_s: float
    """Real seconds connected before the outage."""
    offline_s: float
    """Real seconds the 30 simulated days take."""
    days: float
    step_s: float
    """Real seconds between clock advances."""
    online_rate: float
    """Device messages per second while the link is up (real time)."""
    offline_rate: float
    """... and while it is down (simulated days pass)."""
    max_bytes: int
    """The node's [outbox] max_bytes."""
    kill_days: tuple[float, float]
    stall_every_s: float
    stall_s: float
    converge_timeout_s: float
    compression: bool = False
    """``--compression``: the hub grants permessage-deflate and the node asks for it."""


QUICK = Profile(
    name="quick",
    connected_s=5.0,
    offline_s=36.0,
    days=30.0,
    step_s=1.0,
    online_rate=2.0,
    offline_rate=600.0,
    max_bytes=128 * 1024,
    kill_days=(10.0, 29.0),
    stall_every_s=10.0,
    stall_s=2.0,
    converge_timeout_s=150.0,
)
FULL = Profile(
    name="full",
    connected_s=30.0,
    offline_s=432.0,
    days=30.0,
    step_s=1.0,
    online_rate=2.0,
    offline_rate=500.0,
    max_bytes=192 * 1024,
    kill_days=(10.0, 29.0),
    stall_every_s=20.0,
    stall_s=3.0,
    converge_timeout_s=300.0,
)

# Operator changes while the node is offline: (sim day, action, args)
CHANGES: list[tuple[float, str, tuple[str, ...]]] = [
    (3.0, "twin", ("sensor-1", "setpoint=1")),
    (3.0, "config", ("v1",)),
    (12.0, "twin", ("sensor-1", "setpoint=2")),
    (12.0, "route", ("ship-vibration",)),
    (20.0, "config", ("v2",)),
    (20.0, "twin", ("sensor-2", "setpoint=5")),
    (22.0, "app", ("2",)),
    (27.0, "twin", ("sensor-1", "setpoint=3")),
]
FINAL_DESIRED = {"sensor-1": {"setpoint": 3}, "sensor-2": {"setpoint": 5}, "sensor-3": {}}
FINAL_CONFIG = {"mode": "v2"}


@dataclass
class Published:
    """The devices' log (every message Mosquitto acknowledged), held compactly: a full run
    publishes a few hundred thousand, and the checks go through them in one pass."""

    n: array.array[int] = field(default_factory=lambda: array.array("q"))
    cls: bytearray = field(default_factory=bytearray)
    """Each message's class, an index into ``CLASS_NAMES``."""
    t: array.array[float] = field(default_factory=lambda: array.array("d"))
    """When the devices published it (their CLOCK_MONOTONIC, never faked)."""

    @classmethod
    def read(cls, path: Path) -> Published:
        found = cls()
        index = {name: i for i, name in enumerate(CLASS_NAMES)}
        with path.open(encoding="utf-8") as log:
            for line in log:
                if line.strip():
                    item = json.loads(line)
                    found.n.append(int(item["n"]))
                    found.cls.append(index[item["c"]])
                    found.t.append(float(item["t"]))
        return found

    def items(self) -> Iterator[tuple[int, int, float]]:
        return zip(self.n, self.cls, self.t, strict=True)


class ShipError(Exception):
    """The scenario could not run (set-up failed, a process died)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if check and result.returncode != 0:
        raise ShipError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def faketime_library() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    return found[0] if found else None


def why_not_here() -> str | None:
    """Why the scenario cannot run on this machine (one line), or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs {tool} (iproute2)"
    if not Path(MOSQUITTO).exists():
        return "needs mosquitto"
    if faketime_library() is None:
        return "needs libfaketime (apt-get install faketime)"
    return None


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=self.env,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL (a power cut), reaped."""
        if self.proc is not None:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            self.signal(signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        code = self.proc.returncode
        self.proc = None
        return code

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Net:
    """A network namespace for the node, a veth pair to the host, tbf both ways."""

    tag: str = field(default_factory=lambda: str(os.getpid() % 100000))
    created: bool = False

    @property
    def ns(self) -> str:
        return f"edgeship{self.tag}"

    @property
    def host_if(self) -> str:
        return f"esh{self.tag}h"

    @property
    def node_if(self) -> str:
        return f"esh{self.tag}n"

    @property
    def subnet(self) -> int:
        return 16 + int(self.tag) % 200

    @property
    def host_ip(self) -> str:
        return f"10.213.{self.subnet}.1"

    @property
    def node_ip(self) -> str:
        return f"10.213.{self.subnet}.2"

    def up(self) -> None:
        run("ip", "netns", "add", self.ns)
        self.created = True
        run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.node_if)
        run("ip", "link", "set", self.node_if, "netns", self.ns)
        run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        run("ip", "link", "set", self.host_if, "up")
        run("ip", "-n", self.ns, "addr", "add", f"{self.node_ip}/30", "dev", self.node_if)
        run("ip", "-n", self.ns, "link", "set", self.node_if, "up")
        run("ip", "-n", self.ns, "link", "set", "lo", "up")
        shape = ["root", "tbf", "rate", RATE, "burst", "4kb", "latency", "400ms"]
        run("tc", "qdisc", "add", "dev", self.host_if, *shape)
        run("ip", "netns", "exec", self.ns, "tc", "qdisc", "add", "dev", self.node_if, *shape)

    def down(self) -> None:
        if self.created:
            run("ip", "netns", "del", self.ns, check=False)  # the veth pair goes with it
            run("ip", "link", "del", self.host_if, check=False)
            self.created = False

    def link_bytes(self) -> int:
        """IP bytes through the host end of the veth, both directions."""
        base = Path("/sys/class/net") / self.host_if / "statistics"
        return int((base / "tx_bytes").read_text()) + int((base / "rx_bytes").read_text())

    def tc_drops(self) -> str:
        return run("tc", "-s", "qdisc", "show", "dev", self.host_if, check=False).stdout


@dataclass
class Clock:
    """The node's libfaketime offset, and the store clock the scenario expects.

    ``advance`` moves node time forward (days pass): wall and monotonic alike.
    ``jump`` shifts the wall clock only (done while the node is down).
    ``store_time(t)``: the store-clock seconds a node that started at ``t0`` should show
    at real monotonic time ``t``: real time while the node ran, plus the advances."""

    path: Path
    t0: float = 0.0
    advanced: float = 0.0
    shifted: float = 0.0
    advance_times: list[float] = field(default_factory=list)
    """When each advance was made (monotonic, increasing) ..."""
    advanced_by: list[float] = field(default_factory=list)
    """... and the advances up to and including it (a running sum: ``store_time`` is a
    bisection, not a sum over every step, for each of a few hundred thousand records)."""
    downtimes: list[tuple[float, float]] = field(default_factory=list)
    offsets: list[tuple[float, int]] = field(default_factory=list)
    """(monotonic time, whole offset written): to read the node's wall-clock stamps."""
    wall_minus_mono: float = field(default_factory=lambda: time.time() - time.monotonic())

    def write(self) -> None:
        offset = int(self.advanced + self.shifted)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{offset:+d}\n")
        os.replace(tmp, self.path)
        self.offsets.append((time.monotonic(), offset))

    def node_wall_to_mono(self, wall: float) -> float | None:
        """The real monotonic time at which the node's (faked) wall clock read ``wall``:
        the offset in force then is the one whose period holds the answer (offsets move
        by hours, so only one fits; a busy node may use one up to STAMP_SLACK late)."""
        for i, (since, offset) in enumerate(self.offsets):
            until = self.offsets[i + 1][0] if i + 1 < len(self.offsets) else float("inf")
            mono = wall - offset - self.wall_minus_mono
            if since - 0.5 <= mono <= until + STAMP_SLACK:
                return mono
        return None

    def advance(self, seconds: float) -> None:
        self.advanced += seconds
        self.advance_times.append(time.monotonic())
        self.advanced_by.append(self.advanced)
        self.write()

    def jump(self, seconds: float) -> None:
        self.shifted += seconds
        self.write()

    def store_time(self, t: float) -> float:
        down = sum(max(0.0, min(b, t) - a) for a, b in self.downtimes)
        made = bisect.bisect_right(self.advance_times, t)
        ahead = self.advanced_by[made - 1] if made else 0.0
        return (t - self.t0) - down + ahead


class Ship:
    def __init__(self, profile: Profile, work: Path) -> None:
        self.p = profile
        self.work = work
        self.net = Net()
        self.background = Background()
        self.hub_port = free_port()
        self.api_port = free_port()
        self.children: dict[str, Child] = {}
        self.proxy: Proxy | None = None
        self.clock = Clock(work / "faketime.offset")
        self.rate_file = work / "rate"
        self.published_log = work / "published.jsonl"
        self.token = ""
        self.events: list[dict[str, Any]] = []
        self.revisions_seen: list[int] = []
        self.started = time.monotonic()
        self.load_at_start = [round(x, 2) for x in os.getloadavg()]
        self.offline_window = (0.0, 0.0)
        """Real (monotonic) seconds from the devices' offline rate to its end."""
        self.app_log = work / "app.jsonl"
        self.app_revisions: dict[str, int] = {}
        """The App's revision at the hub per version of its program."""
        self.kills: list[dict[str, Any]] = []
        self.in_doubt_before = 0
        """``in_doubt`` of the daemons killed so far (each starts from 0)."""
        self.node_took_offline = 0
        self.app_preloaded: bool | None = None
        """Whether libfaketime reached the App's environment (the node passes its own
        environment on to Apps only in part: docs/apps.md)."""

    # -- plumbing ---------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"[ship {time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def event(self, what: str, **extra: Any) -> None:
        self.events.append({"t": round(time.monotonic() - self.started, 2), "what": what, **extra})
        self.say(what + (f" {extra}" if extra else ""))

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name, argv, self.work / f"{name}.log", env=env)
        child.start()
        self.children[name] = child
        return child

    def in_ns(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.net.ns, *argv]

    def wait(self, what: str, predicate: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            for child in self.children.values():
                if child.proc is not None and child.proc.poll() is not None:
                    raise ShipError(
                        f"{child.name} exited ({child.proc.returncode}) while waiting for "
                        f"{what}:\n{child.tail()}"
                    )
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise ShipError(f"{what}: not within {timeout:g} s")
            time.sleep(POLL)

    def api(self, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}")
        request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def edgectl(self, *args: str, stdin: str | None = None) -> str:
        env = {
            **os.environ,
            "EDGECTL_HUB": f"http://127.0.0.1:{self.api_port}",
            "EDGECTL_TOKEN": self.token,
        }
        result = subprocess.run(
            [str(BIN / "edgectl"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise ShipError(f"edgectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def apply(self, manifest: str) -> None:
        path = self.work / "manifest.yaml"
        path.write_text(manifest)
        self.edgectl("apply", "-f", str(path))

    def node_in_doubt(self) -> int:
        """Records in flight when a connection of the running daemon ended (its
        link-state.json): each may be counted dropped though the hub has it."""
        with contextlib.suppress(OSError, ValueError, TypeError):
            state = json.loads((self.node_dir / "data" / "link-state.json").read_text())
            return int(state.get("in_doubt", 0))
        return 0

    def node_status(self) -> dict[str, Any]:
        result = subprocess.run(
            [str(BIN / "edgenode"), "status", "--json", "--config", str(self.node_config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        with contextlib.suppress(ValueError):
            value = json.loads(result.stdout)
            if isinstance(value, dict):
                return value
        return {}

    def node_db(self, query: str, *params: Any) -> list[Any]:
        db = sqlite3.connect(f"file:{self.node_dir / 'data' / 'node.db'}?mode=ro", uri=True)
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            return db.execute(query, params).fetchall()
        finally:
            db.close()

    # -- the parts --------------------------------------------------------------------

    @property
    def node_dir(self) -> Path:
        return self.work / "node"

    @property
    def node_config(self) -> Path:
        return self.node_dir / "node.toml"

    def start_hub(self) -> None:
        data = self.work / "hub"
        self.start(
            "hub",
            [
                str(BIN / "edgehub"),
                "serve",
                "--data",
                str(data),
                "--listen",
                f"127.0.0.1:{self.hub_port}",
                "--api-listen",
                f"127.0.0.1:{self.api_port}",
                "--heartbeat",
                str(HUB_HEARTBEAT),
                "--telemetry-max-bytes",
                str(1 << 30),
                "--telemetry-max-age",
                str(int(365 * DAY)),
                *(["--compression"] if self.p.compression else []),
            ],
        )
        token_file = data / "admin.token"
        self.wait("the hub's admin token", token_file.exists, 30)
        self.token = token_file.read_text().strip()

        def api_up() -> bool:
            with contextlib.suppress(OSError, ValueError):
                self.api("/v1/nodes")
                return True
            return False

        self.wait("the hub's operator API", api_up, 30)

    def start_broker(self) -> None:
        directory = self.work / "mqtt"
        directory.mkdir()
        config = directory / "mosquitto.conf"
        config.write_text(
            f"listener {MQTT_PORT} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"log_dest stdout\nuser root\n" + BROKER_SETTINGS.read_text()
        )
        self.start("mosquitto", self.in_ns(MOSQUITTO, "-c", str(config)))

        def listening() -> bool:
            probe = f"import socket; socket.create_connection(('127.0.0.1', {MQTT_PORT}), 1)"
            return run(*self.in_ns(sys.executable, "-c", probe), check=False).returncode == 0

        self.wait("Mosquitto in the node's namespace", listening, 20)

    def write_node_config(self, token: str) -> None:
        self.node_dir.mkdir()
        (self.node_dir / "token").write_text(token + "\n")
        (self.node_dir / "token").chmod(0o600)
        assert self.proxy is not None
        self.node_config.write_text(
            "# the ship test's node (bench/bench_ship.py)\n"
            f'[node]\nname = "{NODE}"\ndata_dir = "data"\n\n'
            f'[hub]\nurl = "ws://{self.net.host_ip}:{self.proxy.port}"\n'
            'token_file = "token"\nhandshake_timeout = 15.0\n'
            "backoff_base = 0.5\nbackoff_cap = 5.0\n"
            f"compression = {'true' if self.p.compression else 'false'}\n\n"
            f'[mqtt]\nhost = "127.0.0.1"\nport = {MQTT_PORT}\n\n'
            f"[outbox]\nmax_bytes = {self.p.max_bytes}\n\n"
            '[metrics]\nlisten = ""\n\n[apps]\ncontainer_runtime = "none"\n'
        )

    def start_node(self) -> None:
        library = faketime_library()
        assert library is not None
        env = {
            **os.environ,
            "LD_PRELOAD": library,
            "FAKETIME_TIMESTAMP_FILE": str(self.clock.path),
            "FAKETIME_CACHE_DURATION": FAKETIME_CACHE,
        }
        argv = self.in_ns(str(BIN / "edgenode"), "run", "--config", str(self.node_config))
        self.start("node", argv, env=env)

    def node_state(self) -> str:
        return str((self.node_status().get("hub") or {}).get("state", ""))

    def hub_node_ready(self) -> bool:
        with contextlib.suppress(OSError, ValueError):
            node = self.api(f"/v1/nodes/{NODE}")
            return bool((node.get("status") or {}).get("state") == "Ready")
        return False

    def set_rate(self, rate: float) -> None:
        self.rate_file.write_text(f"{rate}\n")

    def until_next_step(self) -> float:
        """Seconds to the next STEP_AT of a wall-clock second (``step_s`` is 1 s)."""
        wall = time.time()
        wait = math.floor(wall) + STEP_AT - wall
        return wait if wait > 0.05 else wait + 1.0

    def kill_and_restart(self, wall_jump: float, *, power_cut: bool) -> None:
        """SIGKILL, the wall clock off by ``wall_jump`` at the next start. ``power_cut``:
        the App's instance is SIGKILLed too (nothing of the old boot runs); otherwise it
        is left running, as after a crash of the daemon alone, for the next daemon to stop
        before it starts one instance again."""
        app_pid = self.app_instance()
        self.in_doubt_before += self.node_in_doubt()
        self.children["node"].kill()
        down_from = time.monotonic()
        if power_cut and app_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(app_pid, signal.SIGKILL)  # the App leads its own process group
        self.kills.append({"t": down_from, "power_cut": power_cut, "app_pid": app_pid})
        seq = self.next_seq()
        self.clock.jump(wall_jump)
        time.sleep(1.0)
        self.start_node()
        # Up again once its store took a record: the store clock runs from its opening
        # (time before it is "powered off" time), so no clock advance before that.
        self.wait("the node storing records again", lambda: self.next_seq() > seq, 60)
        self.clock.downtimes.append((down_from, time.monotonic()))
        self.event(
            "node SIGKILLed and restarted",
            wall_jump_days=wall_jump / DAY,
            app=("SIGKILLed too" if power_cut else "left running") + f" (pid {app_pid})",
        )

    def operator_change(self, action: str, args: tuple[str, ...]) -> None:
        if action == "twin":
            self.edgectl("twin", "set", *args)
        elif action == "config":
            self.apply(self.config_manifest(args[0]))
        elif action == "app":
            self.apply_app(args[0])
        elif action == "route":
            self.apply(
                "apiVersion: edgenode.io/v1\nkind: Route\n"
                f"metadata: {{name: {args[0]}}}\nspec:\n  nodeSelector: {{site: ship}}\n"
                '  from: "$edge/devices/+/telemetry/vibration"\n  to: upstream\n'
                "  priority: 2\n"
            )
        self.event("operator change", action=action, args=list(args))

    @staticmethod
    def config_manifest(mode: str) -> str:
        return (
            "apiVersion: edgenode.io/v1\nkind: Config\nmetadata: {name: ship-tuning}\n"
            f"spec:\n  nodeSelector: {{site: ship}}\n  data: {{mode: {mode}}}\n"
        )

    def fleet_manifest(self) -> str:
        docs = [
            "apiVersion: edgenode.io/v1\nkind: Device\n"
            f"metadata: {{name: sensor-{i}}}\nspec:\n  node: {NODE}\n"
            for i in range(1, DEVICES + 1)
        ]
        docs.append(self.config_manifest("v0"))
        for cls, (priority, ttl) in CLASSES.items():
            docs.append(
                "apiVersion: edgenode.io/v1\nkind: Route\n"
                f"metadata: {{name: ship-{cls}}}\nspec:\n  nodeSelector: {{site: ship}}\n"
                f'  from: "$edge/devices/+/telemetry/{cls}"\n  to: upstream\n'
                f"  priority: {priority}\n" + (f"  ttl: {int(ttl)}\n" if ttl else "")
            )
        return "---\n".join(docs)

    # -- the App ----------------------------------------------------------------------

    def apply_app(self, version: str) -> None:
        """The App running version ``version`` of bench/ship_app.py: a new artifact per
        version (so a node fetches the second over the thin link) and a new revision."""
        program = self.work / f"ship_app-v{version}.py"
        text = APP_SCRIPT.read_text().replace('VERSION = "1"', f'VERSION = "{version}"', 1)
        program.write_text(text)
        digest = self.edgectl("artifact", "push", str(program)).strip().splitlines()[-1]
        self.apply(
            "apiVersion: edgenode.io/v1\nkind: App\n"
            f"metadata: {{name: {APP}}}\nspec:\n  nodeSelector: {{site: ship}}\n"
            f'  artifacts: [{{name: ship_app.py, sha256: "{digest}"}}]\n'
            f'  command: ["{sys.executable}", "ship_app.py"]\n'
            f'  env: {{SHIP_APP_LOG: "{self.app_log}"}}\n'
            "  restartPolicy: Always\n"
        )
        annotations = self.api(f"/v1/apps/{APP}")["metadata"].get("annotations") or {}
        self.app_revisions[version] = int(annotations["edgenode.io/revision"])

    def app_lines(self) -> list[dict[str, Any]]:
        """The App's log: its starts and beats, in order."""
        if not self.app_log.exists():
            return []
        lines = self.app_log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip().endswith("}")]

    def app_instance(self) -> int | None:
        """The pid of the App's newest instance, if it runs."""
        starts = [line for line in self.app_lines() if line["e"] == "start"]
        if not starts or not Path(f"/proc/{starts[-1]['pid']}").exists():
            return None
        return int(starts[-1]["pid"])

    def app_applied(self, version: str) -> bool:
        """The node runs ``version`` at its revision, and the hub says so."""
        revision = self.app_revisions.get(version)
        with contextlib.suppress(OSError, ValueError, KeyError):
            report = (self.api(f"/v1/apps/{APP}").get("status") or {}).get("nodes") or {}
            mine = report.get(NODE) or {}
            if mine.get("revision") != revision or mine.get("phase") != "Running":
                return False
            node = ((self.node_status().get("apps") or {}).get("apps") or {}).get(APP) or {}
            if node.get("revision") != revision or node.get("phase") != "Running":
                return False
            starts = [x for x in self.app_lines() if x["e"] == "start"]
            return bool(starts) and starts[-1]["v"] == version and starts[-1]["rev"] == revision
        return False

    def app_checks(self, returned: float) -> dict[str, Any]:
        """The App ran through the outage, was started again by the node after each of its
        restarts (one instance at a time), and ran its new revision once the link was back."""
        problems: list[str] = []
        lines = self.app_lines()
        starts = [x for x in lines if x["e"] == "start"]
        first, second = self.app_revisions.get("1"), self.app_revisions.get("2")
        offline = [x for x in starts if x["t"] < returned]
        after = [x for x in starts if x["t"] >= returned]
        if not offline or offline[0]["rev"] != first:
            problems.append(f"App: not started at revision {first} before the outage")
        if any(x["rev"] != first or x["v"] != "1" for x in offline):
            problems.append(f"App: ran something other than revision {first} while offline")
        if not after or after[-1]["rev"] != second or after[-1]["v"] != "2":
            problems.append(f"App: not on revision {second} after the link returned")
        # Started once, then once again per restart of the node: the App itself never
        # ended (a crash would show as more starts, restarted by the node's supervisor).
        if len(offline) != 1 + len(self.kills) or len(after) != 1:
            problems.append(
                f"App: {len(offline)} instances before the link returned (expected "
                f"{1 + len(self.kills)}: one, and one per restart of the node), "
                f"{len(after)} after it (expected 1)"
            )
        restarts = []
        for kill in self.kills:
            again = [x for x in starts if kill["t"] < x["t"] < kill["t"] + APP_RESTART_TIMEOUT]
            started = again[0] if again else None
            restarts.append(
                {
                    "power_cut": kill["power_cut"],
                    "pid_before": kill["app_pid"],
                    "pid_after": started["pid"] if started else None,
                    "started_after_kill_s": round(started["t"] - kill["t"], 1) if started else None,
                }
            )
            if started is None or started["pid"] == kill["app_pid"]:
                problems.append(
                    f"App: not started again within {APP_RESTART_TIMEOUT:g} s of a kill"
                )
        # One instance at a time: no beat of an instance after the next one started.
        overlaps = 0
        for earlier, later in itertools.pairwise(starts):
            overlaps += sum(
                1
                for x in lines
                if x["e"] == "beat" and x["pid"] == earlier["pid"] and x["t"] > later["t"]
            )
        if overlaps:
            problems.append(f"App: {overlaps} beats of an instance after the next one started")
        beats = [x["t"] for x in lines if x["e"] == "beat" and x["t"] < returned]
        start, end = self.offline_window
        during = [t for t in beats if start <= t <= end]
        gaps = [b - a for a, b in itertools.pairwise([start, *during, end])]
        max_gap = max(gaps) if gaps else None
        if max_gap is None or max_gap > APP_MAX_GAP:
            problems.append(f"App: beats paused {max_gap} s while the days passed")
        applied = [x["t"] for x in after if x["rev"] == second]
        return {
            "ok": not problems,
            "problems": problems,
            "revisions": self.app_revisions,
            "instances": [{k: x[k] for k in ("rev", "v", "pid")} for x in starts],
            "restarts_after_kills": restarts,
            "beats_while_offline": len(during),
            "max_beat_gap_offline_s": round(max_gap, 1) if max_gap is not None else None,
            "new_revision_started_after_return_s": (
                round(applied[0] - returned, 1) if applied else None
            ),
            "ld_preload_in_app": self.app_preloaded,
        }

    # -- the story --------------------------------------------------------------------

    def scenario(self) -> dict[str, Any]:
        p = self.p
        self.net.up()
        self.event("network", ns=self.net.ns, host=self.net.host_ip, node=self.net.node_ip)
        self.start_hub()
        self.proxy = Proxy(self.background, self.hub_port, host=self.net.host_ip)
        self.proxy.delay = ONE_WAY_DELAY
        self.proxy.start()
        self.start_broker()
        out = self.edgectl("node", "add", NODE, "--label", "site=ship")
        self.write_node_config(out.strip().splitlines()[-1].strip())
        self.apply(self.fleet_manifest())
        self.apply_app("1")
        self.clock.write()
        self.clock.t0 = time.monotonic()
        self.start_node()
        self.wait("the node Ready at the hub", self.hub_node_ready, 60)
        keys = {f"Route/default/ship-{c}" for c in CLASSES} | {
            f"Device/default/sensor-{i}" for i in range(1, DEVICES + 1)
        }
        self.wait(
            "the node holding its Devices and Routes",
            lambda: keys <= {r["key"] for r in self.node_status().get("resources", [])},
            60,
        )
        self.wait("the App running, as the hub sees it", lambda: self.app_applied("1"), 90)
        app_pid = self.app_instance()
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{app_pid}/environ").read_bytes().split(b"\0")
            self.app_preloaded = any(v.startswith(b"LD_PRELOAD=") for v in environ)
        self.event("node connected through the shaped link", app_pid=app_pid)

        # Connected, real time.
        self.set_rate(p.online_rate)
        self.start(
            "devices",
            self.in_ns(
                sys.executable,
                str(DEVICES_SCRIPT),
                "--port",
                str(MQTT_PORT),
                "--devices",
                str(DEVICES),
                "--rate-file",
                str(self.rate_file),
                "--log",
                str(self.published_log),
            ),
        )
        time.sleep(p.connected_s)

        # The outage: half-open first (the node must notice by itself), then refused.
        self.proxy.blackhole(True)
        cut_at = time.monotonic()
        self.wait(
            "the node noticing the half-open link", lambda: self.node_state() != "connected", 90
        )
        half_open_detect = time.monotonic() - cut_at
        self.proxy.refusing = True
        self.proxy.cut()
        self.proxy.blackhole(False)
        self.event("link down", half_open_detected_s=round(half_open_detect, 1))

        # 30 simulated days, in steps.
        self.set_rate(p.offline_rate)
        offline_from = time.monotonic()
        took_from = self.node_took()
        steps = max(1, int(p.offline_s / p.step_s))
        per_step = p.days * DAY / steps
        changes = list(CHANGES)
        kills = list(p.kill_days)
        jumps = [-3 * DAY, 2 * DAY]
        day = 0.0
        for _ in range(steps):
            time.sleep(self.until_next_step())
            self.clock.advance(per_step)
            day += per_step / DAY
            while changes and changes[0][0] <= day:
                _, action, args = changes.pop(0)
                self.operator_change(action, args)
            if kills and kills[0] <= day:
                kills.pop(0)
                time.sleep(FAKETIME_SETTLE)
                self.kill_and_restart(jumps.pop(0), power_cut=not self.kills)
        time.sleep(FAKETIME_SETTLE)
        offline_status = self.node_status()
        store_clock = self.node_db("SELECT clock FROM meta")[0][0]
        self.event(
            "30 days passed",
            outbox=offline_status.get("outbox"),
            store_clock_days=round(store_clock / DAY, 2),
        )

        # The link returns: thin, slow and lossy.
        self.set_rate(p.online_rate)
        self.offline_window = (offline_from, time.monotonic())
        self.node_took_offline = self.node_took() - took_from
        seq_at_return = int(self.node_db("SELECT next_seq FROM meta")[0][0])
        bytes_before = self.net.link_bytes()
        proxy_before = self.proxy.forwarded
        returned = time.monotonic()
        self.proxy.refusing = False
        self.event("link back", next_seq=seq_at_return)
        stop_stalls = threading.Event()
        stalls = threading.Thread(target=self.stall_loop, args=(stop_stalls,), daemon=True)
        stalls.start()
        converged_at: float | None = None
        half_open_done = False
        try:
            deadline = returned + p.converge_timeout_s
            while time.monotonic() < deadline:
                revision = self.node_db("SELECT applied_revision FROM meta")[0][0]
                self.revisions_seen.append(int(revision))
                if (
                    not half_open_done
                    and time.monotonic() - returned > p.converge_timeout_s / 10
                    and self.node_state() == "connected"
                ):
                    half_open_done = True
                    self.half_open_cut()
                if self.converged(seq_at_return):
                    converged_at = time.monotonic()
                    break
                time.sleep(1.0)
        finally:
            stop_stalls.set()
            stalls.join()
        self.event(
            "converged" if converged_at else "NOT converged",
            seconds=round((converged_at or time.monotonic()) - returned, 1),
        )
        link_bytes = self.net.link_bytes() - bytes_before
        proxy_bytes = self.proxy.forwarded - proxy_before

        # The devices stop; what they published last drains (real time, connected).
        self.children["devices"].stop()
        last_seq = int(self.node_db("SELECT next_seq FROM meta")[0][0])
        with contextlib.suppress(ShipError):
            self.wait("the last records drained", lambda: self.drained(last_seq), 90)
        final_status = self.node_status()
        in_doubt = self.in_doubt_before + self.node_in_doubt()
        self.children["node"].stop()
        return self.checks(
            in_doubt=in_doubt,
            converged_at=converged_at,
            returned=returned,
            half_open_detect=half_open_detect,
            link_bytes=link_bytes,
            proxy_bytes=proxy_bytes,
            seq_at_return=seq_at_return,
            final_status=final_status,
            store_clock=store_clock,
            offline_status=offline_status,
        )

    def stall_loop(self, stop: threading.Event) -> None:
        """Loss-like stalls: the proxy holds everything for a while (TCP retransmits
        look like this to the application), every ``stall_every_s``."""
        assert self.proxy is not None
        while not stop.wait(self.p.stall_every_s):
            self.proxy.paused = True
            stop.wait(self.p.stall_s)
            self.proxy.paused = False

    def half_open_cut(self) -> None:
        """During the drain: the link goes half-open until the node notices, then is cut."""
        assert self.proxy is not None
        self.proxy.blackhole(True)
        start = time.monotonic()
        with contextlib.suppress(ShipError):
            self.wait(
                "the node noticing a half-open link", lambda: self.node_state() != "connected", 90
            )
        self.proxy.cut()
        self.proxy.blackhole(False)
        self.event("half-open cut during the drain", detected_s=round(time.monotonic() - start, 1))

    def node_clock_offset(self) -> float | None:
        """How far ahead of the hub's the node found its wall clock at its last welcome."""
        try:
            state = json.loads((self.node_dir / "data" / "link-state.json").read_text())
        except (OSError, ValueError):
            return None
        value = state.get("clock_offset") if isinstance(state, dict) else None
        return float(value) if isinstance(value, int | float) else None

    def node_took(self) -> int:
        """Records the node took from its bus into the outbox or refused by the quota (and
        its own few records): what it kept up with."""
        seq, rejected = self.node_db("SELECT next_seq, rejected FROM meta")[0]
        return int(seq) + int(rejected)

    def next_seq(self) -> int:
        return int(self.node_db("SELECT next_seq FROM meta")[0][0])

    def drained(self, seq: int) -> bool:
        """No outbox record below ``seq`` is left."""
        rows = self.node_db("SELECT count(*) FROM outbox WHERE seq < ?", seq)
        return rows[0][0] == 0

    def converged(self, seq: int) -> bool:
        if not self.drained(seq):
            return False
        return bool(self.desired_checks()["ok"]) and self.app_applied("2")

    # -- the checks -------------------------------------------------------------------

    def hub_resources(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for plural, kind in (
            ("devices", "Device"),
            ("configs", "Config"),
            ("routes", "Route"),
            ("apps", "App"),
        ):
            for item in self.api(f"/v1/{plural}").get("items", []):
                meta = item["metadata"]
                found[f"{kind}/{meta.get('namespace', 'default')}/{meta['name']}"] = item
        return found

    def desired_checks(self) -> dict[str, Any]:
        problems: list[str] = []
        hub = self.hub_resources()
        node = {
            key: (revision, data)
            for key, revision, data in self.node_db(
                "SELECT key, revision, data FROM resources WHERE data IS NOT NULL"
            )
        }
        for key, item in hub.items():
            want = int(item["metadata"]["resourceVersion"])
            have = node.get(key)
            if have is None:
                problems.append(f"{key}: not on the node")
            elif have[0] != want:
                problems.append(f"{key}: revision {have[0]} on the node, {want} at the hub")
        for key in node:
            if key not in hub and not key.startswith("Node/"):
                problems.append(f"{key}: on the node, not at the hub")
        twins = {d: json.loads(doc) for d, doc in self.node_db("SELECT device, doc FROM twins")}
        for device, desired in FINAL_DESIRED.items():
            doc = twins.get(device, {})
            have = doc.get("desired", doc) if isinstance(doc, dict) else None
            if not isinstance(have, dict) or any(have.get(k) != v for k, v in desired.items()):
                problems.append(f"twin {device}: desired {have!r}, want {desired}")
        config_file = self.node_dir / "data" / "config" / "ship-tuning.json"
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"{config_file.name}: {exc}")
        else:
            data = config.get("data", config) if isinstance(config, dict) else config
            if data != FINAL_CONFIG:
                problems.append(f"{config_file.name}: {config!r}, want {FINAL_CONFIG}")
        return {"ok": not problems, "problems": problems}

    def delivered(self) -> tuple[Counter[int], dict[int, float], dict[int, float]]:
        """How often each message number reached the hub; the node's wall-clock stamp of
        its record (when the node accepted it; Unix seconds, faked); when the hub first
        received it (the hub's wall clock, real)."""
        seen: Counter[int] = Counter()
        stamps: dict[int, float] = {}
        received: dict[int, float] = {}
        for i in range(1, DEVICES + 1):
            out = self.edgectl("telemetry", f"sensor-{i}")
            for line in out.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                record = item.get("record") or {}
                body = record.get("body") if isinstance(record.get("body"), dict) else record
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    n = int(json.loads(body["payload"])["n"])
                    seen[n] += 1
                    stamp = datetime.datetime.fromisoformat(body["timestamp"])
                    stamps[n] = stamp.timestamp()
                    at = datetime.datetime.fromisoformat(item["received"]).timestamp()
                    received[n] = min(at, received.get(n, at))
        return seen, stamps, received

    def published(self) -> Published:
        return Published.read(self.published_log)

    def rate_figures(self, published: Published) -> dict[str, Any]:
        """What the devices were asked to publish while the days passed, and what they did
        (acknowledged by Mosquitto): per real second and per simulated hour."""
        start, end = self.offline_window
        count = sum(1 for t in published.t if start <= t < end)
        seconds = max(1e-9, end - start)
        sim_hours = self.p.days * 24
        return {
            "node_took_per_s": round(self.node_took_offline / seconds, 1),
            "offline_real_s": round(seconds, 1),
            "asked_per_s": self.p.offline_rate,
            "achieved_per_s": round(count / seconds, 1),
            "published_offline": count,
            "asked_per_sim_hour": round(self.p.offline_rate * seconds / sim_hours, 1),
            "reports_per_sim_hour": round(count / sim_hours, 1),
        }

    def checks(self, **m: Any) -> dict[str, Any]:
        published = self.published()
        seen, stamps, received = self.delivered()
        lags: list[float] = []
        kept: list[dict[str, Any]] = []
        returned_store = self.clock.store_time(m["returned"])
        returned_wall = m["returned"] + self.clock.wall_minus_mono
        # One clock step either way, and a minute.
        margin = self.p.days * DAY / max(1, int(self.p.offline_s / self.p.step_s)) + 60
        outbox = (m["final_status"].get("outbox") or {}) if m["final_status"] else {}
        node_drops = {
            k: outbox.get(k)
            for k in ("dropped_expired", "dropped_quota", "rejected", "coalesced", "next_seq")
        }
        by_priority: dict[str, dict[str, int]] = outbox.get("dropped_by_priority") or {}
        per_class: dict[str, dict[str, int]] = {}
        problems: list[str] = []
        for cls in CLASSES:
            per_class[cls] = dict.fromkeys(
                (
                    "published",
                    "delivered_once",
                    "delivered_more",
                    "expired_by_ttl",
                    "missing",
                    "kept_past_ttl",
                    "unreadable_stamp",
                ),
                0,
            )
        # The oldest priority-9 record that crossed the link after it returned: it waited
        # in the outbox through the whole outage (below).
        oldest_bulk_kept = float("inf")
        for n, index, t in published.items():
            cls = CLASS_NAMES[index]
            counts = per_class[cls]
            counts["published"] += 1
            ttl = CLASSES[cls][1]
            got = seen.get(n, 0)
            if got == 1:
                counts["delivered_once"] += 1
            elif got > 1:
                counts["delivered_more"] += 1
            elif self.may_expire(cls, t, returned_store, margin):
                counts["expired_by_ttl"] += 1
            else:
                counts["missing"] += 1
            if got and cls == "bulk" and received.get(n, 0.0) >= returned_wall:
                oldest_bulk_kept = min(oldest_bulk_kept, t)
            if got and ttl is not None:
                # Delivered: judged by when the node accepted it (its record's stamp),
                # which may be later than the device published it (the node busy or down).
                accepted = self.clock.node_wall_to_mono(stamps.get(n, 0.0))
                if accepted is None:
                    counts["unreadable_stamp"] += 1
                    continue
                lags.append(accepted - t)
                # Its age on the store clock when it was sent (the hub received it then,
                # give or take the link's seconds).
                sent = received.get(n, 0.0) - self.clock.wall_minus_mono
                age = self.clock.store_time(sent) - self.clock.store_time(max(t, accepted))
                if age > ttl + margin:
                    counts["kept_past_ttl"] += 1
                    kept.append(
                        {
                            "n": n,
                            "class": cls,
                            "published_s": round(t - self.started, 2),
                            "accepted_s": round(accepted - self.started, 2),
                            "received_s": round(sent - self.started, 2),
                            "store_days_published": round(self.clock.store_time(t) / DAY, 3),
                            "store_days_accepted": round(
                                self.clock.store_time(max(t, accepted)) / DAY, 3
                            ),
                            "copies": got,
                        }
                    )
        # Per priority: the records of a class not delivered are the node's drops at its
        # priority (TTL and quota, counted per priority by the store) plus the records the
        # quota refused outright ("rejected": a new record for which nothing of its own or a
        # less urgent priority was left to evict; the store counts those in total only).
        rejected_inferred = 0
        # A record in flight when a connection ended (its ack lost) and dropped by the
        # quota or its TTL before it was sent again is counted dropped though the hub may
        # have it; the node reports how many records were in that state (``in_doubt``).
        over_counted = 0
        for cls, counts in per_class.items():
            priority = CLASSES[cls][0]
            node = by_priority.get(str(priority)) or {}
            counts["node_dropped_expired"] = int(node.get("expired", 0))
            counts["node_dropped_quota"] = int(node.get("quota", 0))
            lost = counts["expired_by_ttl"] + counts["missing"]
            counts["not_delivered"] = lost
            counts["rejected_inferred"] = (
                lost - counts["node_dropped_expired"] - counts["node_dropped_quota"]
            )
            rejected_inferred += counts["rejected_inferred"]
            total = counts["delivered_once"] + counts["delivered_more"] + lost
            if total != counts["published"]:
                problems.append(f"{cls}: counts do not add up")
            if counts["delivered_more"]:
                problems.append(f"{cls}: {counts['delivered_more']} delivered more than once")
            if counts["unreadable_stamp"]:
                problems.append(f"{cls}: {counts['unreadable_stamp']} records' stamps unreadable")
            if counts["kept_past_ttl"]:
                problems.append(f"{cls}: {counts['kept_past_ttl']} delivered after their TTL")
            if counts["rejected_inferred"] < 0:
                over_counted += -counts["rejected_inferred"]
            if over_counted > m["in_doubt"]:
                problems.append(
                    f"{cls} (priority {priority}): the node counted "
                    f"{-counts['rejected_inferred']} more dropped than were not delivered "
                    f"(more than the {m['in_doubt']} records whose ack a lost connection "
                    "left in doubt)"
                )
            elif counts["rejected_inferred"] > 0 and cls in ("alarm", "energy"):
                # Refused only if the outbox held nothing but more urgent records (alarms):
                # the scenario's quota holds every alarm of the month a few times over.
                problems.append(
                    f"{cls} (priority {priority}): {counts['rejected_inferred']} records "
                    "neither delivered nor counted dropped at their priority"
                )
            if counts["node_dropped_expired"] > counts["expired_by_ttl"] + m["in_doubt"]:
                problems.append(
                    f"{cls}: the node expired {counts['node_dropped_expired']} records, only "
                    f"{counts['expired_by_ttl']} could have passed their TTL (store clock)"
                )
        rejected = int(node_drops.get("rejected") or 0)
        node_own_rejected = rejected - rejected_inferred
        node_own_dropped = {
            p: v for p, v in by_priority.items() if int(p) not in {c[0] for c in CLASSES.values()}
        }
        if node_own_rejected < 0:
            problems.append(
                f"the node counted {rejected} records refused by the quota, fewer than the "
                f"{rejected_inferred} of the devices' records neither delivered nor dropped"
            )
        # The per-priority counters add up to the node's totals (with the rejected ones
        # above, every record not delivered is then one the node counted removed).
        for reason in ("expired", "quota"):
            split = sum(int(v.get(reason, 0)) for v in by_priority.values())
            total = int(node_drops.get(f"dropped_{reason}") or 0)
            if split != total:
                problems.append(f"dropped ({reason}): {split} by priority, {total} in total")
        # The quota drops the least urgent first: a more urgent record lost while a bulk
        # record (priority 9) published before it waited in the outbox through the outage
        # (it crossed the link after the link returned) means the policy failed. (A bulk
        # record delivered before the outage proves nothing; one published after may
        # arrive: when it came, the outbox may have had room again.)
        for n, index, t in published.items():
            cls = CLASS_NAMES[index]
            if (
                cls != "bulk"
                and t > oldest_bulk_kept
                and n not in seen
                and not self.may_expire(cls, t, returned_store, margin)
            ):
                problems.append(f"{cls} record {n} lost while an older bulk record was kept")
                break
        if per_class["alarm"]["missing"]:
            problems.append(f"alarm (priority 0, no TTL): {per_class['alarm']['missing']} lost")
        if not int(node_drops.get("dropped_quota") or 0) and not rejected:
            problems.append("the outbox never reached its quota (scenario too small)")
        rate = self.rate_figures(published)
        broker_log = self.work / "mosquitto.log"
        if "Outgoing messages are being dropped" in broker_log.read_text(errors="replace"):
            problems.append("Mosquitto dropped messages queued for the node (it fell behind)")
        if rate["achieved_per_s"] < 0.9 * self.p.offline_rate:
            problems.append(
                f"the devices published {rate['achieved_per_s']}/s of the "
                f"{self.p.offline_rate:g}/s asked while the days passed"
            )
        if rate["node_took_per_s"] < 0.9 * rate["achieved_per_s"]:
            problems.append(
                f"the node took {rate['node_took_per_s']}/s from its bus while the devices "
                f"published {rate['achieved_per_s']}/s (it fell behind)"
            )
        # The hub's time in the welcome: the node knows how far off its wall clock is
        # (30 days advanced, 3 back and 2 forward: 29 days ahead).
        clock_offset = self.node_clock_offset()
        expected_offset = self.clock.advanced + self.clock.shifted
        if clock_offset is None or abs(clock_offset - expected_offset) > 60:
            problems.append(
                f"the node reports its clock {clock_offset} s off the hub's, "
                f"expected {expected_offset:.0f} s"
            )
        desired = self.desired_checks()
        in_order = all(b >= a for a, b in itertools.pairwise(self.revisions_seen))
        if not desired["ok"]:
            problems += desired["problems"]
        if not in_order:
            problems.append(f"the node's applied revision went back: {self.revisions_seen}")
        app = self.app_checks(m["returned"])
        problems += app["problems"]
        if m["converged_at"] is None:
            problems.append(f"did not converge within {self.p.converge_timeout_s:g} s")
        store_days = m["store_clock"] / DAY
        result = {
            "profile": asdict(self.p),
            "machine": {
                "host": platform.node(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "kernel": platform.release(),
                "load_average_at_start": self.load_at_start,
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                "note": "shared machine, loaded by other builds and tests",
            },
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "runtime_s": round(time.monotonic() - self.started, 1),
            "node_time": "libfaketime (LD_PRELOAD, offset file); wall and monotonic together",
            "link": {
                "rate": RATE,
                "rtt_added_s": 2 * ONE_WAY_DELAY,
                "stall": f"{self.p.stall_s:g} s every {self.p.stall_every_s:g} s",
            },
            "ok": not problems,
            "problems": problems,
            "rate": rate,
            "reports_per_sim_hour": rate["reports_per_sim_hour"],
            "desired": {**desired, "revisions_in_order": in_order},
            "app": app,
            "records": per_class,
            "node_counters": node_drops,
            "uplink_in_doubt": m["in_doubt"],
            "node_dropped_by_priority": by_priority,
            "node_own_records_removed": {
                "dropped_by_priority": node_own_dropped,
                "rejected_inferred": node_own_rejected,
            },
            "node_outbox_when_link_returned": m["offline_status"].get("outbox"),
            "store_clock_days_at_return": round(store_days, 2),
            "store_clock_days_expected": round(returned_store / DAY, 2),
            "half_open_detected_s": round(m["half_open_detect"], 1),
            "node_clock_offset_s": clock_offset,
            "node_clock_offset_expected_s": round(expected_offset),
            "kept_past_ttl_examples": kept[:20],
            "accept_lag_s": {
                "median": round(statistics.median(lags), 2) if lags else None,
                "max": round(max(lags), 2) if lags else None,
            },
            "converge_s": (
                round(m["converged_at"] - m["returned"], 1) if m["converged_at"] else None
            ),
            "backlog_records_at_return": m["seq_at_return"],
            "link_bytes_ip_during_converge": m["link_bytes"],
            "proxy_bytes_during_converge": m["proxy_bytes"],
            "delivered_total": sum(1 for n in seen if seen[n]),
            "events": self.events,
        }
        delivered_in_drain = self.delivered_during_drain(
            published, seen, m["converged_at"] or time.monotonic()
        )
        result["records_delivered_during_converge"] = delivered_in_drain
        result["link_bytes_per_record"] = (
            round(m["link_bytes"] / delivered_in_drain, 1) if delivered_in_drain else None
        )
        return result

    def may_expire(self, cls: str, t: float, returned_store: float, margin: float) -> bool:
        """Its TTL may have passed on the store clock before the link returned."""
        ttl = CLASSES[cls][1]
        if ttl is None:
            return False
        return returned_store - self.clock.store_time(t) > ttl - margin

    def delivered_during_drain(self, published: Published, seen: Counter[int], until: float) -> int:
        """Records that crossed the link between its return and ``until`` (convergence):
        those published from the outage on that arrived (everything published before the
        outage had arrived already)."""
        outage = [e["t"] for e in self.events if e["what"] == "link down"]
        if not outage:
            return 0
        lo = outage[0] + self.started
        return sum(1 for n, _, t in published.items() if lo <= t <= until and seen.get(n))

    def close(self) -> None:
        for child in reversed(list(self.children.values())):
            child.stop(5.0)
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                self.proxy.stop()
        self.net.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the ship test (issue 15)")
    parser.add_argument("--quick", action="store_true", help="the 1-2 minute version")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON (default {DEFAULT_OUT})")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--compression", action="store_true", help="permessage-deflate on the node's link"
    )
    args = parser.parse_args(argv)
    reason = why_not_here()
    if reason is not None:
        print(f"ship test cannot run here: {reason}", file=sys.stderr)
        return 77
    profile = dataclasses.replace(QUICK if args.quick else FULL, compression=args.compression)
    out = args.out or (
        DEFAULT_OUT if not args.quick else ROOT / "bench" / "results" / "ship-quick.json"
    )
    work = Path(tempfile.mkdtemp(prefix="edgenode-ship-"))
    ship = Ship(profile, work)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        result = ship.scenario()
    except ShipError as exc:
        print(f"ship test could not complete: {exc}", file=sys.stderr)
        print(f"work directory: {work}", file=sys.stderr)
        return 2
    finally:
        ship.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "events"}, indent=2))
    print(f"written: {out}")
    if args.keep or not result["ok"]:
        print(f"work directory: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
