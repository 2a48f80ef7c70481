"""Run cloud/Containerfile's steps in a throwaway directory, without a container engine.

Every RUN line is executed with the image paths mapped into a temporary directory
(/src → the repository, /opt/..., /wheels → under the temp dir); apt-get and useradd lines
are skipped (system packages come from scripts/setup.sh; the tests run as root). Then the
ENTRYPOINT is started with free ports and the HEALTHCHECK command must succeed against it.

    python scripts/check_containerfile.py [--debug]   # --debug: maturin build without --release
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = ROOT / "cloud" / "Containerfile"
SKIPPED = ("apt-get", "useradd")
START_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    debug = "--debug" in sys.argv
    text = CONTAINERFILE.read_text()
    with tempfile.TemporaryDirectory(prefix="edgehub-image-") as tmp:
        mapping = {
            "/src": str(ROOT),
            "/opt/": f"{tmp}/opt/",
            "/wheels": f"{tmp}/wheels",
            "/var/lib/edgehub": f"{tmp}/data",
        }

        def mapped(command: str) -> str:
            for old, new in mapping.items():
                command = command.replace(old, new)
            return command

        for line in text.splitlines():
            if not line.startswith("RUN "):
                continue
            command = line[len("RUN ") :]
            if any(word in command for word in SKIPPED):
                print(f"skip: {command}")
                continue
            if debug:
                command = command.replace(" --release", "")
            command = mapped(command)
            print(f"run:  {command}", flush=True)
            subprocess.run(command, shell=True, check=True, cwd=tmp)
        api_port, link_port = free_port(), free_port()
        entry = json.loads(re.search(r"^ENTRYPOINT (.*)$", text, re.M).group(1))  # type: ignore[union-attr]
        entry = [
            mapped(arg)
            .replace("0.0.0.0:8443", f"127.0.0.1:{link_port}")
            .replace("0.0.0.0:8080", f"127.0.0.1:{api_port}")
            for arg in entry
        ]
        health = json.loads(re.search(r"CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
        health = [mapped(arg).replace("127.0.0.1:8080", f"127.0.0.1:{api_port}") for arg in health]
        Path(tmp, "data").mkdir(exist_ok=True)
        print(f"start: {shlex.join(entry)}", flush=True)
        hub = subprocess.Popen(entry)
        try:
            deadline = time.monotonic() + START_SECONDS
            while True:
                result = subprocess.run(health, capture_output=True, check=False)
                if result.returncode == 0:
                    print("healthcheck: ok")
                    return 0
                if time.monotonic() > deadline or hub.poll() is not None:
                    print(f"healthcheck failed: {result.stderr.decode()[-500:]}")
                    return 1
                time.sleep(0.5)
        finally:
            hub.terminate()
            hub.wait(10)


if __name__ == "__main__":
    sys.exit(main())
