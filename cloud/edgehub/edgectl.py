"""``edgectl``: the operator CLI of the hub, kubectl-like.

Hub URL and admin token come from ``--hub`` / ``--token-file``, else the environment
(``EDGECTL_HUB``: API URL, ``EDGECTL_TOKEN``: the token itself), else
``~/.config/edgectl/config.toml`` (``hub = "..."``, ``token_file = "..."`` or ``token``).
A hub URL without a scheme is ``http://``. Exit status: 0 ok, 1 the hub refused or went
away (the message names the file, document index and field), 2 usage.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from edgehub import ctl_apps
from edgehub.kinds import REGISTRY
from edgehub.kinds.base import SERVER_ANNOTATION_PREFIX
from edgehub.resources import ResourceError, parse_documents, resolve_kind
from edgehub.selectors import Selector, SelectorError, parse_selector

DEFAULT_HUB = "http://127.0.0.1:8080"
CONFIG_PATH = Path("~/.config/edgectl/config.toml")
CONFIG_KEYS = ("hub", "token", "token_file")
REQUEST_TIMEOUT = 30.0
TELEMETRY_PAGE = 1000
"""Records per request of `edgectl telemetry` (the API's largest page)."""
EDITORS = ("EDGECTL_EDITOR", "EDITOR")
"""Environment variables naming the editor of ``edgectl edit``, first set wins; else vi."""
DEFAULT_EDITOR = "vi"
DURATION = re.compile(r"^(\d+)([smhd]?)$")
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
EDIT_HEADER = """\
# Edit this {kind} and save to apply it; an unchanged file changes nothing.
# Lines starting with '#' are ignored. Server-managed fields are left out.
"""


class CtlError(Exception):
    """A failure to report on stderr (exit status 1)."""


class UsageError(Exception):
    """Bad input on the command line or in edgectl's config file (exit status 2)."""


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
            raise CtlError(f"{exc.code}: {_error_text(exc)}") from None
        except urllib.error.URLError as exc:
            raise CtlError(f"cannot reach the hub at {self.hub}: {exc.reason}") from None
        except (http.client.HTTPException, OSError) as exc:
            raise CtlError(f"lost the connection to the hub at {self.hub}: {exc}") from None

    def stream(self, path: str) -> Any:
        """The open response of a streaming request (the caller reads it)."""
        req = urllib.request.Request(self.hub + path)
        req.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(req)
        except urllib.error.HTTPError as exc:
            raise CtlError(f"{exc.code}: {_error_text(exc)}") from None
        except urllib.error.URLError as exc:
            raise CtlError(f"cannot reach the hub at {self.hub}: {exc.reason}") from None

    def lines(self, path: str, what: str) -> Iterator[bytes]:
        """The lines of a streaming response (watch, follow). It ends only with an error:
        the hub went away (stopped, restarted, network) — never silently."""
        response = self.stream(path)
        try:
            with response:
                yield from response
        except (http.client.HTTPException, OSError) as exc:
            raise CtlError(
                f"{what} ended: lost the connection to the hub at {self.hub} ({exc!r}); "
                "run the command again"
            ) from None
        raise CtlError(
            f"{what} ended: the hub at {self.hub} closed the connection (it stopped or "
            "restarted); run the command again"
        )


def _error_text(exc: urllib.error.HTTPError) -> str:
    raw = exc.read()
    try:
        return str(json.loads(raw).get("error", raw.decode()))
    except (ValueError, AttributeError):
        return raw.decode(errors="replace")


def _config() -> tuple[dict[str, Any], Path]:
    """edgectl's config file (its keys checked) and its path."""
    path = CONFIG_PATH.expanduser()
    if not path.exists():
        return {}, path
    try:
        with path.open("rb") as handle:
            config = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    for key, value in config.items():
        if key not in CONFIG_KEYS:
            raise UsageError(f"{path}: unknown key {key!r} (known: {', '.join(CONFIG_KEYS)})")
        if not isinstance(value, str):
            raise UsageError(f"{path}: {key}: expected a string, got {type(value).__name__}")
    return config, path


def hub_url(text: str, source: str) -> str:
    """The operator API's URL: ``http://`` added when there is no scheme (``127.0.0.1:8080``
    works); anything but http(s) with a host is a UsageError naming ``source``."""
    url = text.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        raise UsageError(
            f"{source}: {text!r} is a node-link URL; edgectl talks to the operator API "
            "(--api-listen of edgehub serve, http://HOST:8080 by default)"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise UsageError(f"{source}: invalid port in hub URL {text!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{source}: expected http://HOST:PORT or HOST:PORT, got {text!r}")
    return url.rstrip("/")


def make_client(args: argparse.Namespace) -> Client:
    config, config_path = _config()
    if args.hub:
        hub = hub_url(args.hub, "--hub")
    elif os.environ.get("EDGECTL_HUB"):
        hub = hub_url(os.environ["EDGECTL_HUB"], "EDGECTL_HUB")
    elif config.get("hub"):
        hub = hub_url(config["hub"], f"{config_path}: hub")
    else:
        hub = DEFAULT_HUB
    token: str | None = None
    token_file: Path | None = None
    token_source = "--token-file"
    if args.token_file is not None:
        token_file = Path(args.token_file).expanduser()
    else:
        token = os.environ.get("EDGECTL_TOKEN") or config.get("token")
        if not token and config.get("token_file"):
            # Relative to the config file, as the node's config does it.
            token_file = config_path.parent / Path(config["token_file"]).expanduser()
            token_source = f"token_file in {config_path}"
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise CtlError(
                f"cannot read token file {token_file} ({token_source}): {reason}"
            ) from None
    if not token:
        raise CtlError(
            f"no admin token: use --token-file, EDGECTL_TOKEN or token_file in {config_path}"
        )
    return Client(hub, token)


def _kind(text: str) -> str:
    try:
        return resolve_kind(text)
    except ValueError as exc:
        raise CtlError(str(exc)) from None


def _path(kind: str, name: str | None = None) -> str:
    plural = REGISTRY.get(kind).plural
    return f"/v1/{plural}" if name is None else f"/v1/{plural}/{urllib.parse.quote(name)}"


def rows_for(kind: str, items: list[dict[str, Any]], wide: bool) -> list[list[str]]:
    """The table of ``items`` (resource views) with the kind's columns (the registry's)."""
    return REGISTRY.get(kind).table(items, wide, time.time())


def table(rows: list[list[str]], widths: list[int] | None = None) -> str:
    widths = widths or column_widths(rows)
    lines = [
        "   ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def column_widths(rows: list[list[str]]) -> list[int]:
    return [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]


def _selector(text: str | None) -> Selector | None:
    if text is None:
        return None
    try:
        return parse_selector(text)
    except SelectorError as exc:
        raise UsageError(f"-l {text!r}: {exc}") from None


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels if isinstance(labels, dict) else {}


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
    if args.watch and args.output in ("yaml", "json"):
        raise UsageError("get -w prints a table: use it without -o yaml|json (or edgectl watch)")
    selector = _selector(args.selector)
    if args.name:
        item = client.request("GET", _path(kind, args.name))
        items, revision = [item], int(item["metadata"].get("resourceVersion") or 0)
    else:
        query = f"?labelSelector={urllib.parse.quote(args.selector)}" if args.selector else ""
        listing = client.request("GET", _path(kind) + query)
        items, revision = listing["items"], int(listing.get("revision") or 0)
    wide = args.output == "wide"
    if args.output == "json":
        print(json.dumps(items[0] if args.name else {"items": items}, indent=2))
        return
    if args.output == "yaml":
        print(yaml.safe_dump(items[0] if args.name else {"items": items}, sort_keys=False), end="")
        return
    rows = rows_for(kind, items, wide)
    if not items and not args.watch:
        print(f"No {REGISTRY.get(kind).plural} found.", file=sys.stderr)
        return
    widths = column_widths(rows)
    print(table(rows, widths) if items else table(rows[:1], widths), flush=True)
    if args.watch:
        _watch_rows(client, kind, args.name, selector, revision, wide, widths)


def _watch_rows(
    client: Client,
    kind: str,
    name: str | None,
    selector: Selector | None,
    listed: int,
    wide: bool,
    widths: list[int],
) -> None:
    """``get -w`` after the list: a row for every later change (the resource as the hub
    shows it then; a deleted one as it was)."""
    for event in _events(client, kind):
        obj = event.get("object") or {}
        obj_name = obj.get("metadata", {}).get("name", event.get("name"))
        if name is not None and obj_name != name:
            continue
        if event.get("type") == "ADDED" and _revision(event) <= listed:
            continue  # the watch starts with what exists: the list showed it
        if event.get("type") != "DELETED":
            try:
                obj = client.request("GET", _path(kind, obj_name))
            except CtlError:
                continue  # gone meanwhile: its DELETED event follows
        if selector is not None and not selector.matches(_labels(obj)):
            continue
        row = rows_for(kind, [obj], wide)[1]
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
        print(table([row], widths), flush=True)


def _revision(event: dict[str, Any]) -> int:
    """The revision of a watch event: its own, else its object's resourceVersion."""
    value = event.get("revision")
    if value is None:
        value = (event.get("object") or {}).get("metadata", {}).get("resourceVersion")
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _events(client: Client, kind: str) -> Iterator[dict[str, Any]]:
    """The watch stream of ``kind``: what exists (ADDED), then every change; it ends only
    with a CtlError saying how (the hub went away)."""
    for line in client.lines(f"/v1/watch/{REGISTRY.get(kind).plural}", "watch"):
        if line.strip():
            event = json.loads(line)
            if isinstance(event, dict) and event.get("type") == "ERROR":
                why = str(event.get("message", "it ended the watch"))
                raise CtlError(f"watch ended: the hub at {client.hub}: {why}; run it again")
            if isinstance(event, dict):
                yield event


def cmd_describe(client: Client, args: argparse.Namespace) -> None:
    kind = _kind(args.kind)
    item = client.request("GET", _path(kind, args.name))
    print(yaml.safe_dump(item, sort_keys=False), end="")


def cmd_delete(client: Client, args: argparse.Namespace) -> None:
    if args.file is None:
        if args.kind is None or args.name is None:
            raise UsageError("delete wants KIND NAME, or -f FILE")
        kind = _kind(args.kind)
        try:
            client.request("DELETE", _path(kind, args.name))
        except CtlError as exc:
            if not (args.ignore_not_found and str(exc).startswith("404:")):
                raise
        else:
            print(f"{kind.lower()}/{args.name} deleted")
        return
    if args.kind is not None:
        raise UsageError("delete takes KIND NAME or -f FILE, not both")
    # Every resource the file names, in its order; one already gone does not stop the rest.
    targets = [(kind, name) for kind, name, _ in _file_resources(args.file)]
    missing = []
    for kind, name in targets:
        try:
            client.request("DELETE", _path(kind, name))
        except CtlError as exc:
            if not str(exc).startswith("404:"):
                raise
            missing.append(f"{kind.lower()}/{name}")
            continue
        print(f"{kind.lower()}/{name} deleted", flush=True)
    if missing and not args.ignore_not_found:
        raise CtlError(f"{args.file}: not found: {', '.join(missing)}")


def _read_source(file: str) -> tuple[str, str]:
    """The text of ``-f FILE`` (``-``: stdin) and how messages name it."""
    source = "<stdin>" if file == "-" else file
    try:
        return (sys.stdin.read() if file == "-" else Path(file).read_text()), source
    except (OSError, UnicodeDecodeError) as exc:
        raise CtlError(f"{source}: {getattr(exc, 'strerror', None) or exc}") from None


def _file_resources(file: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, name, document) of every document of a YAML file, checked here so that
    errors name the file, the document and the field."""
    text, source = _read_source(file)
    try:
        docs = parse_documents(text)
    except ResourceError as exc:
        raise CtlError(f"{source}: {exc}") from None
    if not docs:
        raise CtlError(f"{source}: no documents")
    found = []
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise CtlError(f"{source}: document {index}: a document must be a map")
        kind_text = doc.get("kind")
        try:
            kind = resolve_kind(kind_text) if isinstance(kind_text, str) else None
        except ValueError as exc:
            raise CtlError(f"{source}: document {index}: kind: {exc}") from None
        if kind is None:
            raise CtlError(f"{source}: document {index}: kind: required")
        name = (doc.get("metadata") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise CtlError(f"{source}: document {index}: metadata.name: required")
        found.append((kind, name, doc))
    return found


def cmd_apply(client: Client, args: argparse.Namespace) -> None:
    text, source = _read_source(args.file)
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


def editable(item: dict[str, Any]) -> dict[str, Any]:
    """What an operator writes of a resource: apiVersion, kind, name, labels, their own
    annotations, spec (no status, no server-managed metadata or annotations)."""
    metadata = item.get("metadata") or {}
    annotations = {
        key: value
        for key, value in (metadata.get("annotations") or {}).items()
        if not key.startswith(SERVER_ANNOTATION_PREFIX)
    }
    body: dict[str, Any] = {
        "apiVersion": item["apiVersion"],
        "kind": item["kind"],
        "metadata": {"name": metadata["name"]},
    }
    if metadata.get("labels"):
        body["metadata"]["labels"] = dict(metadata["labels"])
    if annotations:
        body["metadata"]["annotations"] = annotations
    body["spec"] = item.get("spec") or {}
    return body


def _apply_one(client: Client, body: dict[str, Any], seen_version: str | None) -> str:
    """Apply one resource; refused if it changed at the hub since ``seen_version`` was
    read (someone else's change would be overwritten). The action (configured, ...)."""
    kind, name = body["kind"], body["metadata"]["name"]
    if seen_version is not None:
        current = client.request("GET", _path(kind, name))
        if current["metadata"].get("resourceVersion") != seen_version:
            raise CtlError(
                f"{kind.lower()}/{name} changed at the hub meanwhile (resourceVersion "
                f"{seen_version} -> {current['metadata'].get('resourceVersion')}); try again"
            )
    result = client.request("POST", "/v1/apply", json.dumps(body).encode(), "application/json")
    return str(result["results"][0]["action"])


def cmd_label(client: Client, args: argparse.Namespace) -> None:
    kind = _kind(args.kind)
    changes: dict[str, str | None] = {}
    for pair in args.labels:
        if pair.endswith("-") and "=" not in pair:
            changes[pair[:-1]] = None
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"label wants key=value or key- (to remove), got {pair!r}")
        changes[key] = value
    item = client.request("GET", _path(kind, args.name))
    body = editable(item)
    labels: dict[str, str] = dict(body["metadata"].get("labels") or {})
    for key, value in changes.items():
        if value is None:
            if labels.pop(key, None) is None:
                print(
                    f"edgectl: label {key!r} not found on {kind.lower()}/{args.name}",
                    file=sys.stderr,
                )
        elif key in labels and labels[key] != value and not args.overwrite:
            raise CtlError(
                f"{kind.lower()}/{args.name}: label {key!r} already has the value "
                f"{labels[key]!r}; --overwrite replaces it"
            )
        else:
            labels[key] = value
    body["metadata"]["labels"] = labels
    action = _apply_one(client, body, item["metadata"].get("resourceVersion"))
    print(f"{kind.lower()}/{args.name} {'not labeled' if action == 'unchanged' else 'labeled'}")


def cmd_edit(client: Client, args: argparse.Namespace) -> None:
    kind = _kind(args.kind)
    item = client.request("GET", _path(kind, args.name))
    original = editable(item)
    what = f"{kind.lower()}/{args.name}"
    text = EDIT_HEADER.format(kind=what) + yaml.safe_dump(original, sort_keys=False)
    handle, name = tempfile.mkstemp(prefix=f"edgectl-edit-{kind.lower()}-", suffix=".yaml")
    path = Path(name)
    with os.fdopen(handle, "w") as file:
        file.write(text)
    editor = next((os.environ[v] for v in EDITORS if os.environ.get(v)), DEFAULT_EDITOR)
    try:
        result = subprocess.run([*shlex.split(editor), str(path)], check=False)
    except OSError as exc:
        path.unlink()
        raise CtlError(f"cannot run the editor {editor!r}: {exc.strerror or exc}") from None
    if result.returncode != 0:
        path.unlink()
        raise CtlError(f"the editor {editor!r} exited with {result.returncode}; nothing applied")
    edited_text = path.read_text()
    kept = f"(your edit is kept in {path}: fix it, then edgectl apply -f {path})"
    try:
        docs = parse_documents(edited_text)
    except ResourceError as exc:
        raise CtlError(f"{path}: {exc} {kept}") from None
    if not docs:
        path.unlink()
        print(f"{what} unchanged (the file was emptied: edit cancelled)")
        return
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise CtlError(f"{path}: expected the one {what}, found {len(docs)} documents {kept}")
    edited = docs[0]
    if edited == original:
        path.unlink()
        print(f"{what} unchanged (nothing was edited)")
        return
    if (edited.get("kind"), (edited.get("metadata") or {}).get("name")) != (kind, args.name):
        raise CtlError(
            f"{path}: kind and metadata.name must stay {kind} {args.name!r} "
            f"(apply a new resource with edgectl apply) {kept}"
        )
    try:
        action = _apply_one(client, edited, item["metadata"].get("resourceVersion"))
    except CtlError as exc:
        raise CtlError(f"{what}: {exc} {kept}") from None
    path.unlink()
    print(f"{what} {'unchanged' if action == 'unchanged' else 'edited'}")


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
    for event in _events(client, kind):
        # Every event is shown, whatever its type (status changes too, when the hub sends
        # them); the revision of an ADDED one is its object's resourceVersion.
        obj = event.get("object") or {}
        name = obj.get("metadata", {}).get("name", event.get("name"))
        revision = _revision(event) or ""
        print(f"{event.get('type', '?')}\t{kind.lower()}/{name}\t{revision}", flush=True)


def duration_seconds(text: str) -> int:
    """``30s``, ``10m``, ``2h``, ``1d`` or plain seconds (``90``), as seconds; argparse's
    ``type`` (a bad value is a usage error naming the flag)."""
    match = DURATION.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30s, 10m, 2h or 1d, got {text!r}"
        )
    return int(match[1]) * DURATION_UNITS[match[2]]


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of records (0 or more), got {text!r}")
    return value


def cmd_telemetry(client: Client, args: argparse.Namespace) -> None:
    name = urllib.parse.quote(args.device)
    first = ""  # --since and --tail choose where the first request starts
    if args.since is not None:
        first += f"&sinceSeconds={args.since}"
    if args.tail is not None:
        first += f"&tailLines={args.tail}"
    if args.follow:
        path = f"/v1/devices/{name}/telemetry?follow=1{first}"
        for line in client.lines(path, "telemetry --follow"):
            if line.strip():
                print(line.decode().rstrip(), flush=True)
        return
    # Every record, page by page (the API returns at most TELEMETRY_PAGE per request).
    after = 0
    query = f"after=0&limit={TELEMETRY_PAGE}{first}"
    while items := client.request("GET", f"/v1/devices/{name}/telemetry?{query}")["items"]:
        for item in items:
            print(json.dumps(item))
        after = items[-1]["id"]
        query = f"after={after}&limit={TELEMETRY_PAGE}"


def kubeconfig(
    server: str, token: str, *, ca_pem: bytes | None, insecure: bool, name: str
) -> dict[str, Any]:
    """A kubeconfig for ``kubectl`` against the hub's Kubernetes API (docs/kubectl.md)."""
    cluster: dict[str, Any] = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    user = f"{name}-admin"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
        "current-context": name,
    }


def cmd_kubeconfig(client: Client, args: argparse.Namespace) -> None:
    server = hub_url(args.server, "--server") if args.server else client.hub
    if not server.startswith("https://"):
        raise UsageError(
            f"{server} is not https: kubectl sends credentials only over TLS; serve the "
            "operator API with --tls-cert and --tls-key (docs/kubectl.md), then give its "
            "https:// URL with --hub or --server"
        )
    ca_file = args.ca_file or os.environ.get("SSL_CERT_FILE")
    ca_pem = None
    if ca_file:
        try:
            ca_pem = Path(ca_file).expanduser().read_bytes()
        except OSError as exc:
            raise UsageError(f"--ca-file: cannot read {ca_file}: {exc.strerror or exc}") from None
        if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
            raise UsageError(f"--ca-file: {ca_file} holds no PEM certificate")
    config = kubeconfig(
        server, client.token, ca_pem=ca_pem, insecure=args.insecure_skip_tls_verify, name=args.name
    )
    sys.stdout.write(yaml.safe_dump(config, sort_keys=False))


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
    parser.add_argument(
        "--hub",
        help=f"operator API URL, http:// if no scheme (default: $EDGECTL_HUB, {DEFAULT_HUB})",
    )
    parser.add_argument("--token-file", help="file holding the admin token")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("apply", help="create or update resources from YAML")
    p.add_argument("-f", "--filename", dest="file", required=True, help="FILE or - for stdin")
    p = sub.add_parser("get", help="list resources or show one")
    p.add_argument("kind")
    p.add_argument("name", nargs="?")
    p.add_argument("-l", "--selector", help="label selector, e.g. env=prod,zone in (a,b)")
    p.add_argument("-o", "--output", choices=["wide", "yaml", "json"])
    p.add_argument(
        "-w", "--watch", action="store_true", help="after the table, a row for every change"
    )
    p = sub.add_parser("describe", help="one resource in full, with status")
    p.add_argument("kind")
    p.add_argument("name")
    p = sub.add_parser("delete", help="delete a resource, or every resource of a file")
    p.add_argument("kind", nargs="?")
    p.add_argument("name", nargs="?")
    p.add_argument("-f", "--filename", dest="file", help="FILE or - : delete what it names")
    p.add_argument(
        "--ignore-not-found", action="store_true", help="a resource already gone is no error"
    )
    p = sub.add_parser("label", help="add, change or remove labels: k=v, k- (remove)")
    p.add_argument("kind")
    p.add_argument("name")
    p.add_argument("labels", nargs="+", metavar="k=v|k-")
    p.add_argument("--overwrite", action="store_true", help="allow changing an existing value")
    p = sub.add_parser("edit", help="edit a resource in $EDGECTL_EDITOR or $EDITOR, then apply")
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
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    p.add_argument("--tail", type=count, metavar="N", help="only the newest N records")
    p.add_argument(
        "--since",
        type=duration_seconds,
        metavar="DURATION",
        help="only records received in the last 30s, 10m, 2h, 1d, ...",
    )
    p = sub.add_parser(
        "kubeconfig", help="print a kubeconfig for kubectl (KUBECONFIG=FILE kubectl get nodes)"
    )
    p.add_argument("--server", help="the hub's https URL as kubectl reaches it (default: --hub)")
    p.add_argument("--ca-file", help="PEM CA that signed the hub's certificate (embedded)")
    p.add_argument(
        "--insecure-skip-tls-verify",
        action="store_true",
        help="tell kubectl not to check the hub's certificate (tests only)",
    )
    p.add_argument("--name", default="edgehub", help="cluster, context and user name prefix")
    ctl_apps.add_parsers(sub)
    return parser


COMMANDS = {
    "apply": cmd_apply,
    "get": cmd_get,
    "describe": cmd_describe,
    "delete": cmd_delete,
    "label": cmd_label,
    "edit": cmd_edit,
    "node": cmd_node,
    "twin": cmd_twin,
    "watch": cmd_watch,
    "telemetry": cmd_telemetry,
    "artifact": cmd_artifact,
    "logs": cmd_logs,
    "rollout": cmd_rollout,
    "kubeconfig": cmd_kubeconfig,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        client = make_client(args)
        COMMANDS[args.command](client, args)
    except UsageError as exc:
        print(f"edgectl: {exc}", file=sys.stderr)
        return 2
    except CtlError as exc:
        print(f"edgectl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
