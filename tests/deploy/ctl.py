"""``edgectl`` on the host against a hub in a container, read the way an operator reads it:
the table of ``edgectl get nodes`` (NAME, STATUS, REVISION, LAG, ...)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
CTL_TIMEOUT = 30.0


@dataclass
class Ctl:
    hub: str
    """The operator API's URL, e.g. http://127.0.0.1:PORT."""
    token_file: Path
    home: Path
    """HOME for edgectl: no operator config of the machine leaks in."""
    ca_file: Path | None = None

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECTL_")}
        env["HOME"] = str(self.home)
        if self.ca_file is not None:  # edgectl uses Python's default trust store
            env["SSL_CERT_FILE"] = str(self.ca_file)
        return subprocess.run(
            [str(BIN / "edgectl"), "--hub", self.hub, "--token-file", str(self.token_file), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT,
            env=env,
            check=False,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, f"edgectl {' '.join(args)}: {result.stderr}{result.stdout}"
        return result.stdout

    def node_add(self, name: str, *labels: str) -> str:
        """``edgectl node add NAME``: the join token (the last line it prints)."""
        options = [arg for label in labels for arg in ("--label", label)]
        return self.ok("node", "add", name, *options).strip().splitlines()[-1].strip()

    def nodes(self) -> dict[str, dict[str, str]]:
        """``edgectl get nodes`` as {name: {column: value}} ({} while the hub is away)."""
        result = self.run("get", "nodes")
        if result.returncode != 0:
            return {}
        lines = [line.split() for line in result.stdout.splitlines() if line.strip()]
        if not lines or lines[0][:1] != ["NAME"]:
            return {}
        header = lines[0]
        return {row[0]: dict(zip(header, row, strict=False)) for row in lines[1:]}

    def in_sync(self, *names: str) -> dict[str, dict[str, str]] | None:
        """The rows of ``names`` when every one is Ready with LAG 0, else None."""
        rows = self.nodes()
        if all(rows.get(n, {}).get("STATUS") == "Ready" for n in names) and all(
            rows[n].get("LAG") == "0" for n in names
        ):
            return rows
        return None
