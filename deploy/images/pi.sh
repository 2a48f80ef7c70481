#!/usr/bin/env bash
# The emulated Raspberry Pi images of the test command's ARM step: Debian bookworm for
# arm64 (64-bit Raspberry Pi OS) and armhf (32-bit), made by base.sh with what README's
# Raspberry Pi steps install from Debian (python3-venv, python3-psutil, mosquitto), plus
# Mosquitto's clients (the test's device) and sudo (the steps use it). Cached by their
# inputs: a no-op in a second when nothing changed, 3-7 min each the first time.
#
# usage: deploy/images/pi.sh [--prepare] [arm64|armhf ...]   (default: both)
#   --prepare: only install debootstrap and qemu-user-static (apt), then exit; lets a
#   caller run the builds in the background without racing another apt for its lock.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=python3-psutil,mosquitto,mosquitto-clients,sudo
if [ "${1:-}" = --prepare ]; then
    apt_install debootstrap qemu-user-static
    exit 0
fi
ARCHES=("$@")
[ "${#ARCHES[@]}" -gt 0 ] || ARCHES=(arm64 armhf)
for arch in "${ARCHES[@]}"; do
    "$IMAGES_DIR/base.sh" --arch "$arch" --include "$PACKAGES" --tag "edgenode-pi:bookworm-$arch"
done
