"""The App resource as the node runs it: one frozen :class:`AppSpec`, parsed and checked.

The hub validates Apps at apply (``cloud/edgehub/kinds/app.py``) with the same helpers
(quantities, names, paths, signals), so an App a node receives normally parses; the node
checks again because what it runs must never depend on the hub having been right (an App
that does not parse is reported ``Failed`` with the reason, never started).

What an App runs is its *revision*: the hub's annotation ``edgenode.io/revision``, a
number that changes only when something that runs changes (artifacts, command, env,
envFrom, files, image, resources, runtime) — see :data:`RUNTIME_FIELDS`.
"""

from __future__ import annotations

import math
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

REVISION_ANNOTATION: Final = "edgenode.io/revision"
RUNTIME_FIELDS: Final = (
    "runtime",
    "image",
    "artifacts",
    "command",
    "env",
    "envFrom",
    "files",
    "resources",
)
"""Spec fields whose change makes a new App revision (what runs); the others (restart
policy, health check, stop signal, grace period, strategy) apply to the running revision."""

RUNTIMES: Final = ("process", "container")
RESTART_POLICIES: Final = ("Always", "OnFailure", "Never")
MAX_ARTIFACTS: Final = 64
MAX_COMMAND_ARGS: Final = 256
MAX_ARG_CHARS: Final = 4096
MAX_ENV: Final = 256
MAX_FILES: Final = 64
MAX_GRACE_SECONDS: Final = 3600
DEFAULT_GRACE_SECONDS: Final = 10
DEFAULT_PERIOD_SECONDS: Final = 10
DEFAULT_FAILURE_THRESHOLD: Final = 3
DEFAULT_HEALTH_TIMEOUT: Final = 5
MAX_PERIOD_SECONDS: Final = 3600
MIN_MEMORY_BYTES: Final = 4 * 1024 * 1024
"""Below this no program starts: refused rather than killed at once."""
SHA256_PATTERN: Final = re.compile(r"[0-9a-f]{64}")
FILE_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Artifact names: one plain file name (no ``/``, no ``..``, no leading dot)."""
ENV_NAME_PATTERN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
IMAGE_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?")
_UNITS: Final = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
MAX_MEMORY_BYTES: Final = 2**50
MAX_CPUS: Final = 1024.0


class AppSpecError(ValueError):
    """An App the node cannot run: ``field`` names the spot (``spec.command``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_memory(value: object, field: str = "spec.resources.memoryMax") -> int:
    """``64Mi``, ``1G``, ``1048576`` → bytes (Kubernetes quantities, whole bytes)."""
    if isinstance(value, bool):
        raise AppSpecError(field, "must be a quantity like 64Mi or 1G")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and (match := _QUANTITY.fullmatch(value.strip())):
        number = math.floor(float(match[1]) * _UNITS[match[2]])
    else:
        raise AppSpecError(field, f"must be a quantity like 64Mi or 1G, not {value!r}")
    if not MIN_MEMORY_BYTES <= number <= MAX_MEMORY_BYTES:
        raise AppSpecError(field, f"must be between 4Mi and 1Pi, not {value!r}")
    return number


def parse_cpus(value: object, field: str = "spec.resources.cpuMax") -> float:
    """``"0.5"``, ``"500m"``, ``2`` → cores."""
    if isinstance(value, bool):
        raise AppSpecError(field, "must be a number of cores like 0.5 or 500m")
    try:
        if isinstance(value, int | float):
            cores = float(value)
        elif isinstance(value, str) and value.strip().endswith("m"):
            cores = float(value.strip()[:-1]) / 1000
        elif isinstance(value, str):
            cores = float(value.strip())
        else:
            raise ValueError(value)
    except ValueError:
        raise AppSpecError(
            field, f"must be a number of cores like 0.5 or 500m, not {value!r}"
        ) from None
    if not math.isfinite(cores) or not 0.001 <= cores <= MAX_CPUS:
        raise AppSpecError(field, f"must be between 1m and {MAX_CPUS:g} cores, not {value!r}")
    return cores


def parse_signal(value: object, field: str = "spec.stopSignal") -> int:
    """``SIGTERM``, ``TERM`` → the signal number."""
    if not isinstance(value, str):
        raise AppSpecError(field, "must be a signal name like SIGTERM")
    name = value.upper() if value.upper().startswith("SIG") else "SIG" + value.upper()
    number = getattr(signal.Signals, name, None) if name.isidentifier() else None
    if number is None or name in ("SIGKILL", "SIGSTOP"):
        raise AppSpecError(field, f"unknown or unusable signal {value!r}")
    return int(number)


def check_relative_path(value: object, field: str) -> str:
    """A path inside the App's work dir: relative, no ``..``, no empty or hidden parts
    that could escape or shadow the node's own files."""
    if not isinstance(value, str) or not value or len(value) > 255:
        raise AppSpecError(field, "must be a relative path of 1..255 characters")
    parts = value.split("/")
    if value.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise AppSpecError(field, f"must stay inside the App's directory, not {value!r}")
    if any(not FILE_NAME_PATTERN.fullmatch(p) for p in parts):
        raise AppSpecError(field, f"path parts must be plain file names, not {value!r}")
    return value


@dataclass(frozen=True)
class Artifact:
    """A content-addressed file the App needs in its work dir, under ``name``."""

    name: str
    sha256: str


@dataclass(frozen=True)
class ConfigFile:
    """A Config's data written as JSON to ``path`` in the App's work dir."""

    config: str
    path: str


@dataclass(frozen=True)
class HealthCheck:
    """How the node tells that a running App is healthy (``ready``)."""

    kind: str
    """``exec``, ``http`` or ``tcp``."""
    exec: tuple[str, ...] = ()
    url: str = ""
    port: int = 0
    period: float = DEFAULT_PERIOD_SECONDS
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    timeout: float = DEFAULT_HEALTH_TIMEOUT
    initial_delay: float = 0.0


@dataclass(frozen=True)
class Resources:
    memory_max: int | None = None
    """Bytes; None: no limit."""
    cpu_max: float | None = None
    """Cores; None: no limit."""


@dataclass(frozen=True)
class AppSpec:
    """One App as the node runs it."""

    name: str
    revision: int
    command: tuple[str, ...]
    runtime: str = "process"
    image: str = ""
    artifacts: tuple[Artifact, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    env_from: tuple[str, ...] = ()
    """Config names whose data become environment variables (before ``env``)."""
    files: tuple[ConfigFile, ...] = ()
    restart_policy: str = "Always"
    health: HealthCheck | None = None
    resources: Resources = field(default_factory=Resources)
    stop_signal: int = int(signal.SIGTERM)
    grace: float = DEFAULT_GRACE_SECONDS
    body: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The resource body it came from (kept for rollback: the spec of a good revision)."""

    @property
    def configs(self) -> frozenset[str]:
        """Every Config this App reads (environment and files)."""
        return frozenset(self.env_from) | {f.config for f in self.files}


def _str_list(value: object, field: str, limit: int, *, empty: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AppSpecError(field, "must be a list of strings")
    if not empty and not value:
        raise AppSpecError(field, "must not be empty")
    if len(value) > limit:
        raise AppSpecError(field, f"more than {limit} items")
    if any(len(v) > MAX_ARG_CHARS or "\x00" in v for v in value):
        raise AppSpecError(field, f"items must be at most {MAX_ARG_CHARS} characters, no NUL")
    return tuple(value)


def _number(spec: Mapping[str, Any], key: str, field: str, low: float, high: float) -> float:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AppSpecError(field, "must be a number")
    if not low <= value <= high:
        raise AppSpecError(field, f"must be in [{low:g}, {high:g}]")
    return float(value)


def parse_health(value: object, field: str = "spec.healthCheck") -> HealthCheck:
    if not isinstance(value, dict):
        raise AppSpecError(field, "must be a map")
    kinds = [k for k in ("exec", "http", "tcp") if k in value]
    if len(kinds) != 1:
        raise AppSpecError(field, "needs exactly one of exec, http, tcp")
    known = {"exec", "http", "tcp", "periodSeconds", "failureThreshold", "timeoutSeconds"}
    known.add("initialDelaySeconds")
    for key in value:
        if key not in known:
            raise AppSpecError(f"{field}.{key}", "unknown field")
    kind = kinds[0]
    options: dict[str, Any] = {"kind": kind}
    if kind == "exec":
        options["exec"] = _str_list(value["exec"], f"{field}.exec", MAX_COMMAND_ARGS)
    elif kind == "http":
        url = value["http"]
        if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s]{1,2048}", url):
            raise AppSpecError(f"{field}.http", "must be an http:// or https:// URL")
        options["url"] = url
    else:
        port = value["tcp"]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise AppSpecError(f"{field}.tcp", "must be a port in [1, 65535]")
        options["port"] = port
    if "periodSeconds" in value:
        options["period"] = _number(value, "periodSeconds", f"{field}.periodSeconds", 0.1, 3600)
    if "timeoutSeconds" in value:
        options["timeout"] = _number(value, "timeoutSeconds", f"{field}.timeoutSeconds", 0.1, 600)
    if "initialDelaySeconds" in value:
        options["initial_delay"] = _number(
            value, "initialDelaySeconds", f"{field}.initialDelaySeconds", 0, 3600
        )
    if "failureThreshold" in value:
        threshold = value["failureThreshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise AppSpecError(f"{field}.failureThreshold", "must be a positive integer")
        options["failure_threshold"] = min(threshold, 1000)
    return HealthCheck(**options)


def parse_app(
    name: str, spec: Mapping[str, Any], revision: int, body: Mapping[str, Any]
) -> AppSpec:
    """An :class:`AppSpec` from an App resource's ``spec``; AppSpecError naming the field."""
    runtime = spec.get("runtime", "process")
    if runtime not in RUNTIMES:
        raise AppSpecError("spec.runtime", f"must be one of {', '.join(RUNTIMES)}")
    image = spec.get("image", "")
    if runtime == "container":
        if not isinstance(image, str) or not IMAGE_PATTERN.fullmatch(image):
            raise AppSpecError("spec.image", "required for a container: an image reference")
    elif image:
        raise AppSpecError("spec.image", "only for runtime: container")
    command = _str_list(spec.get("command", []), "spec.command", MAX_COMMAND_ARGS,
                        empty=runtime == "container")  # fmt: skip
    artifacts = []
    raw_artifacts = spec.get("artifacts", [])
    if not isinstance(raw_artifacts, list) or len(raw_artifacts) > MAX_ARTIFACTS:
        raise AppSpecError("spec.artifacts", f"must be a list of at most {MAX_ARTIFACTS}")
    seen_names: set[str] = set()
    for index, item in enumerate(raw_artifacts):
        where = f"spec.artifacts[{index}]"
        if not isinstance(item, dict) or set(item) != {"name", "sha256"}:
            raise AppSpecError(where, "must be {name, sha256}")
        check_relative_path(item["name"], f"{where}.name")
        if item["name"] in seen_names:
            raise AppSpecError(f"{where}.name", f"{item['name']!r} appears twice")
        seen_names.add(item["name"])
        if not isinstance(item["sha256"], str) or not SHA256_PATTERN.fullmatch(item["sha256"]):
            raise AppSpecError(f"{where}.sha256", "must be 64 lowercase hex digits")
        artifacts.append(Artifact(item["name"], item["sha256"]))
    env = spec.get("env", {})
    if not isinstance(env, dict) or len(env) > MAX_ENV:
        raise AppSpecError("spec.env", f"must be a map of at most {MAX_ENV} strings")
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_NAME_PATTERN.fullmatch(key):
            raise AppSpecError(f"spec.env.{key}", "names are letters, digits and _")
        if not isinstance(value, str) or len(value) > MAX_ARG_CHARS or "\x00" in value:
            raise AppSpecError(f"spec.env.{key}", "must be a string (no NUL)")
    env_from = []
    raw_from = spec.get("envFrom", [])
    if not isinstance(raw_from, list) or len(raw_from) > MAX_FILES:
        raise AppSpecError("spec.envFrom", f"must be a list of at most {MAX_FILES}")
    for index, item in enumerate(raw_from):
        if (
            not isinstance(item, dict)
            or set(item) != {"config"}
            or not isinstance(item["config"], str)
        ):
            raise AppSpecError(f"spec.envFrom[{index}]", "must be {config: NAME}")
        env_from.append(item["config"])
    files = []
    raw_files = spec.get("files", [])
    if not isinstance(raw_files, list) or len(raw_files) > MAX_FILES:
        raise AppSpecError("spec.files", f"must be a list of at most {MAX_FILES}")
    seen_paths = set(seen_names)
    for index, item in enumerate(raw_files):
        where = f"spec.files[{index}]"
        if not isinstance(item, dict) or set(item) != {"config", "path"}:
            raise AppSpecError(where, "must be {config, path}")
        if not isinstance(item["config"], str):
            raise AppSpecError(f"{where}.config", "must be a Config name")
        path = check_relative_path(item["path"], f"{where}.path")
        if path in seen_paths:
            raise AppSpecError(f"{where}.path", f"{path!r} is already an artifact or a file")
        seen_paths.add(path)
        files.append(ConfigFile(item["config"], path))
    policy = spec.get("restartPolicy", "Always")
    if policy not in RESTART_POLICIES:
        raise AppSpecError("spec.restartPolicy", f"must be one of {', '.join(RESTART_POLICIES)}")
    health = parse_health(spec["healthCheck"]) if "healthCheck" in spec else None
    raw_resources = spec.get("resources", {})
    if not isinstance(raw_resources, dict) or set(raw_resources) - {"memoryMax", "cpuMax"}:
        raise AppSpecError("spec.resources", "takes memoryMax and cpuMax")
    resources = Resources(
        parse_memory(raw_resources["memoryMax"]) if "memoryMax" in raw_resources else None,
        parse_cpus(raw_resources["cpuMax"]) if "cpuMax" in raw_resources else None,
    )
    stop_signal = parse_signal(spec.get("stopSignal", "SIGTERM"))
    grace = float(DEFAULT_GRACE_SECONDS)
    if "terminationGracePeriodSeconds" in spec:
        grace = _number(
            spec, "terminationGracePeriodSeconds", "spec.terminationGracePeriodSeconds", 0,
            MAX_GRACE_SECONDS,
        )  # fmt: skip
    return AppSpec(
        name=name,
        revision=revision,
        command=command,
        runtime=runtime,
        image=image,
        artifacts=tuple(artifacts),
        env=dict(env),
        env_from=tuple(env_from),
        files=tuple(files),
        restart_policy=policy,
        health=health,
        resources=resources,
        stop_signal=stop_signal,
        grace=grace,
        body=body,
    )


def app_revision(body: Mapping[str, Any]) -> int:
    """The hub's revision number of an App body (its annotation; 0 when absent)."""
    metadata = body.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    value = annotations.get(REVISION_ANNOTATION) if isinstance(annotations, dict) else None
    return int(value) if isinstance(value, str) and value.isdigit() else 0


def app_from_body(body: Mapping[str, Any]) -> AppSpec:
    """An :class:`AppSpec` from a whole App resource body (AppSpecError if it cannot run)."""
    metadata = body.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name):
        raise AppSpecError("metadata.name", "missing or not a resource name")
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise AppSpecError("spec", "must be a map")
    return parse_app(name, spec, app_revision(body), body)
