#!/usr/bin/env bash
# Test the ARM wheels on an emulated ARM CPython 3.11 (Debian's, run under qemu-user):
#   1. assemble the sysroot (cross/make-sysroot.sh, cached in cross/.cache/);
#   2. install the wheel, its dependencies and the test tools for that platform into a fresh
#      site directory (host pip with --platform: binary wheels for the ARM platform, or pure
#      Python ones; cbor2 falls back to pure Python where it has no ARM wheel);
#   3. under qemu: the core (router, twin, store) imports from the wheel alone, without its
#      dependencies; check_wheel.py (edgenode.backend == "rust", platform.machine() is the
#      ARM one, the extension comes from the wheel, one call per component);
#   4. under qemu, with EDGENODE_BACKEND=rust: pytest on the core's unit and differential
#      suites (router, twin, store, protocol); every core test runs both backends;
#   5. (not with --smoke) cross/roundtrip-emulated.sh: `edgenode run` under qemu against a
#      hub and Mosquitto on the host, a twin round trip with a device client;
#   6. (not with --smoke) `cargo test` of the pure Rust modules for the target, run by qemu.
# Each step is timed; the times go to cross/.cache/timings-emulated-<arch>.txt.
#
# usage: cross/test-emulated.sh [--smoke] [--wheel-dir DIR] [aarch64|armv7|all]
#   default: all, with the wheels (re)built into dist/ by cross/build-wheels.sh first;
#   --wheel-dir DIR tests the wheels already in DIR instead.
#   --smoke: only the router and twin unit tests in step 4 (the CI step).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SMOKE=0
WHEEL_DIR="$ROOT/dist"
WHICH=all
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1; shift ;;
        --wheel-dir) WHEEL_DIR="$2"; shift 2 ;;
        -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
        *) WHICH="$1"; shift ;;
    esac
done
WHEEL_DIR="$(cd "$WHEEL_DIR" 2>/dev/null && pwd)" || { say "ERROR: no directory $WHEEL_DIR"; exit 1; }
if [ "$WHICH" = all ]; then TARGETS=("${ARCHES[@]}"); else check_arch "$WHICH"; TARGETS=("$WHICH"); fi

SMOKE_TESTS=(tests/unit/test_router.py tests/unit/test_twin.py)
FULL_TESTS=(
    tests/unit/test_router.py tests/unit/test_twin.py
    tests/unit/test_store_cache_twins.py tests/unit/test_store_lifecycle.py
    tests/unit/test_store_outbox.py tests/unit/protocol tests/differential
)
# What the tests import beyond edgenode and its own dependencies (pure Python wheels).
TEST_REQUIREMENTS=("pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100")
# Bookworm's glibc (2.36): dependency wheels tagged for it or any older manylinux fit.
TARGET_GLIBC_MINOR=36

"$CROSS_DIR/install-toolchain.sh"
PIP=("$TOOLS_VENV/bin/python" -m pip --disable-pip-version-check)
VERSION="$(project_version)"

find_wheel() {
    local machine="$1" wheels
    wheels=("$WHEEL_DIR"/edgenode-"$VERSION"-cp311-abi3-*_"$machine".whl)
    if [ ! -f "${wheels[0]}" ]; then return 1; fi
    echo "${wheels[0]}"
}

# The core (router, twin, store) needs nothing beyond the standard library and the extension:
# the wheel alone, without its dependencies, in its own site directory.
BARE_CHECK='
import sys
import edgenode, edgenode.router, edgenode.twin, edgenode.store
assert edgenode.backend == "rust", edgenode.backend
assert "cbor2" not in sys.modules
print("ok: core imports with the wheel alone, backend", edgenode.backend)
'

# pip install --target SITE for the ARM platform, into a fresh SITE: MACHINE SITE REQUIREMENT...
pip_install_for() {
    rm -rf "$2"
    pip_platform_install "$@"
}

# The same into an existing SITE (what it installs must not be there yet).
pip_platform_install() {
    local machine="$1" site="$2" minor
    shift 2
    local platforms=(--platform "linux_$machine" --platform "manylinux2014_$machine")
    # Every manylinux_2_Y up to bookworm's glibc (older pips do not expand the list).
    for minor in $(seq 17 "$TARGET_GLIBC_MINOR"); do
        platforms+=(--platform "manylinux_2_${minor}_$machine")
    done
    "${PIP[@]}" install -q --target "$site" --only-binary=:all: "${platforms[@]}" \
        --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none "$@"
}

