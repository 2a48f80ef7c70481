#!/bin/sh
# systemd as PID 1 in a container. LoadCredential= bind-mounts the credential under
# /run/credentials/UNIT, which fails ("Permission denied") unless / is a shared mount.
set -eu
mount --make-rshared /
exec /sbin/init
