# Shared by the scripts in cross/ (sourced, not run): paths, target tables, small helpers.
# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source it

CROSS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$CROSS_DIR/.." && pwd)"
# Everything downloaded or generated (tool venv, .debs, sysroots, emulated site-packages)
# lives here; it is gitignored and safe to delete.
CACHE="${EDGENODE_CROSS_CACHE:-$CROSS_DIR/.cache}"
TOOLS_VENV="$CACHE/venv"

# Exit status of install-toolchain.sh when apt cannot provide the toolchain (no common
# rustc-web version, a package missing from the indexes, a download refused): callers that
# may skip (the CI smoke step) tell it apart from a real failure.
EX_UNAVAILABLE=75

# Debian's compiler and the standard libraries unpacked into /usr/lib/rustlib: the cross
# builds always use these, never rustup's toolchain (which has no ARM std here).
DEBIAN_RUSTC=/usr/bin/rustc
DEBIAN_CARGO=/usr/bin/cargo
DEBIAN_RUSTDOC=/usr/bin/rustdoc

# Short names used on the command line -> Rust target, Debian architecture, qemu, wheel tag.
ARCHES=(aarch64 armv7)
declare -A RUST_TARGET=([aarch64]=aarch64-unknown-linux-gnu [armv7]=armv7-unknown-linux-gnueabihf)
declare -A DEB_ARCH=([aarch64]=arm64 [armv7]=armhf)
declare -A QEMU=([aarch64]=qemu-aarch64-static [armv7]=qemu-arm-static)
declare -A MACHINE=([aarch64]=aarch64 [armv7]=armv7l)
# Dependencies of the wheel with no wheel on PyPI for that architecture: make-sysroot.sh
# puts Debian's package into the sysroot and test-emulated.sh does not install them with pip.
declare -A FROM_DEBIAN=([aarch64]="" [armv7]="psutil")

# The lowest manylinux tag we claim: glibc 2.17 (zig links against that glibc's symbols).
MANYLINUX="${EDGENODE_MANYLINUX:-manylinux2014}"

# Tools for building wheels: maturin (as in pyproject.toml), zig (the C compiler and linker
# for every target, against glibc 2.17), auditwheel (checks the tag we claim).
TOOLS_REQUIREMENTS=("maturin>=1.7,<2" "ziglang>=0.13" "auditwheel>=6")

say() { printf '\033[1m[cross]\033[0m %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

now() { date +%s.%N; }

# Print "[time] LABEL: N.N s" since START and append it to $TIMINGS_FILE when set.
report_time() {
    local label="$1" start="$2" line
    line="$(awk -v s="$start" -v e="$(now)" -v l="$label" 'BEGIN { printf "%s: %.1f s", l, e - s }')"
    printf '\033[1m[time]\033[0m %s\n' "$line" >&2
    if [ -n "${TIMINGS_FILE:-}" ]; then echo "$line" >>"$TIMINGS_FILE"; fi
}

# Run "$@" as a timed step.
timed() {
    local label="$1" start
    shift
    start="$(now)"
    "$@"
    report_time "$label" "$start"
}

check_arch() {
    local arch="$1"
    if [ -z "${RUST_TARGET[$arch]:-}" ]; then
        say "ERROR: unknown architecture '$arch' (one of: ${ARCHES[*]})"
        exit 2
    fi
}

# The wheel version comes from Cargo.toml's workspace version (maturin's dynamic version).
project_version() {
    sed -n '/^\[workspace.package\]/,/^\[/{s/^version *= *"\(.*\)"/\1/p}' "$ROOT/Cargo.toml"
}

# The emulated python (ARCH SYSROOT SITE) with a clean environment: only the wheel's site
# directory on sys.path, the Rust backend required. Sets the array EMULATED_PYTHON (a command
# that can run in the background: its pid is the emulator's).
emulated_python_command() {
    local arch="$1" sysroot="$2" site="$3"
    EMULATED_PYTHON=(
        env -i HOME="$HOME" PATH=/usr/bin:/bin LANG=C.UTF-8 TMPDIR=/tmp
        PYTHONPATH="$site" PYTHONNOUSERSITE=1 EDGENODE_BACKEND=rust
        HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-default}"
        "${QEMU[$arch]}" -L "$sysroot" "$sysroot/usr/bin/python3.11"
    )
}

# Run the emulated python: ARCH SYSROOT SITE ARGS...
emulated_python() {
    emulated_python_command "$1" "$2" "$3"
    shift 3
    "${EMULATED_PYTHON[@]}" "$@"
}

ensure_tools_venv() {
    if [ ! -x "$TOOLS_VENV/bin/python" ]; then
        say "creating the build tools virtualenv $TOOLS_VENV"
        mkdir -p "$CACHE"
        python3 -m venv "$TOOLS_VENV"
    fi
    if ! "$TOOLS_VENV/bin/python" -m pip show -q maturin ziglang auditwheel >/dev/null 2>&1; then
        say "installing ${TOOLS_REQUIREMENTS[*]} into $TOOLS_VENV"
        "$TOOLS_VENV/bin/python" -m pip install -q --disable-pip-version-check \
            "${TOOLS_REQUIREMENTS[@]}"
    fi
}
