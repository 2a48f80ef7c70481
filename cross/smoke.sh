#!/usr/bin/env bash
# The CI step for the ARM wheels (run at the end of scripts/test.sh): install the cross
# toolchain if apt can provide it, build the aarch64 wheel (profile "ci": release without
# LTO, quicker to compile) into cross/.cache/smoke-dist, and on the emulated aarch64 CPython
# check the backend and machine and run the router and twin unit tests.
#
# When the toolchain cannot be installed (not an x86_64 Debian machine, apt has no common
# rustc-web version, a package is missing) it prints "SKIPPED ARM smoke: <reason>" and exits
# 0; a build or test failure exits non-zero. EDGENODE_ARM_SMOKE=0 skips it on purpose.
# The full emulated suites for both architectures: cross/build-wheels.sh && cross/test-emulated.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

skip() {
    echo "SKIPPED ARM smoke: $*"
    exit 0
}

[ "${EDGENODE_ARM_SMOKE:-1}" != 0 ] || skip "disabled by EDGENODE_ARM_SMOKE=0"
[ "$(uname -m)" = x86_64 ] || skip "the cross build runs on x86_64 hosts (this is $(uname -m))"
command -v apt-get >/dev/null 2>&1 || skip "no apt-get (the toolchain comes from Debian's packages)"

start="$(now)"
log="$(mktemp)"
status=0
"$CROSS_DIR/install-toolchain.sh" 2>"$log" || status=$?
cat "$log" >&2
if [ "$status" -eq "$EX_UNAVAILABLE" ]; then
    reason="$(sed -n 's/^UNAVAILABLE: //p' "$log" | tail -n 1)"
    rm -f "$log"
    skip "${reason:-the cross toolchain cannot be installed}"
fi
rm -f "$log"
[ "$status" -eq 0 ] || { say "ERROR: installing the cross toolchain failed ($status)"; exit "$status"; }
report_time "ARM smoke: toolchain" "$start"

OUT="$CACHE/smoke-dist"
rm -rf "$OUT"
TIMINGS_FILE="$CACHE/timings-smoke.txt"
export TIMINGS_FILE
: >"$TIMINGS_FILE"
"$CROSS_DIR/build-wheels.sh" --profile ci --out "$OUT" aarch64
"$CROSS_DIR/test-emulated.sh" --smoke --wheel-dir "$OUT" aarch64
report_time "ARM smoke: total" "$start"
