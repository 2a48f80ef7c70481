#!/usr/bin/env bash
# The README's first command: the idempotent set-up (scripts/setup.sh, with its progress),
# then the story of a hub, two nodes and two simulated devices on this machine
# (scripts/demo.py; every process it starts is its own, on free loopback ports, data in
# demo-data/). Options go to demo.py: --exit-after-story (or EDGENODE_DEMO_EXIT=1),
# --data DIR. It stays up after the story; Ctrl-C stops everything it started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
say() { printf '\033[1m[demo %3ds]\033[0m %s\n' "$SECONDS" "$*" >&2; }

say "1/2 set-up: system packages, the Rust build, .venv (minutes the first time, then seconds)"
"$ROOT/scripts/setup.sh"
say "2/2 the story: Mosquitto, edgehub, two edgenode nodes, a thermostat and a meter"
exec "$ROOT/.venv/bin/python" "$ROOT/scripts/demo.py" "$@"
