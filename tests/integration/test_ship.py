"""The ship test's quick version (issue 15): ``scripts/ship-test.sh --quick`` end to end,
its checks asserted from the JSON it writes. Marker ``ship``: it needs root (network
namespaces, veth, tc), Mosquitto and libfaketime, and takes about 2 minutes on the shared
2-core machine (bench/README.md); scripts/test.sh runs it with the rest, ``pytest -m ship``
alone. Where it cannot run it is skipped with the one-line reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from bench_ship import why_not_here  # noqa: E402

pytestmark = pytest.mark.ship


def test_a_month_offline_behind_a_thin_lossy_link(tmp_path: Path) -> None:
    reason = why_not_here()
    if reason is not None:
        pytest.skip(f"the ship test cannot run here: it {reason}")
    out = tmp_path / "ship.json"
    result = subprocess.run(
        [str(ROOT / "scripts" / "ship-test.sh"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    shown = json.dumps({k: v for k, v in report.items() if k != "events"}, indent=1)
    # Desired state: every change the operator made while the node was away, applied.
    assert report["desired"]["ok"], shown
    assert report["desired"]["revisions_in_order"], shown
    # Every record delivered once or dropped by its policy, and the node counted it.
    for cls, counts in report["records"].items():
        assert counts["published"] > 0, (cls, shown)
        assert counts["delivered_more"] == 0, (cls, shown)
        assert counts["kept_past_ttl"] == 0, (cls, shown)
    assert report["records"]["alarm"]["missing"] == 0, shown
    assert report["records"]["alarm"]["delivered_once"] == report["records"]["alarm"]["published"]
    # The devices published at the rate asked, and the node took it from its bus.
    rate = report["rate"]
    assert rate["achieved_per_s"] >= 0.9 * rate["asked_per_s"], shown
    assert rate["node_took_per_s"] >= 0.9 * rate["achieved_per_s"], shown
    # The App: restarted by the node after each of its restarts, one instance at a time,
    # its new revision running after the link returned and reported by the hub.
    assert report["app"]["ok"], shown
    assert report["converge_s"] is not None, shown
    assert report["problems"] == [], shown
    assert result.returncode == 0, shown
