"""The node's metrics with the endpoint off: every update is accepted and dropped, and
``prometheus_client`` (with the http.server/wsgiref it brings, ~2 MB of an idle node's
RSS) is never imported; with it on, the device layer's families are in the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgenode.node.metrics import Metrics

OUTBOX_STATS = {
    "messages": 3,
    "bytes": 120,
    "oldest_age": 1.5,
    "dropped_expired": 0,
    "dropped_quota": 1,
    "rejected": 2,
}

# A daemon with its device wiring built and its metrics updated, metrics endpoint off.
NODE_WITHOUT_METRICS = """
import sys
from edgenode.config import parse_config
from edgenode.node.daemon import Daemon
from edgenode.cli import node_services

config = parse_config(
    {"node": {"name": "n1", "data_dir": sys.argv[1]}, "metrics": {"listen": ""},
     "device": [{"name": "lamp"}]},
    sys.argv[1] + "/n.toml",
    {},
)
daemon = Daemon(config, node_services(config))
import json
daemon.metrics.set_outbox(json.loads(sys.argv[2]))
daemon.metrics.frames_in.inc()
assert not daemon.metrics.enabled
"""


def modules_loaded_by_a_node(tmp_path: Path, wanted: str, backend: str = "auto") -> str:
    """Build the node of NODE_WITHOUT_METRICS in a fresh interpreter; the sorted list of
    loaded modules for which the Python expression ``wanted`` (over ``m``) holds."""
    script = NODE_WITHOUT_METRICS + f"print(sorted(m for m in sys.modules if {wanted}))\n"
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), json.dumps(OUTBOX_STATS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "EDGENODE_BACKEND": backend},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_a_node_without_a_metrics_endpoint_never_imports_prometheus_client(tmp_path: Path):
    assert modules_loaded_by_a_node(tmp_path, "m.startswith('prometheus_client')") == "[]"


def test_disabled_metrics_take_every_update_and_serve_nothing():
    metrics = Metrics(enabled=False)
    metrics.set_link_state("connected")
    metrics.set_outbox(OUTBOX_STATS)
    metrics.frames_in.inc()
    metrics.uplink_acked.inc(5)
    metrics.add_collector(lambda: [])
    assert metrics.registry is None
    assert not metrics.enabled
    with pytest.raises(ValueError, match="not enabled"):
        metrics.serve("127.0.0.1", 0)


def test_enabled_metrics_include_what_a_collector_yields():
    from prometheus_client import generate_latest
    from prometheus_client.core import GaugeMetricFamily

    metrics = Metrics()
    metrics.set_outbox(OUTBOX_STATS, [(9, 0, 1)])
    metrics.frames_in.inc(2)
    metrics.add_collector(lambda: [GaugeMetricFamily("edgenode_devices", "Devices", value=4)])
    assert metrics.registry is not None
    text = generate_latest(metrics.registry).decode()
    assert "edgenode_devices 4.0" in text
    assert "edgenode_outbox_messages 3.0" in text
    assert 'edgenode_outbox_dropped{reason="quota"} 1.0' in text
    assert 'edgenode_outbox_dropped_by_priority{priority="9",reason="quota"} 1.0' in text
    assert "edgenode_link_frames_received_total 2.0" in text


def test_a_node_on_the_rust_backend_loads_no_pure_store_or_router_and_no_second_sqlite(
    tmp_path: Path,
):
    """The pure twin loads its modules on first use: the daemon needs only the payload
    reader of ``_pure.devtwin``, not the pure store with Python's sqlite3 (~1 MB RSS)."""
    wanted = "m in {'sqlite3', 'edgenode._pure.store', 'edgenode._pure.router'}"
    assert modules_loaded_by_a_node(tmp_path, wanted, backend="rust") == "[]"
