#!/usr/bin/env bash
# The ship test (issue 15): a node a month offline behind a thin lossy link, then the
# checks, as JSON in bench/results/ship.json (--quick: a 1-2 minute version, written to
# bench/results/ship-quick.json). A bench, about 10 minutes; needs root (network
# namespaces, tc), Mosquitto and libfaketime. Exit status: 0 every check passed,
# 1 a check failed (the JSON says which), 2 the scenario could not complete,
# 77 it cannot run on this machine (the reason on stderr).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${ROOT}/.venv/bin/python"
[ -x "$PY" ] || { echo "no usable $PY (run scripts/setup.sh first)" >&2; exit 2; }
exec "$PY" "$ROOT/bench/bench_ship.py" "$@"
