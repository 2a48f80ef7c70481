#!/usr/bin/env bash
# Build edgenode's distributions into dist/ on Debian bookworm x86_64, from a fresh clone:
#   the sdist (and a check that it builds offline from its Cargo.lock with rustc 1.85),
#   the x86_64, aarch64 and armv7l wheels, all cp311-abi3-manylinux_2_17 (maturin --zig),
#   each checked with auditwheel and for the machine of its extension.
# Installs what it needs first (cross/install-toolchain.sh).
#
# usage: cross/build-wheels.sh [--profile release|ci] [--out DIR] [sdist|x86_64|aarch64|armv7 ...]
#   default: --profile release --out dist, all four.
#   --profile ci: release without LTO and with parallel codegen (faster to compile; the
#   CI smoke build); release is the shipped one (fat LTO, one codegen unit, see Cargo.toml).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PROFILE=release
OUT="$ROOT/dist"
WHAT=()
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) PROFILE="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
        *) WHAT+=("$1"); shift ;;
    esac
done
[ "${#WHAT[@]}" -gt 0 ] || WHAT=(sdist x86_64 "${ARCHES[@]}")
case "$PROFILE" in
    release) ;;
    ci) export CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 ;;
    *) say "ERROR: --profile is release or ci"; exit 2 ;;
esac
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
VERSION="$(project_version)"
export TIMINGS_FILE="${TIMINGS_FILE:-$CACHE/timings-build.txt}"
mkdir -p "$CACHE"

timed "install toolchain" "$CROSS_DIR/install-toolchain.sh"
MATURIN="$TOOLS_VENV/bin/maturin"
AUDITWHEEL="$TOOLS_VENV/bin/auditwheel"
# maturin finds zig (the ziglang package) on PATH through the tools venv.
export PATH="$TOOLS_VENV/bin:$PATH"

# Debian's Rust 1.85 toolchain, with its own target dir (one per profile) so that it,
# rustup's toolchain and the two profiles never invalidate each other's build caches.
debian_rust() {
    # EDGENODE_CROSS_TARGET_DIR: a build cache outside the clone (the test command's ARM
    # step keeps it in ~/.cache, so a fresh clone compiles only the crate itself).
    local target_dir="${EDGENODE_CROSS_TARGET_DIR:-$ROOT/target}/debian-rustc"
    if [ "$PROFILE" != release ]; then target_dir+="-$PROFILE"; fi
    if [ -n "${EDGENODE_CROSS_TARGET_DIR:-}" ]; then
        # Shared by clones: cargo would judge our crate by the mtimes of this clone's files
        # against artifacts another clone built. Forget its fingerprints: the dependencies
        # are reused, the crate itself is always compiled from these sources.
        rm -rf "$target_dir"/*/release/.fingerprint/edgecore_fast-*
    fi
    env CARGO="$DEBIAN_CARGO" RUSTC="$DEBIAN_RUSTC" RUSTDOC="$DEBIAN_RUSTDOC" \
        CARGO_TARGET_DIR="$target_dir" "$@"
}

# The native toolchain: rustup's when present (as scripts/setup.sh), else Debian's.
native_rust() {
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        env PATH="$HOME/.cargo/bin:$PATH" "$@"
    else
        debian_rust "$@"
    fi
}

# ELF machine of the extension inside a wheel, as readelf names it.
wheel_machine() {
    local wheel="$1" scratch machine
    scratch="$(mktemp -d)"
    python3 -m zipfile -e "$wheel" "$scratch"
    machine="$(readelf -h "$scratch"/edgenode/_edgecore_fast*.so | sed -n 's/^ *Machine: *//p')"
    rm -rf "$scratch"
    echo "$machine"
}