# The wheel's runtime requirements (Requires-Dist without a marker), one a line, except
# the distributions named in SKIP (space separated; those come from Debian's packages).
wheel_requirements() {
    local wheel="$1" skip="$2"
    "$TOOLS_VENV/bin/python" - "$wheel" "$skip" <<'PY'
import re, sys, zipfile
wheel, skip = sys.argv[1], set(sys.argv[2].split())
with zipfile.ZipFile(wheel) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    for line in z.read(meta).decode().splitlines():
        if line.startswith("Requires-Dist:") and ";" not in line:
            req = line.split(":", 1)[1].strip()
            name = re.split(r"[<>=!~ \[(]", req, maxsplit=1)[0].lower()
            if name not in skip:
                print(req)
PY
}

test_arch() {
    local arch="$1" machine="${MACHINE[$1]}" wheel sysroot site tests
    export TIMINGS_FILE="$CACHE/timings-emulated-$arch.txt"
    : >"$TIMINGS_FILE"
    say "== $arch ($machine)"
    if [ "$WHEEL_DIR" = "$ROOT/dist" ]; then
        # (Re)build so that the wheel matches the sources; incremental, quick when it does.
        "$CROSS_DIR/build-wheels.sh" "$arch"
    fi
    if ! wheel="$(find_wheel "$machine")"; then
        say "ERROR: no $machine wheel of edgenode $VERSION in $WHEEL_DIR"
        exit 1
    fi
    say "wheel: $wheel"
    local start
    start="$(now)"
    sysroot="$("$CROSS_DIR/make-sysroot.sh" "$arch")"
    report_time "$arch: sysroot (cached after the first run)" "$start"
    site="$CACHE/site-$arch"
    local requirements
    # The wheel's dependencies but those Debian provides in the sysroot (no wheel on PyPI).
    mapfile -t requirements < <(wheel_requirements "$wheel" "${FROM_DEBIAN[$arch]}")
    start="$(now)"
    pip_install_for "$machine" "$site" "${requirements[@]}" "${TEST_REQUIREMENTS[@]}"
    pip_platform_install "$machine" "$site" --no-deps "$wheel"
    report_time "$arch: pip install wheel + deps + test deps for $machine" "$start"
    timed "$arch: emulated interpreter start" emulated_python "$arch" "$sysroot" "$site" -c pass
    pip_install_for "$machine" "$site-bare" --no-deps "$wheel"
    timed "$arch: core without dependencies (router, twin, store)" \
        emulated_python "$arch" "$sysroot" "$site-bare" -c "$BARE_CHECK"
    timed "$arch: check_wheel.py (backend, machine, one call per component)" \
        emulated_python "$arch" "$sysroot" "$site" "$CROSS_DIR/check_wheel.py" "$machine" "$site"
    local suite
    if [ "$SMOKE" = 1 ]; then
        tests=("${SMOKE_TESTS[@]}") suite="smoke: router and twin unit tests"
    else
        tests=("${FULL_TESTS[@]}") suite="unit + differential: router, twin, store, protocol"
    fi
    timed "$arch: pytest ($suite)" \
        emulated_python "$arch" "$sysroot" "$site" -m pytest -q -p no:cacheprovider \
        --rootdir "$ROOT" "${tests[@]/#/$ROOT/}"
    if [ "$SMOKE" = 0 ]; then
        # The daemon from the wheel against a hub and Mosquitto on the host (loopback).
        timed "$arch: edgenode run twin round trip (cross/roundtrip-emulated.sh)" \
            "$CROSS_DIR/roundtrip-emulated.sh" "$arch"
        # The pure Rust unit tests too, built by the gcc cross compilers (linkers and qemu
        # runners in .cargo/config.toml) instead of zig: both C toolchains compile SQLite.
        timed "$arch: cargo test (Rust unit tests, gcc cross build) under qemu" \
            env RUSTC="$DEBIAN_RUSTC" RUSTDOC="$DEBIAN_RUSTDOC" \
            CARGO_TARGET_DIR="$ROOT/target/debian-rustc" \
            "$DEBIAN_CARGO" test -q --locked --target "${RUST_TARGET[$arch]}"
    fi
    say "$arch: all emulated checks passed; timings in $TIMINGS_FILE"
}

cd "$ROOT"
for arch in "${TARGETS[@]}"; do
    test_arch "$arch"
done
