"""The benchmark script runs end to end on a tiny workload (numbers are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_benchmark_runs_on_both_backends_and_writes_its_results_file(tmp_path):
    output = tmp_path / "core.json"
    result = run_bench(
        "bench_core.py", "--scale", "0.002", "--repeats", "1", "--output", str(output)
    )
    results = json.loads(output.read_text())
    assert set(results["router"]) == {"rust", "python"}
    assert (
        results["router"]["rust"]["targets_matched"]
        == results["router"]["python"]["targets_matched"]
    )
    assert results["twin"]["rust"]["delta"] == results["twin"]["python"]["delta"]
    assert results["outbox"]["rust"]["messages"] == 2000
    assert "router match_many" in result.stdout
    unfrozen = results["router_unfrozen"]
    assert set(unfrozen) == {"match_many", "match_flat"}
    matched = {run["targets_matched"] for shape in unfrozen.values() for run in shape.values()}
    assert matched == {results["router"]["rust"]["targets_matched"]}
    assert "router match_flat, GC on" in result.stdout


def test_the_apps_benchmark_runs_on_a_small_fleet(tmp_path):
    """bench_apps.py end to end with 2 real nodes and one new revision."""
    output = tmp_path / "apps.json"
    run_bench("bench_apps.py", "--nodes", "2", "--changes", "1", "--output", str(output))
    report = json.loads(output.read_text())
    assert report["nodes"] == 2
    assert report["first_apply_seconds"] > 0
    assert len(report["new_revision_seconds"]) == 1


def test_the_disk_benchmark_runs_every_phase_against_real_processes(tmp_path):
    """bench/bench_disk.py on a tiny workload (a few seconds per phase, one setting): real
    hub, Mosquitto and node processes; the structure is checked, not the figures."""
    output = tmp_path / "disk.json"
    run_bench(
        "bench_disk.py",
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
    )
    results = json.loads(output.read_text())["results"]["normal"]
    assert {"idle_bytes_per_day", "offline_bytes_per_day", "bytes_per_report_lone"} <= set(results)
    (lone,) = results["runs"]["lone"]
    assert lone["reports"] >= 1  # the device's reports were acknowledged by the node
    assert lone["bytes"] > 0  # reports are durable: something reached the disk


def test_the_disk_benchmark_batch_sweep_runs_on_the_store(tmp_path):
    output = tmp_path / "batch.json"
    run_bench(
        "bench_disk.py",
        "--dir",
        str(tmp_path),
        "--sync",
        "normal",
        "--batch-sweep",
        "1,100",
        "--out",
        str(output),
    )
    sweep = json.loads(output.read_text())["sweep"]["normal"]
    assert set(sweep) == {"1", "100"}
    assert all(value > 0 for value in sweep.values())
