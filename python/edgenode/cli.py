"""The ``edgenode`` command line: ``run``, ``status``, ``config``, ``version``.

CLI → Config → Daemon, as uvicorn does it: this module parses arguments, loads the
configuration (``edgenode.config``) and hands over to ``edgenode.node.Daemon``. Exit codes:
0 success, 1 runtime failure (the daemon could not start), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import edgenode
from edgenode.errors import ConfigError

if TYPE_CHECKING:
    from edgenode.config import Config
    from edgenode.service import NodeService

EXIT_CONFIG = 2
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
"""A log line under journald, which stamps every line itself."""
TIMESTAMPED_LOG_FORMAT = "%(asctime)s.%(msecs)03dZ " + LOG_FORMAT
"""A log line anywhere else (a terminal, a file, a container): UTC time first."""
LOG_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def stderr_is_journal(environ: Mapping[str, str] | None = None) -> bool:
    """Is stderr the journal? systemd sets ``JOURNAL_STREAM=DEVICE:INODE`` of the stream it
    connected the service to; a program started from that service inherits the variable
    with another stderr, so the numbers must be stderr's (systemd.exec(5))."""
    environ = os.environ if environ is None else environ
    device, sep, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        return False


def log_handler() -> logging.Handler:
    """Logging to stderr, timestamped unless the journal stamps the lines."""
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    else:
        formatter = logging.Formatter(TIMESTAMPED_LOG_FORMAT, LOG_TIME_FORMAT)
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    return handler


def version_text() -> str:
    """One line: package version, backend and machine architecture."""
    return f"edgenode {edgenode.__version__} backend={edgenode.backend} arch={platform.machine()}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgenode", description="edgenode edge runtime")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("version", help="print the version, backend and architecture")
    run = commands.add_parser("run", help="run the node daemon in the foreground")
    run.add_argument("--config", required=True, metavar="PATH", help="TOML config file")
    status = commands.add_parser("status", help="show the node's local state")
    status.add_argument("--config", required=True, metavar="PATH", help="TOML config file")
    status.add_argument("--json", action="store_true", help="print JSON")
    config = commands.add_parser("config", help="print or check a configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_commands.add_parser("print-default", help="print a commented default config")
    check = config_commands.add_parser("check", help="validate a config file")
    check.add_argument("--config", required=True, metavar="PATH", help="TOML config file")
    return parser


def _error(message: str) -> None:
    print(f"edgenode: error: {message}", file=sys.stderr)


def node_services(config: Config) -> list[NodeService]:
    """The services of a node, assembled in this one place: the Config consumer always,
    the device layer when ``Config.device_layer_enabled``, the App supervisor always (with
    ``[apps] enabled = false`` it runs nothing and reports each App Failed)."""
    from edgenode.apps.service import AppService
    from edgenode.node.configs import ConfigService

    configs = ConfigService(config)
    services: list[NodeService] = [configs]
    if config.device_layer_enabled:
        from edgenode.devices.service import DeviceService

        services.append(DeviceService(config))
    services.append(AppService(config, configs))
    return services


def _run(path: str) -> int:
    from edgenode.config import load_config
    from edgenode.node import Daemon

    try:
        config = load_config(path)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    logging.basicConfig(level=config.log.level.upper(), handlers=[log_handler()])
    # websockets logs every failed handshake at its own level; the link reports them.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    logging.getLogger("edgenode").info("%s starting, config %s", version_text(), config.source)
    return asyncio.run(Daemon(config, node_services(config)).run())


def _status(path: str, as_json: bool) -> int:
    from edgenode.config import load_config
    from edgenode.node.state import format_status, read_status

    try:
        config = load_config(path)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    status = read_status(
        Path(config.node.data_dir), config.node.name, config.hub.url, config.mqtt.enabled
    )
    if as_json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_status(status))
    # 0 whenever the local state could be read, whether or not the daemon or hub are up.
    return 1 if "store_error" in status else 0


def _config(args: argparse.Namespace) -> int:
    from edgenode.config import DEFAULT_CONFIG_TEXT, load_config

    if args.config_command == "print-default":
        sys.stdout.write(DEFAULT_CONFIG_TEXT)
        return 0
    try:
        config = load_config(args.config)
        if config.hub.url:
            config.hub_token()  # a token_file must be readable (the daemon reads it later)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    hub = config.hub.url or "none (standalone)"
    print(
        f"{config.source}: ok (node {config.node.name}, data_dir {config.node.data_dir}, hub {hub})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(version_text())
        return 0
    if args.command == "run":
        return _run(args.config)
    if args.command == "status":
        return _status(args.config, args.json)
    if args.command == "config":
        return _config(args)
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())
