#!/usr/bin/env bash
# The node daemon on emulated ARM against a real hub and a real Mosquitto on the host:
#   1. Mosquitto (loopback, free port) and `edgehub serve` (the project's .venv, free ports,
#      SQLite data in a temporary directory) start natively on the host;
#   2. `edgectl node add` registers the node; its token goes into the node's config;
#   3. `edgenode run`, from the ARM wheel installed in cross/.cache/site-<arch> (by
#      cross/test-emulated.sh), starts under qemu on Debian's ARM CPython 3.11 with
#      EDGENODE_BACKEND=rust, and joins the hub (`edgectl get nodes`: Ready);
#   4. `edgectl apply` a Device attached to the node with spec.desired; the device client
#      (mosquitto_sub/mosquitto_pub on the host) receives the delta published by the
#      emulated node, reports, and `edgectl get device -o json` shows the report at the hub;
#   5. SIGTERM stops the emulated daemon cleanly (exit 0).
# Every process it starts is stopped on exit (trap). Timings go to
# cross/.cache/timings-roundtrip-<arch>.txt.
#
# usage: cross/roundtrip-emulated.sh [aarch64|armv7]   (default aarch64)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

case "${1:-aarch64}" in
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) ARCH="${1:-aarch64}" ;;
esac
check_arch "$ARCH"

# Bound of every wait; emulated CPython starts slowly (seconds), qemu makes all of it slower.
STEP_TIMEOUT="${EDGENODE_ROUNDTRIP_TIMEOUT:-120}"
NODE=emu-node
DEVICE=thermo
ROOT_TOPIC="\$edge/devices/$DEVICE"
HOST_PY="$ROOT/.venv/bin/python"
SITE="$CACHE/site-$ARCH"

[ -x "$HOST_PY" ] || { say "ERROR: no $HOST_PY (run scripts/setup.sh)"; exit 1; }
[ -f "$SITE/edgenode/__init__.py" ] || {
    say "ERROR: no edgenode in $SITE (cross/test-emulated.sh $ARCH installs it)"
    exit 1
}
command -v mosquitto_sub >/dev/null || { say "ERROR: no mosquitto_sub"; exit 1; }
MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"

export TIMINGS_FILE="$CACHE/timings-roundtrip-$ARCH.txt"
: >"$TIMINGS_FILE"
SYSROOT="$("$CROSS_DIR/make-sysroot.sh" "$ARCH")"
WORK="$(mktemp -d)"
PIDS=()

cleanup() {
    local status=$? pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # SIGKILL whatever has not exited 10 s after SIGTERM.
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ]; then
        say "FAILED; the last lines of each log:"
        for log in "$WORK"/*.log; do
            [ -f "$log" ] || continue
            echo "---- $log" >&2
            tail -n 25 "$log" >&2
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$HOST_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Poll "$@" every 0.2 s until it succeeds; fail naming WHAT after $STEP_TIMEOUT s.
wait_until() {
    local what="$1" deadline
    shift
    deadline=$(($(date +%s) + STEP_TIMEOUT))
    until "$@"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "ERROR: timed out after $STEP_TIMEOUT s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

ctl() {
    HOME="$WORK" "$HOST_PY" -m edgehub.edgectl --hub "$API" --token-file "$WORK/hub/admin.token" "$@"
}

# 1. Mosquitto and the hub, natively on the host.
MQTT_PORT="$(free_port)"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$MQTT_PORT" \
    >"$WORK/mosquitto.conf"
"$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
PIDS+=($!)
mkdir "$WORK/hub"
"$HOST_PY" -m edgehub.cli serve --data "$WORK/hub" --listen 127.0.0.1:0 \
    --api-listen 127.0.0.1:0 --heartbeat 1 >"$WORK/hub.out" 2>"$WORK/hub.log" &
PIDS+=($!)
hub_started() { grep -q 'node links on' "$WORK/hub.out" && grep -q 'operator API on' "$WORK/hub.out"; }
wait_until "edgehub serve to listen" hub_started
LINK="$(sed -n 's/.*node links on \([^ ]*\).*/\1/p' "$WORK/hub.out" | head -n 1)"
API="$(sed -n 's/.*operator API on \([^ ]*\).*/\1/p' "$WORK/hub.out" | head -n 1)"
mosquitto_up() { mosquitto_pub -p "$MQTT_PORT" -t probe -n 2>/dev/null; }
wait_until "mosquitto on port $MQTT_PORT" mosquitto_up
say "hub: links $LINK, API $API; mosquitto on 127.0.0.1:$MQTT_PORT"

