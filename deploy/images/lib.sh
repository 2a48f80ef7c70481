# Shared by the scripts in deploy/images/ (sourced, not run): paths, logging, apt, binfmt.
# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source it

IMAGES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$IMAGES_DIR/../.." && pwd)"
# Label holding the hash of what an image was made from: a script compares it with the hash
# of today's inputs and rebuilds only when they differ.
INPUTS_LABEL=org.edgenode.inputs

say() { printf '\033[1m[%s]\033[0m %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Install the Debian packages that are missing (quick no-op when all are there). A failing
# index ("Mirror sync in progress") is a warning: what we need may still be installable.
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    command -v apt-get >/dev/null 2>&1 || die "no apt-get to install ${missing[*]} (Debian is required)"
    say "installing ${missing[*]} (apt)"
    as_root apt-get -o DPkg::Lock::Timeout=600 -q update >&2 \
        || say "WARNING: apt-get update failed for some index; continuing with what loaded"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q install \
        -y --no-install-recommends "${missing[@]}" >&2
}

# The Debian mirror the host uses (the first URIs: of its deb822 sources, else sources.list).
host_mirror() {
    local uri
    uri="$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null \
        | grep -v security | head -n 1)"
    [ -n "$uri" ] || uri="$(awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }' \
        /etc/apt/sources.list 2>/dev/null)"
    echo "${uri:-http://deb.debian.org/debian}"
}

# Debian architecture name of this machine (amd64, arm64, ...).
host_arch() { dpkg --print-architecture; }

# Let this machine run binaries of Debian architecture ARCH (arm64, armhf) through
# qemu-user-static: binfmt_misc is in the kernel but neither mounted nor registered here.
# The interpreters' flags include F (the kernel opens qemu at registration), so they also
# work inside chroots and containers.
ensure_binfmt() {
    local arch="$1" name
    case "$arch" in
        "$(host_arch)") return 0 ;;
        arm64) name=qemu-aarch64 ;;
        armhf) name=qemu-arm ;;
        *) die "no qemu interpreter known for $arch" ;;
    esac
    apt_install qemu-user-static
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        as_root mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    if [ ! -e "/proc/sys/fs/binfmt_misc/$name" ]; then
        say "registering $name with binfmt_misc"
        grep -v '^#' "/usr/lib/binfmt.d/$name.conf" | as_root tee /proc/sys/fs/binfmt_misc/register >/dev/null
    fi
    grep -qx enabled "/proc/sys/fs/binfmt_misc/$name" || die "binfmt $name is registered but disabled"
}

# The value of the inputs label of IMAGE ("" when there is no such image).
image_inputs() {
    docker image inspect -f "{{ index .Config.Labels \"$INPUTS_LABEL\" }}" "$1" 2>/dev/null || true
}
