"""``scripts/setup.sh`` (issue 18, a newcomer's first hour): a line per step on the terminal,
what apt, pip and cargo print only when a step fails, and no noise from probing for a
Python (pyenv's shims complain when run for a version that is not selected)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "setup.sh"
SETUP_TIMEOUT = 300.0
STEP_LINE = re.compile(r"^\x1b\[1m\[setup +\d+s\]\x1b\[0m \S")

pytestmark = pytest.mark.timeout(2 * SETUP_TIMEOUT)


def run_setup(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SETUP)],
        capture_output=True,
        text=True,
        timeout=SETUP_TIMEOUT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_the_set_up_prints_one_line_per_step_and_nothing_else():
    result = run_setup()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert [line for line in lines if not STEP_LINE.match(line)] == []
    text = "\n".join(lines)
    assert "building edgenode and its Rust extension" in text
    assert re.search(r"built: edgenode \S+ backend=rust", text)
    assert "ready: activate with" in text


def test_a_failing_step_shows_its_whole_output_and_stops_the_set_up():
    # An unknown target makes the build step fail with maturin's own explanation.
    result = run_setup({"CARGO_BUILD_TARGET": "bogus-unknown-none"})
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "FAILED: building the Rust extension" in output
    assert "bogus-unknown-none" in output  # the step's own output, shown in full
    assert "ready:" not in output


def test_probing_for_a_python_says_nothing(tmp_path):
    # A pyenv shim for a Python that is not selected: exists, complains, fails.
    shims = tmp_path / "shims"
    shims.mkdir()
    for version in ("python3.13", "python3.12"):
        shim = shims / version
        shim.write_text(f'#!/bin/sh\necho "pyenv: {version}: command not found" >&2\nexit 127\n')
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    result = subprocess.run(
        ["bash", "-c", f'source "{SETUP}" && pick_python'],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "pyenv" not in result.stdout + result.stderr
    assert result.stdout.strip() in ("python3.11", "python3")
