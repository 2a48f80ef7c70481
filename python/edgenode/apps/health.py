"""Health checks: when to probe, what the results mean (:class:`HealthTracker`, pure,
time passed in), and the probes themselves (exec, http, tcp).

Rules (as Kubernetes' probes):

- the first probe runs ``initialDelaySeconds`` after the instance started, then one every
  ``periodSeconds`` (counted from the start of the previous probe; never two at once);
- a probe that does not answer within ``timeoutSeconds`` failed;
- an instance becomes ready at its first successful probe (an App without a health check
  is ready while it runs);
- ``failureThreshold`` failures in a row make it not ready and *unhealthy*: the
  supervisor stops it and restarts it per its restart policy (``Never``: it stays
  ``Failed``, reason ``Unhealthy``).

exec runs the command in the App's work dir with the App's environment (in the container
for ``runtime: container``) and succeeds on exit code 0; http succeeds on a status 200-399
to a GET (HTTPS without certificate checks, as Kubernetes does); tcp succeeds when a
connection to 127.0.0.1:PORT opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edgenode.apps.spec import HealthCheck

MAX_RESPONSE_LINE: Final = 4096
"""Bytes of an HTTP status line read at most."""
DETAIL_CHARS: Final = 200
"""Characters of a probe's failure detail kept for the status message."""


@dataclass(frozen=True)
class Verdict:
    ready: bool
    changed: bool
    """``ready`` changed with this result."""
    unhealthy: bool
    """``failureThreshold`` failures in a row: stop the instance."""


class HealthTracker:
    """One instance's health: when the next probe is due, and readiness."""

    def __init__(self, check: HealthCheck, started: float) -> None:
        self.check = check
        self.next_at = started + check.initial_delay
        self.failures = 0
        self.ready = False
        self.probing = False
        self.last_detail = ""

    def due(self, now: float) -> bool:
        return not self.probing and now >= self.next_at

    def deadline(self) -> float | None:
        return None if self.probing else self.next_at

    def start(self, now: float) -> None:
        self.probing = True
        self.next_at = now + self.check.period

    def record(self, ok: bool, detail: str = "") -> Verdict:
        self.probing = False
        was = self.ready
        if ok:
            self.failures = 0
            self.ready = True
            self.last_detail = ""
        else:
            self.failures += 1
            self.last_detail = detail[:DETAIL_CHARS]
            if self.failures >= self.check.failure_threshold:
                self.ready = False
        unhealthy = not ok and self.failures >= self.check.failure_threshold
        return Verdict(self.ready, self.ready != was, unhealthy)


# --- Probes ---------------------------------------------------------------------------------


async def probe_exec(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float
) -> tuple[bool, str]:
    from edgenode.apps.process import run_command

    result = await run_command(argv, timeout=timeout, cwd=cwd, env=env)
    if result.code == 0:
        return True, ""
    if result.code is None:
        return False, f"{argv[0]}: {result.error}"
    last = result.output.decode(errors="replace").strip().splitlines()[-1:]
    return False, f"{argv[0]} exited with code {result.code}" + (f": {last[0]}" if last else "")


async def probe_tcp(port: int, timeout: float, host: str = "127.0.0.1") -> tuple[bool, str]:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return False, f"tcp {host}:{port}: no connection within {timeout:g} s"
    except OSError as exc:
        return False, f"tcp {host}:{port}: {exc.strerror or exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, ""


async def probe_http(url: str, timeout: float) -> tuple[bool, str]:
    """GET ``url``; success on a status of 200-399 (the body is not read)."""
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    context = None
    if secure:
        import ssl

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=context)
            host_header = parts.netloc.rpartition("@")[2]
            writer.write(
                f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: edgenode-health"
                "\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            line = await reader.readline()
    except TimeoutError:
        return False, f"GET {url}: no answer within {timeout:g} s"
    except (OSError, ValueError) as exc:
        return False, f"GET {url}: {getattr(exc, 'strerror', None) or exc}"
    finally:
        if writer is not None:
            writer.close()
    fields = line[:MAX_RESPONSE_LINE].split()
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        return False, f"GET {url}: not an HTTP answer"
    status = int(fields[1])
    if 200 <= status < 400:
        return True, ""
    return False, f"GET {url}: HTTP {status}"
