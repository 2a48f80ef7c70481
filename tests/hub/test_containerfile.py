"""cloud/Containerfile's contract: non-root user, data volume, health check, the serve
command of the issue. (scripts/check_containerfile.py runs its steps for real.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

CONTAINERFILE = Path(__file__).resolve().parents[2] / "cloud" / "Containerfile"


def test_the_image_runs_as_a_non_root_user_with_a_data_volume():
    text = CONTAINERFILE.read_text()
    final_stage = text.split("\nFROM ")[-1]
    user = re.search(r"^USER (\S+)$", final_stage, re.M)
    assert user is not None
    assert user.group(1) not in ("root", "0")
    assert 'VOLUME ["/var/lib/edgehub"]' in final_stage
    entry = json.loads(re.search(r"^ENTRYPOINT (.*)$", final_stage, re.M).group(1))
    assert entry[1:4] == ["serve", "--data", "/var/lib/edgehub"]


def test_the_health_check_command_passes_against_a_running_hub(hub):
    text = CONTAINERFILE.read_text()
    health = json.loads(re.search(r"HEALTHCHECK .* CMD (\[.*\])$", text, re.M).group(1))
    assert health[0] == "/opt/edgehub/bin/python"
    port = hub.api.rsplit(":", 1)[1]
    command = [sys.executable, *health[1:]]
    command[-1] = command[-1].replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    root = CONTAINERFILE.parents[1]
    assert subprocess.run(command, cwd=root, timeout=10, check=False).returncode == 0
    hub.stop()
    assert subprocess.run(command, cwd=root, timeout=10, check=False).returncode != 0
