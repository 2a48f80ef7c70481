#!/usr/bin/env bash
# Make a minimal Debian bookworm image from Debian's own packages, without a registry:
# debootstrap a root filesystem from the mirror this machine's apt uses, drop apt's caches
# and the docs, and `docker import` it. Rebuilt only when its inputs change: a hash of the
# recipe (the code of make_rootfs below, without comments), the options, the mirror and
# the host's apt sources is kept in the image's label org.edgenode.inputs.
#
# usage: deploy/images/base.sh [--arch amd64|arm64|armhf] [--include PKG,PKG...] [--tag IMAGE] [--force]
#   default: this machine's architecture, --tag edgenode-base:bookworm (for amd64; other
#   architectures edgenode-base:bookworm-ARCH), python3 and python3-venv always included.
#   --include adds Debian packages of the target (e.g. mosquitto,python3-psutil).
#   Foreign architectures run under qemu-user-static through binfmt_misc (set up here).
#   --force rebuilds even when the label matches (e.g. to pick up new security updates).
# Then: docker build --build-arg BASE_IMAGE=edgenode-base:bookworm -f cloud/Containerfile .
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUITE=bookworm
ARCH="$(host_arch)"
INCLUDE=python3,python3-venv
TAG=""
FORCE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) ARCH="$2"; shift 2 ;;
        --include) INCLUDE="$INCLUDE,$2"; shift 2 ;;
        --tag) TAG="$2"; shift 2 ;;
        --force) FORCE=1; shift ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
if [ -z "$TAG" ]; then
    TAG="edgenode-base:$SUITE"
    [ "$ARCH" = "$(host_arch)" ] || TAG+="-$ARCH"
fi
case "$ARCH" in
    amd64) PLATFORM=linux/amd64 MACHINE=x86_64 ;;
    arm64) PLATFORM=linux/arm64 MACHINE=aarch64 ;;
    armhf) PLATFORM=linux/arm/v7 MACHINE=armv7l ;;
    *) die "unsupported architecture $ARCH (amd64, arm64, armhf)" ;;
esac
command -v docker >/dev/null 2>&1 || die "no docker command (a container engine is needed to import the image)"
MIRROR="$(host_mirror)"

# The root filesystem in $1 (as root). Everything that decides the image's content is
# here: its code is part of the inputs hash.
make_rootfs() {
    local rootfs="$1"
    # minbase: essential packages and apt only. No --foreign needed: binfmt runs the
    # target's binaries for the second stage.
    debootstrap --arch="$ARCH" --variant=minbase --include="$INCLUDE" \
        "$SUITE" "$rootfs" "$MIRROR"
    # Small: no package caches or lists (~95 MB), docs, man pages or translations (as
    # Debian's -slim images; copyright files stay), and later apt installs keep to that.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
    find "$rootfs"/usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/locale/*' >"$rootfs"/etc/dpkg/dpkg.cfg.d/edgenode-slim
    printf '%s\n' 'APT::Install-Recommends "false";' \
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
        >"$rootfs"/etc/apt/apt.conf.d/edgenode-clean
    # The host's sources (the same mirrors, with updates and security) over debootstrap's.
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        cp /etc/apt/sources.list.d/debian.sources "$rootfs"/etc/apt/sources.list.d/
        rm -f "$rootfs"/etc/apt/sources.list
    fi
    : >"$rootfs"/etc/hostname
}

INPUTS="$( { declare -f make_rootfs; echo "$SUITE $ARCH $INCLUDE $MIRROR"; \
    cat /etc/apt/sources.list.d/debian.sources 2>/dev/null || true; } | sha256sum | cut -c1-16)"
if [ "$FORCE" = 0 ] && [ "$(image_inputs "$TAG")" = "$INPUTS" ]; then
    say "$TAG is up to date (inputs $INPUTS)"
    exit 0
fi

START=$SECONDS
apt_install debootstrap
ensure_binfmt "$ARCH"
ROOTFS="$(mktemp -d /var/tmp/edgenode-rootfs.XXXXXX)"
# debootstrap mounts /proc (and more) inside while it works: unmount whatever a failure
# left before removing, and never cross into another file system.
cleanup() {
    grep -o " $ROOTFS/[^ ]*" /proc/mounts | sort -r | xargs -r -n 1 umount -l 2>/dev/null || true
    rm -rf --one-file-system "$ROOTFS" "$ROOTFS.log"
}
trap cleanup EXIT
trap 'exit 143' TERM INT  # a caller stopping us: clean up (EXIT) all the same
say "debootstrap $SUITE $ARCH from $MIRROR with $INCLUDE (about 1 min native, 3-5 min emulated)"
as_root bash -c "$(declare -f make_rootfs); $(declare -p ARCH INCLUDE SUITE MIRROR); \
    make_rootfs '$ROOTFS'" >"$ROOTFS.log" 2>&1 \
    || { tail -n 30 "$ROOTFS.log" >&2; die "debootstrap of $SUITE $ARCH failed (log above)"; }

say "importing as $TAG ($PLATFORM)"
PREVIOUS="$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)"
as_root tar -C "$ROOTFS" --numeric-owner -c . \
    | docker import --platform "$PLATFORM" --change "LABEL $INPUTS_LABEL=$INPUTS" \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$TAG" >/dev/null
# The image's metadata may still say amd64 (Docker 20.10 ignores --platform on import):
# what counts is that its programs run, here through binfmt for a foreign architecture.
RUNS_AS="$(docker run --rm "$TAG" uname -m)"
[ "$RUNS_AS" = "$MACHINE" ] || die "$TAG runs as $RUNS_AS, not $MACHINE"
# The image this one replaces, unless images built from it still need it.
if [ -n "$PREVIOUS" ]; then docker rmi "$PREVIOUS" >/dev/null 2>&1 || true; fi
say "$TAG built in $((SECONDS - START)) s: $(docker image inspect -f '{{.Size}}' "$TAG" \
    | awk '{ printf "%.0f MB", $1 / 1e6 }'), $RUNS_AS"