# 2. Register the node: the token is alone on the last line.
TOKEN="$(ctl node add "$NODE" | tail -n 1)"
case "$TOKEN" in ent_*) ;; *) say "ERROR: edgectl node add printed no token"; exit 1 ;; esac
cat >"$WORK/node.toml" <<EOF
[node]
name = "$NODE"
data_dir = "$WORK/node-data"

[hub]
url = "$LINK"
token = "$TOKEN"

[mqtt]
host = "127.0.0.1"
port = $MQTT_PORT

[metrics]
listen = ""

[status]
interval = 60.0
EOF

# 3. The node daemon under qemu (the emulated interpreter's SIGTERM comes through qemu).
start="$(now)"
emulated_python_command "$ARCH" "$SYSROOT" "$SITE"
"${EMULATED_PYTHON[@]}" -m edgenode run --config "$WORK/node.toml" >"$WORK/node.out" 2>"$WORK/node.log" &
NODE_PID=$!
PIDS+=("$NODE_PID")
node_ready() {
    ctl get nodes -o json | "$HOST_PY" -c '
import json, sys
nodes = {n["metadata"]["name"]: n["status"]["state"] for n in json.load(sys.stdin)["items"]}
sys.exit(0 if nodes.get(sys.argv[1]) == "Ready" else 1)' "$NODE"
}
wait_until "the emulated node Ready in edgectl get nodes" node_ready
report_time "$ARCH roundtrip: edgenode run under qemu joins the hub (Ready)" "$start"
# The node's interpreter is the ARM one, with the Rust backend.
emulated_python "$ARCH" "$SYSROOT" "$SITE" -c '
import platform, sys, edgenode
assert edgenode.backend == "rust", edgenode.backend
assert platform.machine() == sys.argv[1], platform.machine()' "${MACHINE[$ARCH]}"

# 4. A Device on the node; the device gets the delta from the emulated node and reports.
start="$(now)"
ctl apply -f - <<EOF
apiVersion: edgenode.io/v1
kind: Device
metadata: {name: $DEVICE}
spec: {node: $NODE, desired: {target_temp: 21}}
EOF
# The delta is retained: a late subscriber gets it; an empty one means "in sync", skipped.
delta_arrived() {
    mosquitto_sub -p "$MQTT_PORT" -t "$ROOT_TOPIC/twin/delta" -C 1 -W 5 >"$WORK/delta.json" \
        2>/dev/null || return 1
    grep -q '"target_temp": *21' "$WORK/delta.json"
}
wait_until "the delta on $ROOT_TOPIC/twin/delta" delta_arrived
say "device received: $(cat "$WORK/delta.json")"
report_time "$ARCH roundtrip: edgectl apply -> delta at the device (MQTT)" "$start"

start="$(now)"
REPORT='{"reported": {"target_temp": 21, "temperature": 19.5}}'
mosquitto_sub -p "$MQTT_PORT" -t "$ROOT_TOPIC/twin/update/+" -C 1 -W "$STEP_TIMEOUT" -v \
    >"$WORK/verdict.txt" 2>"$WORK/verdict.log" &
SUB=$!
PIDS+=("$SUB")
sleep 0.5  # the subscription is in place before the report
mosquitto_pub -p "$MQTT_PORT" -q 1 -t "$ROOT_TOPIC/twin/update" -m "$REPORT"
wait "$SUB" || { say "ERROR: no reply to the report: $(cat "$WORK/verdict.txt")"; exit 1; }
grep -q "^$ROOT_TOPIC/twin/update/accepted " "$WORK/verdict.txt" || {
    say "ERROR: report not accepted: $(cat "$WORK/verdict.txt")"
    exit 1
}
reported_at_hub() {
    ctl get device "$DEVICE" -o json >"$WORK/device.json" 2>/dev/null || return 1
    "$HOST_PY" -c '
import json, sys
status = json.load(open(sys.argv[1]))["status"]
sys.exit(0 if status.get("reported") == {"target_temp": 21, "temperature": 19.5} else 1)' \
        "$WORK/device.json"
}
wait_until "the report in edgectl get device -o json" reported_at_hub
report_time "$ARCH roundtrip: report -> accepted by the node -> status.reported at the hub" "$start"
"$HOST_PY" -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))["status"]))' \
    "$WORK/device.json" >&2
# 5. SIGTERM reaches the emulated daemon through qemu: it stops cleanly (exit 0).
start="$(now)"
kill -TERM "$NODE_PID"
node_status=0
wait "$NODE_PID" || node_status=$?
[ "$node_status" -eq 0 ] || { say "ERROR: edgenode run exited $node_status on SIGTERM"; exit 1; }
report_time "$ARCH roundtrip: SIGTERM -> edgenode run exits 0" "$start"
say "$ARCH: twin round trip through the emulated node passed; timings in $TIMINGS_FILE"
