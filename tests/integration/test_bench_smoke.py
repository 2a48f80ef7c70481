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
    unfrozen = results["router_unfrozen"]
    assert set(unfrozen) == {"match_many", "match_flat"}
    matched = {run["targets_matched"] for shape in unfrozen.values() for run in shape.values()}
    assert matched == {results["router"]["rust"]["targets_matched"]}
    assert "router match_flat, GC on" in result.stdout
