#!/usr/bin/env bash
# Assemble an emulated ARM CPython 3.11 from Debian bookworm's arm64/armhf packages into
# cross/.cache/sysroot-<arch> (cached; rebuilt only when the package list changes), run with
#   qemu-aarch64-static -L SYSROOT SYSROOT/usr/bin/python3.11   (qemu-arm-static for armv7).
# Needs the foreign architectures added (cross/install-toolchain.sh does that).
#
# usage: cross/make-sysroot.sh aarch64|armv7     (prints the sysroot path on stdout)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ARCH="${1:?usage: make-sysroot.sh aarch64|armv7}"
check_arch "$ARCH"
SYSROOT="$CACHE/sysroot-$ARCH"
DEBS="$CACHE/debs-$ARCH"

# CPython 3.11 (interpreter and standard library) and the shared libraries its modules load:
# libc, zlib, expat, OpenSSL, libffi (ctypes), SQLite (sqlite3), bz2/lzma, curses/readline,
# uuid, dbm, nsl/tirpc, crypt, Kerberos (ssl).
PACKAGES=(
    python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
    libc6 libgcc-s1 zlib1g libexpat1 libssl3 libffi8 libsqlite3-0 libbz2-1.0 liblzma5
    libncursesw6 libtinfo6 libreadline8 libuuid1 libdb5.3 libnsl2 libtirpc3 libcrypt1
    libgssapi-krb5-2 libkrb5-3 libk5crypto3 libcom-err2 libkrb5support0 libkeyutils1
)
# Runtime dependencies PyPI has no wheel for on this architecture come from Debian (into
# /usr/lib/python3/dist-packages, on the emulated interpreter's sys.path): psutil for armhf.
if [ "$ARCH" = armv7 ]; then PACKAGES+=(python3-psutil); fi
STAMP="$SYSROOT/.edgenode-packages"
WANTED="${PACKAGES[*]}"

if [ -x "$SYSROOT/usr/bin/python3.11" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANTED" ]; then
    say "sysroot for $ARCH present: $SYSROOT"
    echo "$SYSROOT"
    exit 0
fi

say "assembling the $ARCH CPython 3.11 sysroot in $SYSROOT"
rm -rf "$SYSROOT" "$DEBS"
mkdir -p "$DEBS"
chmod a+rwx "$DEBS" # apt-get download writes as the _apt user
names=()
for pkg in "${PACKAGES[@]}"; do names+=("$pkg:${DEB_ARCH[$ARCH]}"); done
(cd "$DEBS" && apt-get -q download "${names[@]}" >&2)
for deb in "$DEBS"/*.deb; do
    dpkg -x "$deb" "$SYSROOT"
done
echo "$WANTED" >"$STAMP"
rm -rf "$DEBS"
echo "$SYSROOT"
