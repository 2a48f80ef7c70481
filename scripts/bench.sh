#!/usr/bin/env bash
# Benchmarks of the core (Rust vs pure Python in one run), on an optimised build.
# Writes bench/results/core.json; extra arguments go to bench/bench_core.py
# (e.g. --scale 0.1 for a quick run). The next scripts/test.sh rebuilds the debug build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EDGENODE_PROFILE=release "$ROOT/scripts/setup.sh"
exec "$ROOT/.venv/bin/python" bench/bench_core.py "$@"
