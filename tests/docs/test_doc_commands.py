"""Every command in README.md and docs/*.md runs, so the docs cannot rot (issue 7).

The test extracts the fenced ``sh`` and ``console`` blocks (``doc_blocks.py``) and runs
them for real, in document order (README.md, then docs/ by name), in one environment it
provides:

- a temporary working directory holding the files the docs declare with
  ``<!-- doc-test: file NAME -->`` (``node.toml``, ``fleet.yaml``, ...);
- a real Mosquitto on a free port; the mosquitto clients find it through their own
  option files (``$XDG_CONFIG_HOME/mosquitto_pub`` etc. holding ``-p PORT``), so the
  documented ``-h localhost`` commands run unchanged;
- a real ``edgehub serve`` on free ports, ``EDGECTL_HUB`` and ``EDGECTL_TOKEN`` set as
  docs/edgectl.md describes;
- node ``ship-7`` joined to it (label ``fleet=blue``), running ``edgenode run --config
  node.toml`` from docs/operations.md with ``EDGENODE_HUB_URL`` and ``EDGENODE_MQTT_PORT``
  pointing at the test's hub and broker (the documented environment overrides);
- ``PATH`` starting with the virtualenv's ``bin`` (``edgenode``, ``edgectl``,
  ``edgehub``), ``HOME`` in the working directory (no operator config leaks in).

A block that cannot run here is marked ``<!-- doc-test: skip — REASON -->``; an unmarked
block that fails is a failure. A block marked ``<!-- doc-test: engine — REASON -->`` needs
a container engine: it runs as a script from the repository's root where one exists (and
is skipped, saying so, where none does), then everything it named is removed. Console
blocks check the output the docs show (``...`` stands for volatile text such as times and
tokens).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from doc_blocks import (
    DIRECTIVES,
    Block,
    indented_runnable_fences,
    missing_output,
    read_blocks,
    stray_directives,
)

from deploy.engine import docker, require_engine
from hub.conftest import RunningHub
from integration.devices.mqtt_broker import Broker, free_port

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [block for doc in DOCS for block in read_blocks(doc)]
RUNNABLE = [block for block in BLOCKS if block.runnable]
ENGINE_BLOCKS = [block for block in BLOCKS if block.directive == "engine"]
ENGINE_TIMEOUT = 900.0
"""Bound of a container block (a cold debootstrap and image build: minutes)."""
COMMAND_TIMEOUT = 30.0
"""Bound of one sh block or one console command (mosquitto_sub waits use -W below it)."""
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
HUB_HEARTBEAT = 5.0
NODE = "ship-7"
NODE_LABELS = {"fleet": "blue"}
MQTT_CLIENTS = ("mosquitto_pub", "mosquitto_sub", "mosquitto_rr")
BIN = Path(sys.executable).parent
MAX_SKIPPED_BLOCKS = 15
"""Blocks that cannot run here (system-wide installs, systemd, a container engine, the demo;
kubeedge.md's mapper example, which tests/integration/test_kubeedge_node.py runs; kubectl.md's
two, which need the hub on TLS and which tests/hub/test_kubectl.py runs)."""
MIN_COMMANDS_RUN = 40


@dataclass
class DocEnv:
    work: Path
    env: dict[str, str]
    hub: RunningHub
    broker: Broker
    node: subprocess.Popen[bytes]


def _status(work: Path, env: dict[str, str]) -> dict[str, object]:
    result = subprocess.run(
        [str(BIN / "edgenode"), "status", "--config", "node.toml", "--json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    return json.loads(result.stdout) if result.stdout.strip() else {}


def _node_ready(status: dict[str, object]) -> bool:
    hub = status.get("hub")
    layer = status.get("device_layer")
    return (
        isinstance(hub, dict)
        and hub.get("state") == "connected"
        and isinstance(layer, dict)
        and "lamp" in (layer.get("devices") or [])
        and bool(layer.get("broker_connected"))
    )


@pytest.fixture(scope="module")
def doc_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocEnv]:
    work = tmp_path_factory.mktemp("doc-work")
    for block in BLOCKS:
        if block.directive == "file":
            (work / block.argument).write_text(block.text)
    broker_dir = work / ".mosquitto"
    broker_dir.mkdir()
    broker = Broker(broker_dir, free_port())
    hub_dir = work / "hub-data"
    hub_dir.mkdir()
    # A calm heartbeat (the last --heartbeat wins): a node stalled by a loaded machine must
    # not flap to NotReady while the docs show it Ready.
    hub = RunningHub(hub_dir, ["--heartbeat", str(HUB_HEARTBEAT)])
    node: subprocess.Popen[bytes] | None = None
    try:
        broker.start()
        hub.start()
        config = work / ".config"
        config.mkdir()
        for client in MQTT_CLIENTS:
            (config / client).write_text(f"-p {broker.port}\n")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("EDGECTL_", "EDGENODE_", "XDG_"))
        }
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
            HOME=str(work),
            XDG_CONFIG_HOME=str(config),
            EDGECTL_HUB=hub.api,
            EDGECTL_TOKEN=hub.token,
        )
        (work / f"{NODE}.token").write_text(hub.node_add(NODE, NODE_LABELS) + "\n")
        node_env = {
            **env,
            "EDGENODE_HUB_URL": hub.link,
            "EDGENODE_MQTT_PORT": str(broker.port),
            "EDGENODE_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        }
        with (work / ".node.log").open("ab") as log:
            node = subprocess.Popen(
                [str(BIN / "edgenode"), "run", "--config", "node.toml"],
                cwd=work,
                env=node_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while not _node_ready(status := _status(work, env)):
            if time.monotonic() > deadline or node.poll() is not None:
                log_text = (work / ".node.log").read_text(errors="replace")
                raise AssertionError(f"node {NODE} not ready: {status}\n{log_text}")
            time.sleep(0.1)
        yield DocEnv(work, env, hub, broker, node)
    finally:
        if node is not None and node.poll() is None:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:  # SIGTERM ignored: still leave nothing running
                node.kill()
                node.wait(STOP_TIMEOUT)
        hub.stop()
        broker.stop()


def _run(script: str, doc_env: DocEnv) -> subprocess.CompletedProcess[str]:
    """``script`` under bash (errexit, pipefail) in the working directory; whatever it
    left running in its process group is killed afterwards."""
    process = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=doc_env.work,
        env=doc_env.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(
            f"timed out after {COMMAND_TIMEOUT} s:\n{script}\noutput:\n{output}"
        ) from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(process.args, process.returncode, output, "")


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.where for block in RUNNABLE])
def test_documented_commands_run(block: Block, doc_env: DocEnv):
    if block.lang == "sh":
        result = _run(block.text, doc_env)
        assert result.returncode == 0, (
            f"{block.where}: exit {result.returncode}\n{block.text}\noutput:\n{result.stdout}"
        )
        return
    for command in block.commands():
        result = _run(command.text, doc_env)
        shown = [line for line in command.expected if line.strip()]
        where = f"{block.where}: $ {command.text}"
        # A command may fail only where the docs show what it prints (an error example).
        assert result.returncode == 0 or shown, (
            f"{where}\nexit {result.returncode}, output:\n{result.stdout}"
        )
        missing = missing_output(command.expected, result.stdout)
        assert missing is None, (
            f"{where}\nthe docs show {missing!r}, the command printed:\n{result.stdout}"
        )


def test_every_block_that_does_not_run_says_why():
    unexplained = [
        block.where
        for block in BLOCKS
        if block.directive == "skip" and len(block.argument) < len("needs x")
    ]
    assert not unexplained, f"skip without a reason: {unexplained}"
    unknown = [b.where for b in BLOCKS if b.directive and b.directive not in DIRECTIVES]
    assert not unknown, f"unknown doc-test directives: {unknown}"


def test_doc_test_comments_sit_right_before_a_fence():
    stray = [line for doc in DOCS for line in stray_directives(doc)]
    assert not stray, stray


def test_no_runnable_block_hides_inside_a_list():
    hidden = [where for doc in DOCS for where in indented_runnable_fences(doc)]
    assert not hidden, f"indented sh/console fences are not extracted: {hidden}"


def test_files_declared_by_the_docs_have_distinct_names():
    names = [block.argument for block in BLOCKS if block.directive == "file"]
    assert names, "the docs declare no files (node.toml is expected)"
    assert len(names) == len(set(names)), names
    assert all(name and "/" not in name for name in names), names


def test_the_skip_list_stays_short():
    """Every skipped block is one a reviewer let in: raising MAX_SKIPPED_BLOCKS is a visible
    change. The counts are printed (``pytest -s``) for the record."""
    skipped = [b for b in BLOCKS if b.lang in ("sh", "console") and b.directive == "skip"]
    ran = sum(len(block.commands()) for block in RUNNABLE)
    print(
        f"doc commands: {ran} run in {len(RUNNABLE)} blocks; "
        f"{sum(len(b.commands()) for b in skipped)} skipped in {len(skipped)} blocks"
    )
    assert len(skipped) <= MAX_SKIPPED_BLOCKS, [f"{b.where}: {b.argument}" for b in skipped]
    assert ran >= MIN_COMMANDS_RUN


def test_the_readme_marks_where_the_demo_transcript_goes():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- demo-transcript: start -->", "<!-- demo-transcript: end -->"
    assert text.count(start) == 1
    assert text.count(end) == 1
    assert text.index(start) < text.index(end)


def _engine_names(text: str) -> dict[str, list[str]]:
    """What a container block creates, by the names its commands give."""
    return {
        "container": re.findall(r"docker run\b[^\n]*?--name[ =](\S+)", text),
        "volume": re.findall(r"docker volume create (\S+)", text),
        "image": re.findall(r"docker build\b[^\n]*?-t (\S+)", text),
        "port": re.findall(r"-p (\d+):\d+", text),
    }


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(ENGINE_TIMEOUT + 120)
@pytest.mark.parametrize("block", ENGINE_BLOCKS, ids=[block.where for block in ENGINE_BLOCKS])
def test_container_blocks_run_where_there_is_an_engine(block: Block):
    require_engine()
    names = _engine_names(block.text)
    assert names["container"], f"{block.where}: no docker run --name: nothing to check or clean"
    # Never touch what the machine's owner runs under the same names: say so and stop.
    taken = [
        f"{kind} {name}"
        for kind in ("container", "volume")
        for name in names[kind]
        if docker(
            kind if kind == "volume" else "container", "inspect", name, check=False
        ).returncode
        == 0
    ] + [f"port {port}" for port in names["port"] if _port_busy(int(port))]
    assert not taken, f"{block.where} needs these free on this machine: {taken}"
    stages = set(docker("images", "-q", "-f", "label=org.edgenode.stage=build").stdout.split())
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        # The build scripts/setup.sh made (seconds) instead of a release build (minutes).
        "EDGENODE_WHEELHOUSE_PROFILE": "dev",
    }
    try:
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block.text],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=ENGINE_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, (
            f"{block.where}: exit {result.returncode}\n{block.text}\n"
            f"output:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
        assert result.stdout.strip(), f"{block.where}: printed nothing (the admin token?)"
    finally:
        for name in names["container"]:
            docker("rm", "-f", "-v", name, check=False)
        for name in names["volume"]:
            docker("volume", "rm", "-f", name, check=False)
        for name in names["image"]:
            docker("rmi", "-f", name, check=False)
        new_stages = set(
            docker("images", "-q", "-f", "label=org.edgenode.stage=build").stdout.split()
        )
        for stage in new_stages - stages:
            docker("rmi", stage, check=False)
