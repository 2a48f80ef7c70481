"""``edgectl``: the operator CLI of the hub, kubectl-like.

Hub URL and admin token come from ``--hub`` / ``--token-file``, else the environment
(``EDGECTL_HUB``: API URL, ``EDGECTL_TOKEN``: the token itself), else
``~/.config/edgectl/config.toml`` (``hub = "..."``, ``token_file = "..."`` or ``token``).
Exit status: 0 ok, 1 the hub refused (the message names document index and field), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from edgehub import ctl_apps
from edgehub.kinds import REGISTRY
from edgehub.resources import resolve_kind

DEFAULT_HUB = "http://127.0.0.1:8080"
CONFIG_PATH = Path("~/.config/edgectl/config.toml")
REQUEST_TIMEOUT = 30.0
TELEMETRY_PAGE = 1000
"""Records per request of `edgectl telemetry` (the API's largest page)."""


class CtlError(Exception):
    """A failure to report on stderr (exit status 1)."""


class Client:
    def __init__(self, hub: str, token: str) -> None:
        self.hub = hub.rstrip("/")
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        req = urllib.request.Request(self.hub + path, data=body, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if body is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw).get("error", raw.decode())
            except (ValueError, AttributeError):
                message = raw.decode(errors="replace")
            raise CtlError(f"{exc.code}: {message}") from None
        except urllib.error.URLError as exc:
            raise CtlError(f"cannot reach the hub at {self.hub}: {exc.reason}") from None

    def stream(self, path: str) -> Any:
        req = urllib.request.Request(self.hub + path)
        req.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(req)
        except urllib.error.HTTPError as exc:
            raise CtlError(f"{exc.code}: {exc.read().decode(errors='replace')}") from None
        except urllib.error.URLError as exc:
            raise CtlError(f"cannot reach the hub at {self.hub}: {exc.reason}") from None


def _config() -> dict[str, Any]:
    path = CONFIG_PATH.expanduser()
    if not path.exists():
        return {}
    with path.open("rb") as handle:
        return tomllib.load(handle)


def make_client(args: argparse.Namespace) -> Client:
    config = _config()
    hub = args.hub or os.environ.get("EDGECTL_HUB") or config.get("hub") or DEFAULT_HUB
    token: str | None = None
    token_file = args.token_file
    if token_file is None:
        token = os.environ.get("EDGECTL_TOKEN") or config.get("token")
        token_file = None if token else config.get("token_file")
    if token is None and token_file is not None:
        try:
            token = Path(token_file).expanduser().read_text().strip()
        except OSError as exc:
            raise CtlError(f"cannot read token file {token_file}: {exc.strerror}") from None
    if not token:
        raise CtlError("no admin token: use --token-file, EDGECTL_TOKEN or the config file")
    return Client(str(hub), token)


def _kind(text: str) -> str:
    try:
        return resolve_kind(text)
    except ValueError as exc:
        raise CtlError(str(exc)) from None


def rows_for(kind: str, items: list[dict[str, Any]], wide: bool) -> list[list[str]]:
    """The table of ``items`` (resource views) with the kind's columns (the registry's)."""
    return REGISTRY.get(kind).table(items, wide, time.time())


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = [
        "   ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def cmd_get(client: Client, args: argparse.Namespace) -> None:
    if args.kind.lower() in ("artifact", "artifacts"):
        listing = client.request("GET", "/v1/artifacts")
        items = listing["items"]
        if args.name:
            items = [i for i in items if i["digest"].startswith(args.name)]
        if args.output in ("json", "yaml"):
            dump = json.dumps({"items": items}, indent=2)
            print(dump if args.output == "json" else yaml.safe_dump({"items": items}), end="\n")
        elif not items:
            print("No artifacts found.", file=sys.stderr)
        else:
            print(table(ctl_apps.artifacts_table(items, time.time())))
        return
    kind = _kind(args.kind)
    plural = REGISTRY.get(kind).plural
    if args.name:
        items = [client.request("GET", f"/v1/{plural}/{urllib.parse.quote(args.name)}")]
    else:
        query = f"?labelSelector={urllib.parse.quote(args.selector)}" if args.selector else ""
        items = client.request("GET", f"/v1/{plural}{query}")["items"]
    if args.output == "json":
        print(json.dumps(items[0] if args.name else {"items": items}, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(items[0] if args.name else {"items": items}, sort_keys=False), end="")
    elif not items:
        print(f"No {plural} found.", file=sys.stderr)
    else:
        print(table(rows_for(kind, items, args.output == "wide")))


def cmd_describe(client: Client, args: argparse.Namespace) -> None:
    kind = _kind(args.kind)
    item = client.request("GET", f"/v1/{REGISTRY.get(kind).plural}/{urllib.parse.quote(args.name)}")
    print(yaml.safe_dump(item, sort_keys=False), end="")


def cmd_delete(client: Client, args: argparse.Namespace) -> None:
    kind = _kind(args.kind)
    client.request("DELETE", f"/v1/{REGISTRY.get(kind).plural}/{urllib.parse.quote(args.name)}")
    print(f"{kind.lower()}/{args.name} deleted")


def cmd_apply(client: Client, args: argparse.Namespace) -> None:
    source = "<stdin>" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CtlError(f"{source}: {exc}") from None
    try:
        result = client.request("POST", "/v1/apply", text.encode(), "application/yaml")
    except CtlError as exc:
        raise CtlError(f"{source}: {exc}") from None
    for item in result["results"]:
        print(apply_line(item))
        for warning in item.get("warnings", ()):
            print(f"Warning: {item['kind'].lower()}/{item['name']}: {warning}", file=sys.stderr)


def apply_line(item: dict[str, Any]) -> str:
    """One line of ``apply``'s output: ``device/x created``, and what a KubeEdge manifest
    became (its ID, what of it edgenode ignores) or why a document was skipped."""
    line = f"{item['kind'].lower()}/{item['name']} {item['action']}"
    if item.get("reason"):
        line += f": {item['reason']}"
    if item.get("kubeedge"):
        line += f" (KubeEdge device {item['kubeedge']}"
        ignored = item.get("ignored") or []
        if ignored:
            line += f"; ignored: {', '.join(str(path) for path in ignored)}"
        line += ")"
    return line


def _parse_labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CtlError(f"--label wants k=v, got {pair!r}")
        labels[key] = value
    return labels


def cmd_node(client: Client, args: argparse.Namespace) -> None:
    name = urllib.parse.quote(args.name)
    if args.node_command == "add":
        body = json.dumps({"labels": _parse_labels(args.label or [])}).encode()
        result = client.request("POST", f"/v1/nodes/{name}/token", body)
        print(f"node/{args.name} created; its join token (shown once) is on the next line")
        print(result["token"])
    else:
        result = client.request("POST", f"/v1/nodes/{name}/revoke", b"{}")
        print(f"node/{args.name} revoked ({result['revoked']} token(s))")


def cmd_twin(client: Client, args: argparse.Namespace) -> None:
    name = urllib.parse.quote(args.device)
    if args.twin_command == "get":
        item = client.request("GET", f"/v1/devices/{name}")
        twin = {
            "desired": item["spec"].get("desired", {}),
            "reported": item["status"].get("reported", {}),
            "delta": item["status"].get("delta", {}),
            "versions": item["status"].get("versions", {}),
        }
        print(json.dumps(twin, indent=2, sort_keys=True))
        return
    patch: dict[str, Any] = {}
    for pair in args.pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CtlError(f"twin set wants key=value, got {pair!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw  # not JSON: a plain string
        target = patch
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    item = client.request("PATCH", f"/v1/devices/{name}/desired", json.dumps(patch).encode())
    version = item.get("status", {}).get("versions", {}).get("desired")
    print(f"device/{args.device} desired set (version {version})")


def cmd_watch(client: Client, args: argparse.Namespace) -> None:
    kind = _kind(args.kind)
    with client.stream(f"/v1/watch/{REGISTRY.get(kind).plural}") as stream:
        for line in stream:
            event = json.loads(line)
            obj = event.get("object") or {}
            name = obj.get("metadata", {}).get("name", event.get("name"))
            print(
                f"{event['type']}\t{kind.lower()}/{name}\t{event.get('revision', '')}", flush=True
            )


def cmd_telemetry(client: Client, args: argparse.Namespace) -> None:
    name = urllib.parse.quote(args.device)
    if args.follow:
        with client.stream(f"/v1/devices/{name}/telemetry?follow=1") as stream:
            for line in stream:
                print(line.decode().rstrip(), flush=True)
        return
    # Every record, page by page (the API returns at most TELEMETRY_PAGE per request).
    after = 0
    while items := client.request(
        "GET", f"/v1/devices/{name}/telemetry?after={after}&limit={TELEMETRY_PAGE}"
    )["items"]:
        for item in items:
            print(json.dumps(item))
        after = items[-1]["id"]


def cmd_artifact(client: Client, args: argparse.Namespace) -> None:
    ctl_apps.cmd_artifact(client, args, CtlError)


def cmd_logs(client: Client, args: argparse.Namespace) -> None:
    ctl_apps.cmd_logs(client, args, CtlError)


def cmd_rollout(client: Client, args: argparse.Namespace) -> None:
    code = ctl_apps.cmd_rollout(client, args, CtlError)
    if code:
        raise SystemExit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgectl", description="operate an edgenode hub")
    parser.add_argument("--hub", help=f"operator API URL (default: $EDGECTL_HUB, {DEFAULT_HUB})")
    parser.add_argument("--token-file", help="file holding the admin token")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("apply", help="create or update resources from YAML")
    p.add_argument("-f", "--filename", dest="file", required=True, help="FILE or - for stdin")
    p = sub.add_parser("get", help="list resources or show one")
    p.add_argument("kind")
    p.add_argument("name", nargs="?")
    p.add_argument("-l", "--selector", help="label selector, e.g. env=prod,zone in (a,b)")
    p.add_argument("-o", "--output", choices=["wide", "yaml", "json"])
    p = sub.add_parser("describe", help="one resource in full, with status")
    p.add_argument("kind")
    p.add_argument("name")
    p = sub.add_parser("delete", help="delete a resource")
    p.add_argument("kind")
    p.add_argument("name")
    node = sub.add_parser("node", help="node tokens").add_subparsers(
        dest="node_command", required=True
    )
    p = node.add_parser("add", help="register a node and print its join token")
    p.add_argument("name")
    p.add_argument("--label", action="append", help="k=v (repeatable)")
    p = node.add_parser("revoke", help="revoke a node's token")
    p.add_argument("name")
    twin = sub.add_parser("twin", help="device twins").add_subparsers(
        dest="twin_command", required=True
    )
    p = twin.add_parser("set", help="merge-patch desired: key=value (JSON values parsed)")
    p.add_argument("device")
    p.add_argument("pairs", nargs="+")
    p = twin.add_parser("get", help="desired, reported and delta")
    p.add_argument("device")
    p = sub.add_parser("watch", help="stream changes of a kind")
    p.add_argument("kind")
    p = sub.add_parser("telemetry", help="a device's telemetry")
    p.add_argument("device")
    p.add_argument("--follow", "-f", action="store_true")
    ctl_apps.add_parsers(sub)
    return parser


COMMANDS = {
    "apply": cmd_apply,
    "get": cmd_get,
    "describe": cmd_describe,
    "delete": cmd_delete,
    "node": cmd_node,
    "twin": cmd_twin,
    "watch": cmd_watch,
    "telemetry": cmd_telemetry,
    "artifact": cmd_artifact,
    "logs": cmd_logs,
    "rollout": cmd_rollout,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        client = make_client(args)
        COMMANDS[args.command](client, args)
    except CtlError as exc:
        print(f"edgectl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
