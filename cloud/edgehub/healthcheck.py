"""The container's health check: ``python -m edgehub.healthcheck`` exits 0 when the
``edgehub serve`` running next to it answers ``GET /healthz`` with 200.

It reads the hub's own command line (``/proc/PID/cmdline``), so it follows whatever the
operator passed to ``docker run``: another ``--api-listen`` port, or
``--tls-cert``/``--tls-key`` (then it speaks HTTPS, without checking the certificate: it
asks its own process on loopback whether it is alive, not who it is). Used by
``cloud/Containerfile``'s ``HEALTHCHECK``.

It runs every 30 s, so it stays light: it does not import the hub (aiohttp and the rest
cost 0.9 s of CPU per check, 0.1 s without them); ``parser()`` repeats the two options it
reads, and a test holds it equal to ``edgehub.cli.build_parser()``.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT = 4.0
"""Seconds for the request (the HEALTHCHECK's --timeout is 5 s)."""
ANY_ADDRESS = ("", "0.0.0.0", "::")
DEFAULT_API_LISTEN = "127.0.0.1:8080"
"""``edgehub serve``'s default ``--api-listen`` (``edgehub.cli.DEFAULT_API_LISTEN``)."""


def parser() -> argparse.ArgumentParser:
    """The part of ``edgehub serve``'s options the health check needs (abbreviations too)."""
    serve = argparse.ArgumentParser(add_help=False)
    serve.add_argument("--api-listen", default=DEFAULT_API_LISTEN)
    serve.add_argument("--tls-cert")
    serve.add_argument("--tls-key")
    return serve


def hub_arguments(proc: Path = Path("/proc")) -> argparse.Namespace | None:
    """The parsed ``serve`` arguments of the first ``edgehub serve`` process found."""
    serve = parser()
    for entry in sorted(proc.glob("[0-9]*"), key=lambda path: int(path.name)):
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone, or not ours
            continue
        if "serve" not in argv or not any("edgehub" in arg for arg in argv[: argv.index("serve")]):
            continue
        args, _unknown = serve.parse_known_args(argv[argv.index("serve") + 1 :])
        return args
    return None


def health_url(args: argparse.Namespace) -> str:
    host, _, port = str(args.api_listen).rpartition(":")
    host = host.strip("[]")
    if host in ANY_ADDRESS:
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if args.tls_cert else 'http'}://{host}:{port}/healthz"


def main() -> int:
    args = hub_arguments()
    if args is None:
        print("unhealthy: no edgehub serve process found")
        return 1
    url = health_url(args)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT, context=context) as response:
            status = int(response.status)
    except (OSError, urllib.error.URLError) as exc:
        print(f"unhealthy: {url}: {exc}")
        return 1
    print(f"{'healthy' if status == 200 else 'unhealthy'}: {url}: HTTP {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
