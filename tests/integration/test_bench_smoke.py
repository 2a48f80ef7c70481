"""The benchmark script runs end to end on a tiny workload (numbers are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_runs_on_both_backends_and_writes_its_results_file(tmp_path):
    output = tmp_path / "core.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_core.py"),
            "--scale",
            "0.002",
            "--repeats",
            "1",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(output.read_text())
    assert set(results["router"]) == {"rust", "python"}
    assert (
        results["router"]["rust"]["targets_matched"]
        == results["router"]["python"]["targets_matched"]
    )
    assert results["twin"]["rust"]["delta"] == results["twin"]["python"]["delta"]
    assert results["outbox"]["rust"]["messages"] == 2000
    assert "router match_many" in result.stdout


def test_the_disk_benchmark_runs_every_phase_against_real_processes(tmp_path):
    """bench/bench_disk.py on a tiny workload (a few seconds per phase, one setting): real
    hub, Mosquitto and node processes; the structure is checked, not the figures."""
    output = tmp_path / "disk.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_disk.py"),
            "--dir",
            str(tmp_path),
            "--sync",
            "normal",
            "--phases",
            "idle,offline,lone",
            "--idle-seconds",
            "1",
            "--persist-interval",
            "0.5",
            "--report-seconds",
            "2",
            "--warmup",
            "0.5",
            "--out",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(output.read_text())["results"]["normal"]
    assert {"idle_bytes_per_day", "offline_bytes_per_day", "bytes_per_report_lone"} <= set(results)
    (lone,) = results["runs"]["lone"]
    assert lone["reports"] >= 1  # the device's reports were acknowledged by the node
    assert lone["bytes"] > 0  # reports are durable: something reached the disk


def test_the_disk_benchmark_batch_sweep_runs_on_the_store(tmp_path):
    output = tmp_path / "batch.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_disk.py"),
            "--dir",
            str(tmp_path),
            "--sync",
            "normal",
            "--batch-sweep",
            "1,100",
            "--out",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    sweep = json.loads(output.read_text())["sweep"]["normal"]
    assert set(sweep) == {"1", "100"}
    assert all(value > 0 for value in sweep.values())