# auditwheel must agree that the manylinux tag in the file name is honest.
check_wheel() {
    local wheel="$1" machine="$2" elf="$3" report tag size
    report="$("$AUDITWHEEL" show "$wheel")"
    tag="$(echo "$report" | tr '\n' ' ' | grep -o '"manylinux_[0-9]*_[0-9]*_[a-z0-9_]*"' \
        | head -n 1 | tr -d '"')"
    if [ -z "$tag" ] || [[ "$(basename "$wheel")" != *"$tag"* ]]; then
        say "ERROR: auditwheel does not support the tag of $(basename "$wheel"):"
        echo "$report" >&2
        exit 1
    fi
    if [[ "$tag" != *"_$machine" ]] || [ "$(wheel_machine "$wheel")" != "$elf" ]; then
        say "ERROR: $(basename "$wheel") is not a $machine wheel"
        exit 1
    fi
    size="$(stat -c %s "$wheel")"
    say "ok: $(basename "$wheel") ($size bytes; auditwheel: $tag; extension: $elf)"
    echo "wheel $(basename "$wheel"): $size bytes" >>"$TIMINGS_FILE"
}

# Build one wheel; echo its path.
build_wheel() {
    local arch="$1" machine target elf runner
    case "$arch" in
        x86_64) machine=x86_64 target=x86_64-unknown-linux-gnu elf="Advanced Micro Devices X86-64" runner=native_rust ;;
        aarch64) machine=aarch64 target="${RUST_TARGET[$arch]}" elf=AArch64 runner=debian_rust ;;
        armv7) machine=armv7l target="${RUST_TARGET[$arch]}" elf=ARM runner=debian_rust ;;
        *) say "ERROR: unknown target '$arch'"; exit 2 ;;
    esac
    rm -f "$OUT/edgenode-$VERSION-"*"_$machine.whl"
    # --zig: zig compiles the bundled SQLite and links against glibc 2.17 symbols, so the
    # wheel honestly claims manylinux2014 (= manylinux_2_17).
    timed "build $machine wheel ($PROFILE)" "$runner" "$MATURIN" build --release --locked \
        --target "$target" --zig --compatibility "$MANYLINUX" --out "$OUT" >&2
    local wheel
    wheel="$(ls "$OUT/edgenode-$VERSION-cp311-abi3-"*"_$machine.whl")"
    check_wheel "$wheel" "$machine" "$elf"
}

build_unpacked_sdist() {
    (cd "$1" && env CARGO_NET_OFFLINE=true CARGO="$DEBIAN_CARGO" RUSTC="$DEBIAN_RUSTC" \
        CARGO_TARGET_DIR="$ROOT/target/sdist-check" \
        "$MATURIN" build --offline --locked --out "$2")
}

# The sdist, and proof that it builds offline from its own Cargo.lock with rustc 1.85:
# unpack it, then `maturin build --offline --locked` (cargo may use the registry cache in
# ~/.cargo but not the network) builds a wheel from it with Debian's rustc.
build_sdist() {
    rm -f "$OUT/edgenode-$VERSION.tar.gz"
    timed "build sdist" "$MATURIN" sdist --out "$OUT" >&2
    local sdist="$OUT/edgenode-$VERSION.tar.gz" scratch
    tar -tzf "$sdist" | grep -x "edgenode-$VERSION/Cargo.lock" >/dev/null \
        || { say "ERROR: the sdist has no Cargo.lock"; exit 1; }
    # Fill the registry cache from the repository's Cargo.lock (the one online step), so
    # that the offline build below proves the sdist needs nothing its Cargo.lock does not name.
    debian_rust "$DEBIAN_CARGO" fetch --locked --manifest-path "$ROOT/Cargo.toml" >&2
    scratch="$(mktemp -d)"
    tar -xzf "$sdist" -C "$scratch"
    # Fresh mtimes: the crate itself is compiled from the sdist's sources every time (the
    # dependencies' artifacts may come from the cache, but cargo still has to load their
    # sources, offline, from the registry cache to resolve them).
    find "$scratch" -type f -exec touch {} +
    timed "check sdist builds offline (rustc 1.85, --locked)" \
        build_unpacked_sdist "$scratch/edgenode-$VERSION" "$scratch/wheel" >&2
    ls "$scratch"/wheel/edgenode-"$VERSION"-*.whl >/dev/null
    rm -rf "$scratch"
    say "ok: $(basename "$sdist") ($(stat -c %s "$sdist") bytes) builds offline with $("$DEBIAN_RUSTC" --version)"
}

for what in "${WHAT[@]}"; do
    case "$what" in
        sdist) build_sdist ;;
        *) build_wheel "$what" ;;
    esac
done
say "built into $OUT:"
ls -l "$OUT" >&2
