#!/usr/bin/env bash
# Make a minimal Debian bookworm image from Debian's own packages, without a registry:
# debootstrap a root filesystem from the mirror this machine's apt uses, drop apt's caches
# and the docs, and `docker import` it. Rebuilt only when its inputs change: the hash of
# this script, the options and the mirror is kept in the image's label org.edgenode.inputs.
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
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
if [ -z "$TAG" ]; then
    TAG="edgenode-base:$SUITE"
    [ "$ARCH" = "$(host_arch)" ] || TAG+="-$ARCH"
fi
case "$ARCH" in
    amd64) PLATFORM=linux/amd64 ;;
    arm64) PLATFORM=linux/arm64 ;;
    armhf) PLATFORM=linux/arm/v7 ;;
    *) die "unsupported architecture $ARCH (amd64, arm64, armhf)" ;;
esac
command -v docker >/dev/null 2>&1 || die "no docker command (a container engine is needed to import the image)"
MIRROR="$(host_mirror)"

INPUTS="$( { cat "$0" "$IMAGES_DIR/lib.sh"; echo "$SUITE $ARCH $INCLUDE $MIRROR"; \
    cat /etc/apt/sources.list.d/debian.sources 2>/dev/null || true; } | sha256sum | cut -c1-16)"
if [ "$FORCE" = 0 ] && [ "$(image_inputs "$TAG")" = "$INPUTS" ]; then
    say "$TAG is up to date (inputs $INPUTS)"
    exit 0
fi

START=$SECONDS
apt_install debootstrap
ensure_binfmt "$ARCH"
ROOTFS="$(mktemp -d /var/tmp/edgenode-rootfs.XXXXXX)"
trap 'as_root rm -rf "$ROOTFS"' EXIT
say "debootstrap $SUITE $ARCH from $MIRROR with $INCLUDE (about 40 s native, 3 min emulated)"
# minbase: essential packages and apt only; no --foreign needed: binfmt runs the target's
# binaries for the second stage.
as_root debootstrap --arch="$ARCH" --variant=minbase --include="$INCLUDE" \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 \
    || { tail -n 30 "$ROOTFS.log" >&2; die "debootstrap failed (log: $ROOTFS.log)"; }
rm -f "$ROOTFS.log"

# Small image: no package caches or lists (~95 MB), no docs, man pages or translations
# (as Debian's -slim images; copyright files stay). Later apt installs keep to that.
as_root sh -c "
    rm -rf '$ROOTFS'/var/cache/apt/archives/*.deb '$ROOTFS'/var/cache/apt/*.bin \
        '$ROOTFS'/var/lib/apt/lists/* '$ROOTFS'/var/log/*.log '$ROOTFS'/var/cache/debconf/*-old
    find '$ROOTFS'/usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf '$ROOTFS'/usr/share/man/* '$ROOTFS'/usr/share/info/* '$ROOTFS'/usr/share/locale/*
    cat >'$ROOTFS'/etc/dpkg/dpkg.cfg.d/edgenode-slim <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
SLIM
    cat >'$ROOTFS'/etc/apt/apt.conf.d/edgenode-clean <<'CLEAN'
DPkg::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true\"; };
APT::Install-Recommends \"false\";
CLEAN
    # The host's sources (same mirrors, with updates and security), instead of debootstrap's.
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        cp /etc/apt/sources.list.d/debian.sources '$ROOTFS'/etc/apt/sources.list.d/
        rm -f '$ROOTFS'/etc/apt/sources.list
    fi
    : >'$ROOTFS'/etc/hostname
"
say "importing as $TAG ($PLATFORM)"
as_root tar -C "$ROOTFS" --numeric-owner -c . \
    | docker import --platform "$PLATFORM" --change "LABEL $INPUTS_LABEL=$INPUTS" \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$TAG" >/dev/null
say "$TAG built in $((SECONDS - START)) s: $(docker image inspect -f '{{.Size}}' "$TAG" \
    | awk '{ printf "%.0f MB", $1 / 1e6 }'), $(docker run --rm --platform "$PLATFORM" "$TAG" uname -m)"
