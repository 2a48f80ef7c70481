#!/usr/bin/env bash
# The README's first command: set everything up, then run the demo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/setup.sh"
exec "$ROOT/.venv/bin/python" scripts/demo_core.py "$@"
