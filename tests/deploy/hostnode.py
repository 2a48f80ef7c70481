"""``edgenode run`` on the host (the project's virtualenv), joined to a hub in a container."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
STOP_TIMEOUT = 10.0


class HostNode:
    def __init__(self, directory: Path, name: str) -> None:
        self.dir = directory
        self.name = name
        self.config = directory / f"{name}.toml"
        self.log = directory / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def configure(self, hub_url: str, token: str, **hub: Any) -> None:
        """No device layer (no Mosquitto needed), no metrics port, quick reconnects."""
        options = {"backoff_base": 0.1, "backoff_cap": 1.0, **hub}
        lines = [
            "[node]",
            f"name = {json.dumps(self.name)}",
            f"data_dir = {json.dumps(str(self.dir / (self.name + '-data')))}",
            "[hub]",
            f"url = {json.dumps(hub_url)}",
            f"token = {json.dumps(token)}",
            *(f"{key} = {json.dumps(value)}" for key, value in options.items()),
            "[mqtt]",
            "enabled = false",
            "[metrics]",
            'listen = ""',
        ]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "edgenode"), "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def status(self) -> dict[str, Any]:
        result = subprocess.run(
            [str(BIN / "edgenode"), "status", "--config", str(self.config), "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return json.loads(result.stdout) if result.stdout.strip() else {}

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after STOP_TIMEOUT; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        return self.proc.returncode
