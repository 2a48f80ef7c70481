"""The node benchmark runs end to end on a tiny workload (numbers are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_node_benchmark_runs_and_writes_its_results_file(tmp_path):
    output = tmp_path / "node.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_node.py"),
            "--scale",
            "0.01",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(output.read_text())
    assert results["startup"]["median_seconds"] > 0
    assert results["idle"]["rss_kib"] > 0
    assert results["apps"]["rss_kib"] > 0
    assert results["drain_1000000"]["records"] == 10_000
    assert "start-up to READY" in result.stdout
