#!/usr/bin/env bash
# Build a wheelhouse: every wheel an install of edgenode (and, for x86_64, the hub) needs,
# so that images and offline sites install with `pip install --no-index --find-links DIR`
# (here HTTPS from inside a container to the package index fails; offline sites have none).
#   x86_64:        edgenode (Rust extension built by maturin), edgehub (cloud/), and all
#                  their dependencies: what cloud/Containerfile installs;
#   aarch64/armv7: edgenode's manylinux_2_17 wheel (cross/build-wheels.sh) and its
#                  dependencies for CPython 3.11 on that CPU: what a Raspberry Pi installs.
#                  psutil is left to Debian's python3-psutil where PyPI has no wheel (armv7l).
# Dependencies are fetched as binary wheels for the target (pip download --platform), so
# the host's Python version does not matter; the target is CPython 3.11 (bookworm).
#
# usage: deploy/images/wheelhouse.sh [--target x86_64|aarch64|armv7] [--profile release|ci] [--out DIR]
#   default: --target x86_64 --profile release (or $EDGENODE_WHEELHOUSE_PROFILE)
#   --out dist/wheelhouse (dist/wheelhouse-TARGET
#   for ARM). --profile ci: release without LTO (quicker to compile; the tests' ARM wheels);
#   --profile dev (x86_64): the unoptimised build scripts/setup.sh made (the tests' images).
# Needs Rust and Python >= 3.11 with venv (scripts/setup.sh installs both); ARM targets
# install the cross toolchain (cross/install-toolchain.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET=x86_64
PROFILE="${EDGENODE_WHEELHOUSE_PROFILE:-release}"
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --target) TARGET="$2"; shift 2 ;;
        --profile) PROFILE="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case "$TARGET" in
    x86_64) MACHINE=x86_64 ;;
    aarch64) MACHINE=aarch64 ;;
    armv7) MACHINE=armv7l ;;
    *) die "unknown --target $TARGET (x86_64, aarch64, armv7)" ;;
esac
case "$PROFILE" in
    release | ci) ;;
    dev) [ "$TARGET" = x86_64 ] || die "--profile dev is for the x86_64 wheelhouse only" ;;
    *) die "--profile is release, ci or dev" ;;
esac
[ -n "$OUT" ] || { OUT="$ROOT/dist/wheelhouse"; [ "$TARGET" = x86_64 ] || OUT+="-$TARGET"; }
START=$SECONDS

# A Python with pip: the project's .venv when there is one, else a small venv of our own.
PYTHON="${EDGENODE_PYTHON:-$ROOT/.venv/bin/python}"
if [ ! -x "$PYTHON" ]; then
    PYTHON="$ROOT/target/wheelhouse-venv/bin/python"
    [ -x "$PYTHON" ] || python3 -m venv "$ROOT/target/wheelhouse-venv"
fi
PIP=("$PYTHON" -m pip --disable-pip-version-check)
VERSION="$(sed -n '/^\[workspace.package\]/,/^\[/{s/^version *= *"\(.*\)"/\1/p}' "$ROOT/Cargo.toml")"
HUB_VERSION="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/cloud/pyproject.toml")"

# Fresh folder: a wheelhouse holds exactly one build of the project (pip's own cache keeps
# the dependency downloads quick).
rm -rf "$OUT"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

if [ "$TARGET" = x86_64 ]; then
    [ "$(uname -m)" = x86_64 ] || die "the x86_64 wheelhouse is built on an x86_64 machine"
    say "building edgenode $VERSION (maturin, profile $PROFILE) and edgehub $HUB_VERSION"
    case "$PROFILE" in
        ci) export CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
            export CARGO_TARGET_DIR="$ROOT/target/wheelhouse-ci" ;;
        # The unoptimised build in target/debug that scripts/setup.sh made: seconds instead
        # of minutes (the tests' images; behaviour is the same, only slower).
        dev) export MATURIN_PEP517_ARGS="--profile dev" ;;
    esac
    # pip builds both with their own build backends (maturin, setuptools) in isolation.
    "${PIP[@]}" wheel -q --no-deps --wheel-dir "$OUT" "$ROOT" "$ROOT/cloud" >&2
    rm -rf "$ROOT/cloud/build"  # setuptools' scratch folder
    WANTED=("edgenode==$VERSION" "edgehub==$HUB_VERSION")
    PYPI_ARCH=(--platform "manylinux2014_$MACHINE")
else
    say "building edgenode $VERSION for $MACHINE (cross/build-wheels.sh, profile $PROFILE)"
    "$ROOT/cross/build-wheels.sh" --profile "$PROFILE" --out "$OUT" "$TARGET" >&2
    WANTED=("edgenode==$VERSION")
    PYPI_ARCH=(--platform "manylinux2014_$MACHINE")
fi

# Every manylinux_2_Y up to bookworm's glibc 2.36 (older pips do not expand the list).
for minor in $(seq 17 36); do PYPI_ARCH+=(--platform "manylinux_2_${minor}_$MACHINE"); done
TARGET_PYTHON=(--only-binary=:all: "${PYPI_ARCH[@]}" --platform "linux_$MACHINE"
    --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none)

# The requirements of a wheel (Requires-Dist without an environment marker) but SKIP.
requirements() {
    "$PYTHON" - "$1" "$2" <<'PY'
import re, sys, zipfile
wheel, skip = sys.argv[1], set(sys.argv[2].split())
with zipfile.ZipFile(wheel) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    for line in z.read(meta).decode().splitlines():
        if line.startswith("Requires-Dist:") and ";" not in line:
            req = line.split(":", 1)[1].strip()
            if re.split(r"[<>=!~ \[(]", req, maxsplit=1)[0].lower() not in skip:
                print(req)
PY
}

if [ "$TARGET" = armv7 ]; then
    # PyPI has no armv7l psutil: the Pi's python3-psutil serves (the venv sees it through
    # --system-site-packages), so resolve edgenode's other requirements only.
    wheel="$(ls "$OUT"/edgenode-"$VERSION"-*_"$MACHINE".whl)"
    mapfile -t WANTED < <(requirements "$wheel" psutil)
fi
say "downloading the dependencies for CPython 3.11 on $MACHINE"
"${PIP[@]}" download -q "${TARGET_PYTHON[@]}" --find-links "$OUT" --dest "$OUT" "${WANTED[@]}" >&2

say "wheelhouse $OUT: $(find "$OUT" -name '*.whl' | wc -l) wheels, $(du -sh "$OUT" | cut -f1), $((SECONDS - START)) s"
