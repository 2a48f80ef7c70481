#!/bin/sh
# The fleet's one-shot "tokens" service: register each node named on the command line at
# the hub and keep its join token in /tokens/NAME.token (readable by the nodes' uid 10001).
# A token already there is kept, so `up` again changes nothing.
set -eu
HUB=http://hub:8080
ADMIN=/var/lib/edgehub/admin.token
# The hub writes its admin token on first start and answers /healthz once it listens.
tries=0
until [ -s "$ADMIN" ] && python3 -c "import urllib.request as u; u.urlopen('$HUB/healthz', timeout=2)" 2>/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -lt 120 ] || { echo "tokens: the hub did not come up at $HUB" >&2; exit 1; }
    sleep 0.5
done
for name in "$@"; do
    if [ -s "/tokens/$name.token" ]; then
        echo "tokens: $name already has a token"
        continue
    fi
    edgectl --hub "$HUB" --token-file "$ADMIN" node add "$name" --label fleet=local \
        | tail -n 1 >"/tokens/$name.token.new"
    chown 10001:10001 "/tokens/$name.token.new"
    chmod 0400 "/tokens/$name.token.new"
    mv "/tokens/$name.token.new" "/tokens/$name.token"
    echo "tokens: $name registered"
done
