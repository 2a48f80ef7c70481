"""The foundation demo (run by the README's first command) tells its story on both backends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_demo_persists_queues_survives_a_restart_and_drains_in_priority_order(tmp_path, backend):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo_core.py")],
        cwd=tmp_path,
        env={**os.environ, "EDGENODE_BACKEND": backend},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert f"backend: {backend}; the node's database is demo-data/node.db" in lines
    assert "persisted revision 3" in lines
    assert "hub saw acks [3]" in lines
    assert 'delta {"fan": {"speed": 2}, "target_temp": 21.5}' in lines
    assert "after the device applied it {}" in lines
    assert "outbox messages 6" in lines
    assert "hub received sequences (alarm first) [6, 1, 2, 3, 4, 5]" in lines
    assert "outbox after acks 0" in lines
    assert (tmp_path / "demo-data" / "node.db").exists()
