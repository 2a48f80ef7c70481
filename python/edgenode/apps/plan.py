"""What an App runs on this node: its spec with the Configs it reads, materialized (pure).

:func:`make_plan` turns an App resource and the node's current Configs into a
:class:`Plan`: the environment (each ``envFrom`` Config's data in order, then ``env``),
the Config files' bytes (the same JSON as ``DATA_DIR/config/NAME.json``), the Configs it
needs that the node does not have, and a *run key*: a digest of everything that decides
what runs (the spec's RUNTIME_FIELDS, the environment, the files). The supervisor restarts
an App exactly when its run key changes — a new revision or a changed Config it reads —
and applies other edits (restart policy, health check, grace period) to the running
instance.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from edgenode.apps.spec import (
    ENV_NAME_PATTERN,
    RUNTIME_FIELDS,
    AppSpec,
    AppSpecError,
    app_revision,
    parse_app,
)
from edgenode.node.configs import ConfigEntry
from edgenode.service import DesiredResource

APP_KIND: Final = "App"


@dataclass(frozen=True)
class Plan:
    """One App as this node would run it now."""

    name: str
    revision: int
    generation: int
    run_key: str
    spec: AppSpec | None = None
    error: str = ""
    """Why the App cannot run at all (an invalid spec); ``spec`` is then None."""
    env: Mapping[str, str] = field(default_factory=dict)
    files: tuple[tuple[str, bytes], ...] = ()
    missing: tuple[str, ...] = ()
    """Configs it reads that are not on this node."""
    skipped_env: tuple[str, ...] = ()
    """Config keys that are not environment variable names (left out, as Kubernetes does)."""

    @property
    def digests(self) -> set[str]:
        return {a.sha256 for a in self.spec.artifacts} if self.spec else set()


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def make_plan(resource: DesiredResource, configs: Mapping[str, ConfigEntry]) -> Plan:
    """The :class:`Plan` of an App resource given the node's Configs."""
    raw = resource.spec
    revision = app_revision(resource.body)
    name = resource.name
    try:
        spec = parse_app(name, raw, revision, resource.body)
    except (AppSpecError, ValueError, TypeError, KeyError) as exc:
        return Plan(
            name,
            revision,
            resource.generation,
            _digest({"error": str(exc), "spec": raw}),
            error=str(exc),
        )
    missing = tuple(sorted(c for c in spec.configs if c not in configs))
    env: dict[str, str] = {}
    skipped: list[str] = []
    for config in spec.env_from:
        entry = configs.get(config)
        if entry is None:
            continue
        for key, value in entry.data.items():
            if ENV_NAME_PATTERN.fullmatch(key) and "\x00" not in value:
                env[key] = value
            else:
                skipped.append(f"{config}.{key}")
    env.update(spec.env)
    files = tuple(
        (f.path, configs[f.config].file_bytes()) for f in spec.files if f.config in configs
    )
    what_runs = {field_name: raw.get(field_name) for field_name in RUNTIME_FIELDS}
    run_key = _digest(
        {
            "spec": what_runs,
            "env": env,
            "files": {path: hashlib.sha256(data).hexdigest() for path, data in files},
            "missing": missing,
        }
    )
    return Plan(
        name,
        revision,
        resource.generation,
        run_key,
        spec=spec,
        env=env,
        files=files,
        missing=missing,
        skipped_env=tuple(skipped),
    )
