"""deploy/edgenode.service is a valid unit with the directives the issue requires."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
UNIT = ROOT / "deploy" / "edgenode.service"


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_is_type_notify_with_a_watchdog_restart_a_user_and_hardening():
    unit = directives()
    assert unit["Type"] == ["notify"]
    assert unit["WatchdogSec"]
    assert unit["Restart"] == ["always"]
    assert unit["StateDirectory"] == ["edgenode"]
    assert unit["DynamicUser"] == ["yes"]
    assert unit["ExecStart"][0].startswith("/opt/edgenode/bin/edgenode run --config ")
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
    }.items():
        assert unit[key] == [value], key


def test_systemd_accepts_the_unit(tmp_path):
    """systemd-analyze verify, with ExecStart pointing at this environment's edgenode."""
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing (Debian package systemd)"
    edgenode = Path(sys.executable).with_name("edgenode")
    unit = tmp_path / "edgenode.service"
    unit.write_text(UNIT.read_text().replace("/opt/edgenode/bin/edgenode", str(edgenode)))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr, result.stderr
