#!/usr/bin/env bash
# A local fleet in one command: the wheelhouse, the images (from a Debian made here by
# debootstrap unless BASE_IMAGE names another), then a hub, Mosquitto and three nodes
# (deploy/compose/docker-compose.yml) up and joined. Prints `edgectl get nodes` when all
# three are Ready. `deploy/compose/up.sh down` removes the fleet, its volumes and images.
#
# Environment: BASE_IMAGE (default edgenode-base:bookworm, made by deploy/images/base.sh;
# with a registry debian:bookworm-slim also works), COMPOSE_PROJECT_NAME (edgenode-fleet),
# EDGEHUB_API_PORT / EDGEHUB_LINK_PORT (8080 / 8443 on 127.0.0.1),
# EDGENODE_WHEELHOUSE_PROFILE (release; dev reuses scripts/setup.sh's build).
# Uses `docker compose` (v2) where it exists, else Debian's `docker-compose` (1.29).
set -euo pipefail
COMPOSE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$COMPOSE_DIR/../images/lib.sh"
FILE="$COMPOSE_DIR/docker-compose.yml"
export BASE_IMAGE="${BASE_IMAGE:-edgenode-base:bookworm}"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-edgenode-fleet}"
READY_TIMEOUT="${EDGENODE_FLEET_TIMEOUT:-180}"  # seconds for three nodes to be Ready
NODES=(node-1 node-2 node-3)

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -f "$FILE" "$@"
    elif command -v docker-compose >/dev/null 2>&1; then
        docker-compose -f "$FILE" "$@"
    else
        die "neither 'docker compose' nor 'docker-compose' is installed (apt-get install docker-compose)"
    fi
}

# edgectl inside the hub container, with the admin token from the hub's volume.
edgectl() {
    compose exec -T hub edgectl --hub http://127.0.0.1:8080 \
        --token-file /var/lib/edgehub/admin.token "$@"
}

if [ "${1:-up}" = down ]; then
    compose down --volumes --rmi local
    exit 0
fi
[ "${1:-up}" = up ] || die "usage: deploy/compose/up.sh [up|down]"

START=$SECONDS
"$IMAGES_DIR/wheelhouse.sh"
if [ "$BASE_IMAGE" = edgenode-base:bookworm ]; then "$IMAGES_DIR/base.sh"; fi
say "building the images (from $BASE_IMAGE)"
compose build
compose up -d
say "waiting for ${NODES[*]} to be Ready at the hub (at most $READY_TIMEOUT s)"
deadline=$((SECONDS + READY_TIMEOUT))
until [ "$(edgectl get nodes 2>/dev/null | awk '$2 == "Ready"' | wc -l)" -eq "${#NODES[@]}" ]; do
    if [ "$SECONDS" -gt "$deadline" ]; then
        compose ps >&2
        compose logs --tail 20 >&2
        die "the fleet did not come up within $READY_TIMEOUT s"
    fi
    sleep 1
done
edgectl get nodes
say "fleet $COMPOSE_PROJECT_NAME up in $((SECONDS - START)) s; operator API on http://127.0.0.1:${EDGEHUB_API_PORT:-8080}"
say "admin token: docker exec $(compose ps -q hub) cat /var/lib/edgehub/admin.token"
