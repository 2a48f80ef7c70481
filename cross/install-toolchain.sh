#!/usr/bin/env bash
# Install the ARM cross toolchain on Debian bookworm x86_64 (idempotent; quick when present):
#   - Debian's rustc-web/cargo-web (/usr/bin/rustc, /usr/bin/cargo) pinned to the newest
#     version whose standard library exists for amd64, arm64 AND armhf (computed now: point
#     releases move it, and an unpinned install mixes versions);
#   - that version's arm64 and armhf std, unpacked into /usr/lib/rustlib/<target>/ (installing
#     libstd-rust-web-dev:arm64 through apt trips over multiarch skew of unrelated libraries);
#   - the C cross compilers (linkers of plain `cargo build --target`) and qemu-user-static;
#   - a tools virtualenv in cross/.cache/venv with maturin, ziglang and auditwheel.
# rustup's toolchain in ~/.cargo/bin is left alone: native builds keep using it.
#
# Exits 75 with "UNAVAILABLE: <reason>" on stderr when apt cannot provide the toolchain;
# any other non-zero status is a real failure.
set -euo pipefail
export LC_ALL=C
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

HOST_PACKAGES=(
    gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross
    qemu-user-static
)
STAMP_NAME=.edgenode-deb-version
APT=(apt-get -o DPkg::Lock::Timeout=600 -q)

unavailable() {
    echo "UNAVAILABLE: $*" >&2
    exit "$EX_UNAVAILABLE"
}

installed_version() {
    dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null \
        | awk '$1 == "install" && $3 == "installed" { print $4 }'
}

# Is everything already in place? (no apt-get update on a machine that has it all)
toolchain_present() {
    local v arch pkg
    v="$(installed_version rustc-web)"
    [ -n "$v" ] && [ "$(installed_version cargo-web)" = "$v" ] || return 1
    for arch in "${ARCHES[@]}"; do
        [ "$(cat "/usr/lib/rustlib/${RUST_TARGET[$arch]}/$STAMP_NAME" 2>/dev/null)" = "$v" ] \
            || return 1
    done
    for pkg in "${HOST_PACKAGES[@]}"; do
        [ -n "$(installed_version "$pkg")" ] || return 1
    done
}

# All versions apt offers for PACKAGE (one per line).
offered_versions() {
    apt-cache madison "$1" 2>/dev/null | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' | sort -u
}

# The newest libstd-rust-web-dev version offered for amd64, arm64 and armhf alike.
common_version() {
    local common arch
    common="$(offered_versions libstd-rust-web-dev)"
    for arch in "${ARCHES[@]}"; do
        common="$(comm -12 <(echo "$common") <(offered_versions "libstd-rust-web-dev:${DEB_ARCH[$arch]}"))"
    done
    echo "$common" | sed '/^$/d' | sort -V | tail -n 1
}

install_from_apt() {
    local arch
    for arch in "${ARCHES[@]}"; do
        if ! dpkg --print-foreign-architectures | grep -qx "${DEB_ARCH[$arch]}"; then
            say "adding the Debian architecture ${DEB_ARCH[$arch]}"
            as_root dpkg --add-architecture "${DEB_ARCH[$arch]}"
        fi
    done
    # One index may fail ("Mirror sync in progress"): warn and use what loaded.
    if ! as_root "${APT[@]}" update >&2; then
        say "WARNING: apt-get update failed for some index; continuing with what loaded"
    fi

    local v minor scratch
    v="$(common_version)"
    [ -n "$v" ] || unavailable "no libstd-rust-web-dev version is offered for amd64, arm64 and armhf alike"
    minor="$(echo "$v" | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')"
    say "Debian Rust version common to amd64/arm64/armhf: $v"

    local pkg
    for pkg in "${HOST_PACKAGES[@]}"; do
        apt-cache show "$pkg" >/dev/null 2>&1 || unavailable "package $pkg is not in any apt index"
    done
    as_root env DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y --no-install-recommends \
        --allow-downgrades \
        "rustc-web=$v" "cargo-web=$v" "libstd-rust-web-dev=$v" "libstd-rust-web-$minor=$v" \
        "${HOST_PACKAGES[@]}" >&2 \
        || unavailable "apt-get install of rustc-web=$v and the cross compilers failed"

    scratch="$(mktemp -d)"
    chmod a+rwx "$scratch" # apt-get download writes as the _apt user
    for arch in "${ARCHES[@]}"; do
        local target="${RUST_TARGET[$arch]}" deb
        say "unpacking libstd-rust-web-dev:${DEB_ARCH[$arch]}=$v into /usr/lib/rustlib/$target"
        (cd "$scratch" && "${APT[@]}" download "libstd-rust-web-dev:${DEB_ARCH[$arch]}=$v" >&2) \
            || unavailable "apt-get download libstd-rust-web-dev:${DEB_ARCH[$arch]}=$v failed"
        deb="$(ls "$scratch"/libstd-rust-web-dev_*_"${DEB_ARCH[$arch]}".deb)"
        dpkg -x "$deb" "$scratch/x-$arch"
        as_root rm -rf "/usr/lib/rustlib/$target"
        as_root cp -a "$scratch/x-$arch/usr/lib/rustlib/$target" /usr/lib/rustlib/
        echo "$v" | as_root tee "/usr/lib/rustlib/$target/$STAMP_NAME" >/dev/null
    done
    rm -rf "$scratch"
}

# Compile a one-line library for every target: proves compiler and std agree.
check_targets() {
    local scratch arch
    scratch="$(mktemp -d)"
    echo 'pub fn answer() -> usize { std::env::args().count() }' >"$scratch/probe.rs"
    for arch in "${ARCHES[@]}"; do
        "$DEBIAN_RUSTC" --edition 2021 --crate-type lib --target "${RUST_TARGET[$arch]}" \
            -o "$scratch/probe-$arch.rlib" "$scratch/probe.rs"
    done
    rm -rf "$scratch"
    say "toolchain: $("$DEBIAN_RUSTC" --version), std for ${ARCHES[*]}, $(qemu-aarch64-static --version | head -n 1)"
}

if toolchain_present; then
    say "cross toolchain present (rustc-web $(installed_version rustc-web))"
else
    install_from_apt
fi
check_targets
ensure_tools_venv
