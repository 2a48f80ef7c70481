#!/usr/bin/env bash
# Fuzz the hub's operator API with schemathesis against the served OpenAPI document:
# no request may get a 5xx. schemathesis lives in its own throwaway virtualenv (its
# hypothesis pin must not move the project's). Streams (watch, telemetry follow) are
# excluded: they never end, which a fuzzer reports as a read timeout.
#   scripts/fuzz_api.sh [MAX_EXAMPLES]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXAMPLES="${1:-50}"
WORK="$(mktemp -d)"
trap 'kill "$HUB_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q "schemathesis>=4.3,<5"  # its CLI options are those of 4.x
"$ROOT/.venv/bin/edgehub" serve --data "$WORK/data" --listen 127.0.0.1:0 \
    --api-listen 127.0.0.1:0 > "$WORK/out" 2>"$WORK/log" &
HUB_PID=$!
for _ in $(seq 100); do grep -q "operator API on" "$WORK/out" && break; sleep 0.1; done
API="$(sed -n 's/^operator API on //p' "$WORK/out")"
"$WORK/venv/bin/schemathesis" run "$API/openapi.json" \
    -H "Authorization: Bearer $(cat "$WORK/data/admin.token")" \
    --checks not_a_server_error --max-examples "$EXAMPLES" \
    --exclude-path '/v1/watch/{kind}'
