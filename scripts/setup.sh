#!/usr/bin/env bash
# Idempotent set-up on Debian bookworm (Raspberry Pi OS is Debian): system packages,
# the Rust toolchain, a virtualenv in .venv with edgenode (and its Rust extension)
# installed in development mode. Safe to run again; quick when nothing is missing.
#
# EDGENODE_PROFILE=release builds the extension optimised (benchmarks, demo);
# the default "dev" profile compiles faster and is what the tests use.
#
# Output: one "[setup Ns] ..." line per step (and "still ..." every HEARTBEAT seconds of a
# long one), nothing else. What apt, pip and cargo print goes to a log file, shown in full
# only when a step fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EDGENODE_VENV:-$ROOT/.venv}"
PROFILE="${EDGENODE_PROFILE:-dev}"
APT_PACKAGES=(mosquitto mosquitto-clients python3-venv python3-dev build-essential pkg-config
    openssl systemd sqlite3 busybox-static faketime)  # openssl, systemd: the node tests make
    # TLS certificates, verify the unit; sqlite3: the backup commands of docs/operations.md (run
    # by tests/docs); busybox-static: the container App tests build a FROM-scratch image with
    # it; faketime: the ship test's node clock (scripts/ship-test.sh)

HEARTBEAT="${EDGENODE_SETUP_HEARTBEAT:-20}"  # seconds between "still building" lines
SETUP_START=$SECONDS
STEP_LOG="$(mktemp "${TMPDIR:-/tmp}/edgenode-setup.XXXXXX")"
trap 'rm -f "$STEP_LOG"' EXIT
exec 3>&2  # the terminal: step lines go there while a step's own output goes to STEP_LOG

say() { printf '\033[1m[setup %3ds]\033[0m %s\n' "$((SECONDS - SETUP_START))" "$*" >&3; }

# Run a long step with a "still <what>..." line every HEARTBEAT seconds: compiling one
# big crate (the bundled SQLite) or downloading wheels prints nothing for minutes.
with_heartbeat() {
    local what="$1" status=0 beat
    shift
    (while sleep "$HEARTBEAT"; do say "still $what..."; done) &
    beat=$!
    "$@" || status=$?
    kill "$beat" 2>/dev/null || true
    wait "$beat" 2>/dev/null || true
    return "$status"
}

# quietly WHAT COMMAND...: run a step with its output in STEP_LOG (heartbeat lines on the
# terminal); if it fails, show everything it printed and stop the set-up with its status.
quietly() {
    local what="$1" status=0
    shift
    with_heartbeat "$what" "$@" >"$STEP_LOG" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        say "FAILED: $what (exit $status); its output follows"
        cat "$STEP_LOG" >&3
        say "FAILED: $what (exit $status)"
        exit "$status"
    fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_system_packages() {
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "system packages present"
        return
    fi
    say "installing system packages: ${missing[*]}"
    # An unrelated index may fail ("Mirror sync in progress"): warn, then check that what
    # we need is still installable from the indexes that did load.
    if ! as_root apt-get update -q >"$STEP_LOG" 2>&1; then
        say "WARNING: apt-get update failed for some index; continuing with what loaded"
    fi
    for pkg in "${missing[@]}"; do
        if ! apt-cache show "$pkg" >/dev/null 2>&1; then
            say "ERROR: package $pkg is not available from any apt index"
            exit 1
        fi
    done
    quietly "installing system packages" as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
}

ensure_rust() {
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if command -v cargo >/dev/null 2>&1; then
        say "rust: $(cargo --version)"
        return
    fi
    # No rustup toolchain: Debian's rustc-web is recent enough (rust-version 1.85).
    say "installing Debian's Rust toolchain (rustc-web, cargo-web)"
    quietly "installing Debian's Rust toolchain" as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q rustc-web cargo-web
    say "rust: $(cargo --version)"
}

pick_python() {
    # A probe's complaints stay quiet (pyenv's shims exist for versions that are not
    # selected and say "pyenv: python3.13: command not found" when run).
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    say "ERROR: Python >= 3.11 is required"
    exit 1
}

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        local python
        python="$(pick_python)"
        say "creating virtualenv $VENV with $($python --version 2>&1)"
        quietly "creating the virtualenv" "$python" -m venv "$VENV"
        quietly "upgrading pip" "$VENV/bin/python" -m pip install -q --upgrade pip
    fi
    say "installing Python tools into $VENV"
    quietly "installing maturin" "$VENV/bin/python" -m pip install -q "maturin>=1.7,<2"
}

build_edgenode() {
    say "building edgenode and its Rust extension (profile: $PROFILE)"
    local flags=()
    if [ "$PROFILE" = "release" ]; then flags+=(--release); fi
    (cd "$ROOT" && export VIRTUAL_ENV="$VENV" && quietly "building the Rust extension" \
        "$VENV/bin/maturin" develop --extras dev "${flags[@]}")
    if [ -f "$ROOT/cloud/pyproject.toml" ]; then
        say "installing the hub (cloud/)"
        quietly "installing the hub" "$VENV/bin/python" -m pip install -q -e "$ROOT/cloud[dev]"
    fi
    say "built: $("$VENV/bin/edgenode" version)"
}

main() {
    install_system_packages
    ensure_rust
    ensure_venv
    build_edgenode
    say "ready: activate with 'source $VENV/bin/activate'"
}

# Sourced (the tests call its functions), it only defines them.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main; fi
