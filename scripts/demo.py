"""The first five minutes (issue 7): the whole product on this machine, as separate processes.

``scripts/demo.sh`` runs the set-up, then this. It starts, with nothing to configure:
one Mosquitto per node (generated config, free loopback ports, not the system broker),
``edgehub serve`` (SQLite in ``demo-data/hub``), two ``edgenode run`` nodes with different
labels (tokens from ``edgectl node add``), two simulated devices
(``python -m edgenode.devices.simulate``, real MQTT clients in their own processes) and an
App (``deploy/demo/sampler.py`` pushed as an artifact, run by node-a). Then
it tells the story, printing every command it runs and its output, and checks every
step's outcome within a bound of time (a step that does not happen stops the demo with
exit status 1 and says what did not happen):

1. the nodes join; 2. Devices, a Config, a Route and an App are applied (each node gets
what targets it; the App runs on node-a and publishes on its bus); 3. a desired value
changes: the thermostat's delta and its report coming back; 4. the hub stops: the nodes keep serving their devices and queue reports, the App
keeps running; 5. the hub starts again: everything queued arrives, nothing is lost (the
meter's readings counted on both sides); the App's log fetched from its node.

Then it prints the commands to explore by hand and stays up until Ctrl-C (SIGINT) or
SIGTERM, which stop every process it started (each in its own process group, and each
also told to stop if the demo itself dies). ``--exit-after-story`` (or
``EDGENODE_DEMO_EXIT=1``) stops after the story. Every run starts from an empty data
directory (a running demo on the same directory is refused).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import getpass
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, Final, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT: Final = Path(__file__).resolve().parents[1]
BROKER_SETTINGS: Final = ROOT / "deploy" / "mosquitto" / "edgenode.conf"
"""The Mosquitto settings a node needs (included in each demo broker's config)."""
BIN: Final = Path(sys.executable).parent
"""The virtualenv's bin directory: edgectl, edgehub and edgenode are installed there."""
FLEET: Final = ROOT / "deploy" / "demo" / "fleet.yaml"
SAMPLER: Final = ROOT / "deploy" / "demo" / "sampler.py"
"""The demo App's program (pushed as an artifact)."""
MOSQUITTO: Final = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
OPENSSL: Final = shutil.which("openssl") or "/usr/bin/openssl"

NODES: Final = {"node-a": "north", "node-b": "south"}
"""Node name → its ``site`` label (fleet.yaml targets the Config and the Route by it)."""
THERMOSTAT: Final = ("thermo-1", "node-a")
METER: Final = ("meter-1", "node-b")
APP: Final = ("sampler", "node-a")
"""The demo's App and the node it runs on (the only one labelled site=north)."""
SAMPLE_INTERVAL: Final = 0.5
NEW_TARGET: Final = 23

HEARTBEAT: Final = 0.5
"""The hub's heartbeat (seconds; a silent link is dropped after 3): short, so the outage
and the reconnect take a second or two instead of a minute."""
NODE_BACKOFF: Final = (0.2, 1.0)
"""Reconnect back-off of the nodes (base, cap in seconds)."""
STATUS_INTERVAL: Final = 2.0
DEVICE_INTERVAL: Final = 0.5
"""The meter publishes a reading, the thermostat takes a temperature step, this often."""
DRIFT_RATE: Final = 0.5
"""°C per second the thermostat's temperature moves toward its target."""
QUEUED_READINGS: Final = 4
"""Meter readings node-b must hold in its outbox before the hub comes back."""
STEP_TIMEOUT: Final = 20.0
"""Bound of every wait; the whole story takes about 30 s."""
START_TIMEOUT: Final = 15.0
STOP_TIMEOUT: Final = 5.0
"""SIGTERM, then SIGKILL after this many seconds."""
POLL: Final = 0.25
STAY_UP_POLL: Final = 1.0
PR_SET_PDEATHSIG: Final = 1
EXIT_ENV: Final = "EDGENODE_DEMO_EXIT"

T = TypeVar("T")


class DemoError(Exception):
    """A step did not happen: the message says which."""


class Stop(BaseException):
    """SIGINT or SIGTERM arrived: stop everything (BaseException: not caught by accident)."""


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_the_demo() -> None:
    """In a child before exec: SIGTERM it if the demo dies, even by SIGKILL."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


@dataclass
class Child:
    """A process the demo started: its own process group, output into its log file."""

    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] | None = None

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
                preexec_fn=_die_with_the_demo,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> int | None:
        """SIGTERM to its process group, SIGKILL after STOP_TIMEOUT; its exit status.
        (Signals go to the group while its leader lives: once the leader is reaped, its
        number may belong to someone else.)"""
        if self.proc is None:
            return None
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT)
        code = self.proc.returncode
        self.proc = None
        return code

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def counter_of(item: dict[str, Any]) -> int | None:
    """The meter's reading number in one line of ``edgectl telemetry`` (None: another topic)."""
    record = item.get("record") or {}
    body = record.get("body") if isinstance(record.get("body"), dict) else record
    if not isinstance(body, dict) or not str(body.get("topic", "")).endswith("/telemetry/energy"):
        return None
    try:
        value = json.loads(body["payload"])["n"]
    except (KeyError, TypeError, ValueError):
        return None
    return value if isinstance(value, int) else None


class Demo:
    """The processes of one demo run, the story told with them, and their end."""

    def __init__(self, data: Path, *, bold: bool) -> None:
        self.data = data
        self.bold = bold
        self.started = time.monotonic()
        self.children: dict[str, Child] = {}
        self.hub_port = free_port()
        self.api_port = free_port()
        self.mqtt_ports = {name: free_port() for name in NODES}
        self.hub_url = f"https://127.0.0.1:{self.api_port}"
        self.tls_cert = self.data / "hub-tls" / "hub.pem"
        """The hub's self-signed certificate: its API is on TLS because kubectl sends its
        token only over TLS; edgectl and the nodes trust this file."""
        self.tls_key = self.data / "hub-tls" / "hub.key"
        self.token = ""
        self.told = False
        """The story ran to its end."""
        self.locked = False
        """This run holds ``demo.pid`` (and removes it at the end)."""

    # -- output -------------------------------------------------------------------------

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:5.1f}s"

    def section(self, title: str) -> None:
        text = f"== {title}  [{self.elapsed()}]"
        print(f"\n\033[1m{text}\033[0m" if self.bold else f"\n{text}", flush=True)

    def note(self, text: str) -> None:
        print(f"   {text}", flush=True)

    def ok(self, text: str) -> None:
        print(f"   ok: {text}", flush=True)

    def command(self, text: str) -> None:
        print(f"$ {text}", flush=True)

    def output(self, text: str, *, keep: int | None = None) -> None:
        lines = text.rstrip("\n").splitlines()
        if keep is not None and len(lines) > keep:
            print(f"  ... ({len(lines) - keep} of {len(lines)} lines not shown)")
            lines = lines[-keep:]
        for line in lines:
            print(f"  {line}")
        sys.stdout.flush()

    def rel(self, path: Path) -> str:
        """``path`` as the user types it from the repository root."""
        with contextlib.suppress(ValueError):
            return str(path.relative_to(ROOT))
        return str(path)

    # -- running things -----------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            EDGECTL_HUB=self.hub_url, EDGECTL_TOKEN=self.token, SSL_CERT_FILE=str(self.tls_cert)
        )
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, argv: list[str], shown: str, *, keep: int | None = None) -> str:
        """Run a command the user could type (shown as ``shown``); it must succeed."""
        self.command(shown)
        env = self.env()
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=STEP_TIMEOUT
            )
        except FileNotFoundError:
            raise DemoError(
                f"`{shown}`: {argv[0]} not found in PATH={env['PATH']} (scripts/setup.sh "
                "installs it)"
            ) from None
        except subprocess.TimeoutExpired:
            raise DemoError(f"`{shown}` did not finish within {STEP_TIMEOUT:g} s") from None
        self.output(result.stdout + result.stderr, keep=keep)
        if result.returncode != 0:
            raise DemoError(f"`{shown}` failed with exit status {result.returncode}")
        return result.stdout

    def edgectl(self, *args: str, keep: int | None = None) -> str:
        return self.run([str(BIN / "edgectl"), *args], "edgectl " + shlex.join(args), keep=keep)

    def status_text(self, node: str) -> str:
        config = self.rel(self.node_dir(node) / "node.toml")
        return self.run(
            [str(BIN / "edgenode"), "status", "--config", config],
            f"edgenode status --config {config}",
        )

    def api(self, path: str) -> Any:
        """A quiet read of the operator API (the polling behind the shown commands)."""
        request = urllib.request.Request(self.hub_url + path)
        request.add_header("Authorization", f"Bearer {self.token}")
        try:
            context = ssl.create_default_context(cafile=str(self.tls_cert))
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def node_status(self, node: str) -> dict[str, Any]:
        """``edgenode status --json`` of a node (quiet)."""
        result = subprocess.run(
            [
                str(BIN / "edgenode"),
                "status",
                "--json",
                "--config",
                str(self.node_dir(node) / "node.toml"),
            ],
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
        )
        try:
            value = json.loads(result.stdout)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def wait(
        self, what: str, condition: Callable[[], T | None], timeout: float = STEP_TIMEOUT
    ) -> T:
        """Poll ``condition`` until it is truthy; DemoError naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for child in self.children.values():
                if child.proc is not None and child.proc.poll() is not None:
                    raise DemoError(
                        f"{child.name} exited with status {child.proc.returncode} while "
                        f"waiting for {what}; its log ({self.rel(child.log)}) ends with:\n"
                        + child.tail()
                    )
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise DemoError(f"{what} did not happen within {timeout:g} s")
            time.sleep(POLL)

    def start(
        self,
        name: str,
        argv: list[str],
        log: Path,
        shown: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Child:
        child = Child(name, argv, log, env=env)
        if shown is not None:
            self.command(f"{shown} &")
        child.start()
        self.children[name] = child
        self.note(f"{name}: pid {child.pid}, log {self.rel(log)}")
        return child

    def stop_all(self) -> None:
        """Devices first, then nodes, the hub, the brokers: every process group is gone."""
        for child in reversed(list(self.children.values())):
            child.stop()
        self.children.clear()

    # -- the parts ----------------------------------------------------------------------

    def node_dir(self, node: str) -> Path:
        return self.data / node

    def start_broker(self, node: str) -> None:
        directory = self.data / f"mqtt-{node}"
        directory.mkdir()
        port = self.mqtt_ports[node]
        config = directory / "mosquitto.conf"
        config.write_text(
            f"# {node}'s local bus (generated by scripts/demo.py)\n"
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stdout\n"
            # Run as this user: as root, Mosquitto would switch to user "mosquitto", and a
            # process that changes its credentials loses its parent-death signal.
            f"user {getpass.getuser()}\n" + BROKER_SETTINGS.read_text()
            # The settings every node's broker needs (deploy/mosquitto/edgenode.conf).
        )
        self.start(
            f"mosquitto ({node})", [MOSQUITTO, "-c", str(config)], directory / "mosquitto.log"
        )
        self.wait(f"Mosquitto of {node} listening on port {port}", lambda: listening(port))

    def hub_command(self) -> tuple[list[str], str]:
        data = self.rel(self.data / "hub")
        args = [
            "serve",
            "--data",
            data,
            "--listen",
            f"127.0.0.1:{self.hub_port}",
            "--api-listen",
            f"127.0.0.1:{self.api_port}",
            "--heartbeat",
            str(HEARTBEAT),
            "--handshake-timeout",
            "2",
            "--tls-cert",
            self.rel(self.tls_cert),
            "--tls-key",
            self.rel(self.tls_key),
        ]
        return [str(BIN / "edgehub"), *args], "edgehub " + shlex.join(args)

    def kubectl_look(self) -> None:
        """The same resources through the real kubectl, when it is installed."""
        kubectl = shutil.which("kubectl")
        kubeconfig = self.data / "kubeconfig"
        config = self.edgectl_quiet("kubeconfig")
        kubeconfig.write_text(config)
        kubeconfig.chmod(0o600)
        self.command(f"edgectl kubeconfig > {self.rel(kubeconfig)}")
        if kubectl is None:
            self.note("kubectl is not installed here: skipped (docs/kubectl.md)")
            return
        shown = f"KUBECONFIG={self.rel(kubeconfig)} kubectl get devices"
        self.command(shown)
        env = {**self.env(), "KUBECONFIG": str(kubeconfig), "HOME": str(self.data)}
        result = subprocess.run(
            [kubectl, "get", "devices"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=STEP_TIMEOUT,
        )
        self.output(result.stdout + result.stderr)
        if result.returncode != 0 or "thermo-1" not in result.stdout:
            raise DemoError(f"`{shown}` failed with exit status {result.returncode}")
        self.ok("kubectl lists the same Devices (the hub speaks the Kubernetes API)")

    def run_the_app(self) -> None:
        """An App: its program pushed as an artifact, run on the node its selector picks."""
        app, app_node = APP
        digest = self.edgectl("artifact", "push", self.rel(SAMPLER)).strip().splitlines()[-1]
        manifest = self.data / "sampler-app.yaml"
        manifest.write_text(
            "# The demo's App (scripts/demo.py writes it with the pushed artifact's digest;\n"
            "# reference: docs/apps.md)\n"
            "apiVersion: edgenode.io/v1\n"
            "kind: App\n"
            f"metadata: {{name: {app}}}\n"
            "spec:\n"
            "  nodeSelector: {site: north}   # node-a\n"
            f'  artifacts: [{{name: sampler.py, sha256: "{digest}"}}]\n'
            '  command: ["python3", "sampler.py"]\n'
            f'  env: {{SAMPLE_INTERVAL: "{SAMPLE_INTERVAL}"}}\n'
            "  files: [{config: north-tuning, path: tuning.json}]   # the Config as a file\n"
            "  restartPolicy: Always\n"
        )
        self.command(f"cat {self.rel(manifest)}")
        self.output(manifest.read_text(), keep=None)
        applied = self.edgectl("apply", "-f", self.rel(manifest)).strip()
        if applied != f"app/{app} created":
            raise DemoError(f"edgectl apply printed {applied!r}, expected 'app/{app} created'")
        self.wait(f"{app} Running and ready on {app_node}", lambda: self.app_ready(app, app_node))
        self.edgectl("get", "apps")
        sample = self.wait(f"a sample of {app} on {app_node}'s bus", lambda: self.sample(app_node))
        self.note(f"a sample on {app_node}'s bus (apps/{app}/{app_node}): {json.dumps(sample)}")
        self.ok(
            f"the App {app} runs on {app_node} only (site=north), reads north-tuning "
            f"(comfort_band {sample.get('comfort_band')}) and publishes on {app_node}'s bus"
        )

    def app_ready(self, app: str, node: str) -> bool:
        found = self.api(f"/v1/apps/{app}")
        nodes = ((found or {}).get("status") or {}).get("nodes") or {}
        entry = nodes.get(node) or {}
        others = set(nodes) - {node}
        if others:
            raise DemoError(f"{app} reported by {sorted(others)}: it targets {node} only")
        return entry.get("phase") == "Running" and entry.get("ready") is True

    def app_pid(self, node: str, app: str) -> int | None:
        """The App's pid from the node's own view (``edgenode status --json``)."""
        summary = self.node_status(node).get("apps") or {}
        entry = (summary.get("apps") or {}).get(app) or {}
        pid = entry.get("pid")
        return pid if isinstance(pid, int) else None

    def sample(self, node: str) -> dict[str, Any] | None:
        """One sample of the demo App from ``node``'s broker (None within a second)."""
        got: list[bytes] = []
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        client.on_connect = lambda c, *_: c.subscribe(f"apps/sampler/{node}")
        client.on_message = lambda c, userdata, message: got.append(bytes(message.payload))
        try:
            client.connect("127.0.0.1", self.mqtt_ports[node], keepalive=10)
        except OSError:
            return None
        deadline = time.monotonic() + 1.0
        while not got and time.monotonic() < deadline:
            client.loop(timeout=0.1)
        client.disconnect()
        try:
            value = json.loads(got[0]) if got else None
        except ValueError:
            raise DemoError(f"the App's sample is not JSON: {got[0]!r}") from None
        return value if isinstance(value, dict) else None

    def edgectl_quiet(self, *args: str) -> str:
        result = subprocess.run(
            [str(BIN / "edgectl"), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=ROOT,
            timeout=STEP_TIMEOUT,
        )
        if result.returncode != 0:
            raise DemoError(f"edgectl {shlex.join(args)} failed: {result.stderr}")
        return result.stdout

    def make_certificate(self) -> None:
        """A self-signed certificate for the hub's listeners (a real hub has one from its
        CA; docs/hub.md)."""
        self.tls_cert.parent.mkdir()
        args = [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "7", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", self.rel(self.tls_key), "-out", self.rel(self.tls_cert),
        ]  # fmt: skip
        self.command("openssl " + shlex.join(args))
        result = subprocess.run(
            [OPENSSL, *args], capture_output=True, text=True, cwd=ROOT, timeout=STEP_TIMEOUT
        )
        if result.returncode != 0:
            raise DemoError(f"openssl could not make the hub's certificate: {result.stderr}")

    def start_hub(self) -> None:
        argv, shown = self.hub_command()
        self.start("edgehub", argv, self.data / "hub.log", shown)
        self.wait(
            "the hub's operator API answering /readyz",
            lambda: self.api("/readyz") is not None and listening(self.hub_port),
        )
        self.token = (self.data / "hub" / "admin.token").read_text().strip()

    def write_node_config(self, node: str, token: str) -> Path:
        directory = self.node_dir(node)
        directory.mkdir()
        token_file = directory / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        config = directory / "node.toml"
        config.write_text(
            f"# {node} (generated by scripts/demo.py; reference: docs/node.md)\n"
            f'[node]\nname = "{node}"\ndata_dir = "data"\n\n'
            f'[hub]\nurl = "wss://127.0.0.1:{self.hub_port}/v1/connect"\ntoken_file = "token"\n'
            f'ca_file = "{self.tls_cert}"\n'
            f"backoff_base = {NODE_BACKOFF[0]}\nbackoff_cap = {NODE_BACKOFF[1]}\n"
            "handshake_timeout = 2.0\n\n"
            f'[mqtt]\nhost = "127.0.0.1"\nport = {self.mqtt_ports[node]}\nkeepalive = 5\n\n'
            f'[status]\ninterval = {STATUS_INTERVAL}\n\n[metrics]\nlisten = ""\n'
        )
        return config

    def start_device(self, kind: str, device: str, node: str) -> None:
        state = self.data / "devices" / f"{device}.json"
        args = [
            kind,
            "--broker",
            f"127.0.0.1:{self.mqtt_ports[node]}",
            "--device",
            device,
            "--interval",
            str(DEVICE_INTERVAL),
            "--state-file",
            self.rel(state),
        ]
        if kind == "thermostat":
            args += ["--rate", str(DRIFT_RATE)]
        self.start(
            device,
            [sys.executable, "-m", "edgenode.devices.simulate", *args],
            self.data / "devices" / f"{device}.log",
            "python -m edgenode.devices.simulate " + shlex.join(args),
        )

    def device_state(self, device: str) -> dict[str, Any]:
        try:
            value = json.loads((self.data / "devices" / f"{device}.json").read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def device_lines(self, device: str, offset: int, needle: str) -> tuple[int, list[str]] | None:
        """The device's log lines after byte ``offset`` up to the first holding ``needle``,
        and the offset after that line; None while there is none."""
        log = (self.data / "devices" / f"{device}.log").read_bytes()
        lines: list[str] = []
        position = offset
        for raw in log[offset:].splitlines(keepends=True):
            if not raw.endswith(b"\n"):
                break  # a line being written
            position += len(raw)
            lines.append(raw.decode(errors="replace").rstrip("\n"))
            if needle in lines[-1]:
                return position, lines
        return None

    def node_states(self) -> dict[str, str]:
        listing = self.api("/v1/nodes") or {"items": []}
        return {n["metadata"]["name"]: n["status"].get("state", "") for n in listing["items"]}

    def device_status(self, device: str) -> dict[str, Any]:
        item = self.api(f"/v1/devices/{device}") or {}
        status = item.get("status")
        return status if isinstance(status, dict) else {}

    def resource_keys(self, node: str) -> set[str]:
        return {r["key"] for r in self.node_status(node).get("resources", [])}

    def outbox(self, node: str) -> int:
        return int((self.node_status(node).get("outbox") or {}).get("messages", 0))

    def serving(self, node: str, device: str) -> bool:
        layer = self.node_status(node).get("device_layer") or {}
        return device in (layer.get("devices") or []) and bool(layer.get("broker_connected"))

    def readings_at_hub(self) -> list[int]:
        """The meter's reading numbers as ``edgectl telemetry meter-1`` lists them (quiet)."""
        result = subprocess.run(
            [str(BIN / "edgectl"), "telemetry", METER[0]],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=STEP_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            return []
        lines = (json.loads(line) for line in result.stdout.splitlines() if line.strip())
        return [n for item in lines if (n := counter_of(item)) is not None]

    def holds(self, node: str, keys: set[str]) -> bool:
        return self.resource_keys(node) == keys

    def hub_gone(self, node: str) -> bool:
        return self.node_status(node).get("hub", {}).get("state") not in (None, "connected")

    def drained(self, node: str) -> bool:
        """Only the periodic status record (coalesced, re-added every interval) may wait."""
        return self.outbox(node) <= 1

    def hub_sees_drained(self) -> bool:
        """Each node's latest status at the hub shows at most its own status record queued."""
        listing = self.api("/v1/nodes") or {"items": []}
        outboxes = [(n["status"].get("outbox") or {}).get("messages") for n in listing["items"]]
        return len(outboxes) == len(NODES) and all(isinstance(m, int) and m <= 1 for m in outboxes)

    def all_readings(self, published: int) -> list[int] | None:
        """The readings at the hub once they include 0 .. published-1, else None."""
        readings = self.readings_at_hub()
        return readings if set(range(published)) <= set(readings) else None

    # -- the story ----------------------------------------------------------------------

    def prepare(self) -> None:
        lock = self.data / "demo.pid"
        if lock.exists():
            with contextlib.suppress(ValueError, OSError):
                pid = int(lock.read_text())
                if b"demo" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    raise DemoError(
                        f"a demo is already running on {self.rel(self.data)} "
                        f"(pid {pid}); stop it with Ctrl-C or `kill {pid}`"
                    )
        shutil.rmtree(self.data, ignore_errors=True)  # every run tells the story from scratch
        (self.data / "devices").mkdir(parents=True)
        lock.write_text(f"{os.getpid()}\n")
        self.locked = True

    def story(self) -> None:
        thermo, thermo_node = THERMOSTAT
        meter, meter_node = METER

        self.section("0. start: a Mosquitto per node and the hub, on free loopback ports")
        for node in NODES:
            self.start_broker(node)
        self.make_certificate()
        self.start_hub()
        self.ok(
            f"hub: node links on wss://127.0.0.1:{self.hub_port}, operator API on "
            f"{self.hub_url}; brokers on ports "
            + ", ".join(f"{p} ({n})" for n, p in self.mqtt_ports.items())
        )

        self.section("1. join two nodes with different labels")
        for node, site in NODES.items():
            out = self.edgectl("node", "add", node, "--label", f"site={site}")
            config = self.write_node_config(node, out.splitlines()[-1].strip())
            self.start(
                node,
                [str(BIN / "edgenode"), "run", "--config", self.rel(config)],
                self.node_dir(node) / "node.log",
                f"edgenode run --config {self.rel(config)}",
                # The virtualenv first on PATH: the demo's App runs its python3 (paho).
                env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
            )
        self.wait(
            "both nodes Ready at the hub",
            lambda: self.node_states() == dict.fromkeys(NODES, "Ready"),
        )
        self.edgectl("get", "nodes", "-o", "wide")
        self.ok("node-a and node-b joined: Ready")

        self.section("2. apply Devices, a Config, a Route and an App")
        self.command(f"cat {self.rel(FLEET)}")
        self.output(FLEET.read_text(), keep=None)
        applied = self.edgectl("apply", "-f", self.rel(FLEET))
        expected = [
            "device/thermo-1 created",
            "device/meter-1 created",
            "config/north-tuning created",
            "route/meter-energy created",
        ]
        if applied.splitlines() != expected:
            raise DemoError(f"edgectl apply printed {applied!r}, expected {expected}")
        want = {
            "node-a": {
                "Node/default/node-a",
                f"Device/default/{thermo}",
                "Config/default/north-tuning",
            },
            "node-b": {
                "Node/default/node-b",
                f"Device/default/{meter}",
                "Route/default/meter-energy",
            },
        }
        for node, keys in want.items():
            self.wait(f"{node}'s store holding {sorted(keys)}", partial(self.holds, node, keys))
        self.wait(f"{thermo_node} serving {thermo}", lambda: self.serving(thermo_node, thermo))
        self.wait(f"{meter_node} serving {meter}", lambda: self.serving(meter_node, meter))
        for node in NODES:
            self.status_text(node)
        self.ok(
            "each node got what targets it: the Config only on site=north, the Route "
            "only on site=south"
        )
        self.kubectl_look()
        self.run_the_app()

        self.section("3. the devices connect: the thermostat applies its delta and reports back")
        self.start_device("thermostat", thermo, thermo_node)
        self.start_device("meter", meter, meter_node)
        offset, lines = self.wait(
            f"{thermo} applying target_temp 21 from its delta",
            lambda: self.device_lines(thermo, 0, "reported {"),
        )
        self.note(f"{thermo}'s log ({self.rel(self.data / 'devices' / (thermo + '.log'))}):")
        self.output("\n".join(lines))
        self.wait(
            f"{thermo}'s report (target_temp 21) in the hub's twin",
            lambda: self.device_status(thermo).get("reported", {}).get("target_temp") == 21,
        )
        self.edgectl("twin", "get", thermo)
        self.edgectl("twin", "set", thermo, f"target_temp={NEW_TARGET}")
        offset, lines = self.wait(
            f"{thermo} receiving the delta target_temp {NEW_TARGET}",
            lambda: self.device_lines(thermo, offset, "reported {"),
        )
        self.note(f"{thermo}'s log ({self.rel(self.data / 'devices' / (thermo + '.log'))}):")
        self.output("\n".join(lines))
        self.wait(
            f"{thermo}'s report of target_temp {NEW_TARGET} at the hub",
            lambda: (
                self.device_status(thermo).get("reported", {}).get("target_temp") == NEW_TARGET
                and self.device_status(thermo).get("delta") == {}
            ),
        )
        self.edgectl("twin", "get", thermo)
        self.wait(f"readings of {meter} at the hub", self.readings_at_hub)
        self.edgectl("telemetry", meter, keep=2)
        self.ok(
            "desired → node → delta → device → report → node → hub; the meter's "
            "readings flow to the hub"
        )

        self.section("4. the hub stops: the nodes keep serving their devices and queue reports")
        before = len(set(self.readings_at_hub()))
        hub = self.children.pop("edgehub")
        self.command(f"kill -TERM {hub.pid}   # edgehub")
        code = hub.stop()
        if code != 0:
            raise DemoError(f"the hub exited with status {code} on SIGTERM, not 0")
        for node in NODES:
            self.wait(f"{node} noticing the hub gone", partial(self.hub_gone, node))
        port = self.mqtt_ports[thermo_node]
        rr = [
            "mosquitto_rr",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-V",
            "mqttv311",
            "-t",
            f"$edge/devices/{thermo}/twin/get",
            "-e",
            f"$edge/devices/{thermo}/twin/get/accepted",
            "-m",
            '{"clientToken": "demo"}',
            "-W",
            "5",
        ]
        out = self.run(rr, shlex.join(rr))
        try:
            twin = json.loads(out)
        except ValueError:
            raise DemoError(f"{thermo_node} answered twin/get with {out!r}") from None
        if twin.get("desired", {}).get("target_temp") != NEW_TARGET:
            raise DemoError(f"{thermo_node}'s twin of {thermo} lost desired target_temp: {twin}")
        self.ok(
            f"{thermo_node} answered {thermo}'s twin/get from its own store "
            f"(desired target_temp {NEW_TARGET}) with the hub down"
        )
        self.wait(
            f"{QUEUED_READINGS} of {meter}'s readings queued in {meter_node}'s outbox",
            lambda: self.outbox(meter_node) >= QUEUED_READINGS + 1,
        )
        self.status_text(meter_node)
        app, app_node = APP
        sample = self.wait(f"a sample of {app} during the outage", lambda: self.sample(app_node))
        self.ok(
            f"{app} keeps running on {app_node} with the hub down (sample {sample['n']} on "
            f"{app_node}'s bus, pid {self.app_pid(app_node, app)})"
        )
        published = int(self.device_state(meter).get("published", 0))
        self.ok(
            f"{meter} has published {published} readings, the hub got {before} before it "
            f"stopped: the others wait in {meter_node}'s outbox (above)"
        )

        self.section("5. the hub starts again: everything queued arrives, nothing is lost")
        self.start_hub()
        self.wait(
            "both nodes Ready again", lambda: self.node_states() == dict.fromkeys(NODES, "Ready")
        )
        for node in NODES:
            self.wait(f"{node}'s outbox drained", partial(self.drained, node))
        published = int(self.device_state(meter).get("published", 0))
        readings = self.wait(
            f"all {published} readings of {meter} at the hub",
            lambda: self.all_readings(published),
        )
        twice = sorted(n for n, times in Counter(readings).items() if times > 1)
        if twice:
            raise DemoError(f"readings stored twice at the hub: {twice}")
        self.edgectl("telemetry", meter, keep=2)
        self.wait(
            f"{thermo}'s latest report at the hub",
            lambda: (
                self.device_status(thermo).get("reported")
                == self.device_state(thermo).get("reported")
            ),
        )
        self.edgectl("twin", "get", thermo)
        app, app_node = APP
        self.edgectl("logs", "app", app, "--node", app_node, "--tail", "3")
        self.wait("both nodes reporting an empty outbox to the hub", self.hub_sees_drained)
        self.edgectl("get", "nodes")
        self.ok(
            f"{meter} had published {published} readings (n = 0..{published - 1}); the hub "
            "has each of them exactly once: none lost, none twice"
        )
        self.ok(f"{thermo}'s reported state at the hub is the device's latest report")

    def stay_up(self) -> None:
        """Until a signal: say so (once) if a process the demo started exits by itself."""
        reported: set[str] = set()
        while True:
            for name, child in self.children.items():
                if (
                    name not in reported
                    and child.proc is not None
                    and child.proc.poll() is not None
                ):
                    reported.add(name)
                    print(
                        f"demo: WARNING: {name} exited with status {child.proc.returncode}; "
                        f"its log ({self.rel(child.log)}) ends with:\n{child.tail()}",
                        file=sys.stderr,
                        flush=True,
                    )
            time.sleep(STAY_UP_POLL)

    def explore(self) -> None:
        env = self.data / "env.sh"
        env.write_text(
            "# source this to use the demo's hub and nodes from a shell (scripts/demo.py)\n"
            f'export PATH={shlex.quote(str(BIN))}:"$PATH"\n'
            f"export EDGECTL_HUB={self.hub_url}\n"
            f"export SSL_CERT_FILE={shlex.quote(str(self.tls_cert))}\n"
            f"export KUBECONFIG={shlex.quote(str(self.data / 'kubeconfig'))}\n"
            f'export EDGECTL_TOKEN="$(cat {shlex.quote(str(self.data / "hub" / "admin.token"))})"\n'
        )
        a, b = (self.mqtt_ports[n] for n in NODES)
        thermo = THERMOSTAT[0]
        self.section("explore: the demo stays up; in another terminal")
        print(
            f"""
  cd {ROOT}
  source {self.rel(env)}
  edgectl get nodes -o wide
  edgectl get devices
  edgectl twin get {thermo}
  edgectl twin set {thermo} target_temp=19
  edgectl telemetry {METER[0]} --follow
  kubectl get nodes                          # kubectl works too (docs/kubectl.md)
  edgectl get apps
  edgectl logs app {APP[0]} --node {APP[1]} --follow
  edgenode status --config {self.rel(self.node_dir("node-a") / "node.toml")}
  mosquitto_sub -h 127.0.0.1 -p {a} -t '$edge/devices/#' -v     # node-a's bus
  mosquitto_sub -h 127.0.0.1 -p {b} -t '$edge/devices/#' -v     # node-b's bus
  tail -f {self.rel(self.data / "devices" / (thermo + ".log"))}

  logs: {self.rel(self.data)}/*/*.log, {self.rel(self.data)}/hub.log
  Ctrl-C stops everything the demo started.""",
            flush=True,
        )


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument(
        "--exit-after-story",
        action="store_true",
        help=f"stop everything after the story (also {EXIT_ENV}=1)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("EDGENODE_DEMO_DATA", ROOT / "demo-data")),
        help="data directory, emptied first (default demo-data/)",
    )
    args = parser.parse_args(argv)
    exit_after = args.exit_after_story or os.environ.get(EXIT_ENV, "") not in ("", "0")
    demo = Demo(args.data.resolve(), bold=sys.stdout.isatty())
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    code = 0
    try:
        demo.prepare()
        demo.story()
        demo.told = True
        demo.section(f"the story took {demo.elapsed().strip()}: every step checked")
        demo.explore()
        if not exit_after:
            demo.stay_up()
    except DemoError as exc:
        print(f"\ndemo: FAILED: {exc}", file=sys.stderr, flush=True)
        print(
            f"demo: the logs stay in {demo.rel(demo.data)} (hub.log, */node.log, "
            "devices/*.log, mqtt-*/mosquitto.log)",
            file=sys.stderr,
            flush=True,
        )
        code = 1
    except Stop as exc:
        print(f"\ndemo: {exc} received, stopping", flush=True)
        code = 0 if demo.told else 130  # Ctrl-C while it stays up is the normal end
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop_all()
        if demo.locked:
            with contextlib.suppress(OSError):
                (demo.data / "demo.pid").unlink()
        print("demo: every process it started has stopped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
