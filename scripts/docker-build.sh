#!/usr/bin/env bash
# Builds the ringlb image ($RINGLB_IMAGE, default ringlb:latest) without needing a registry:
# the base image comes from scripts/base-image.sh ($BASE_IMAGE when it can be pulled, a
# debootstrapped Debian otherwise) and the Python packages from a wheelhouse made on this
# host by scripts/wheelhouse.sh, so the build itself never goes online.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${RINGLB_IMAGE:-ringlb:latest}

if ! timeout 10 docker info >/dev/null 2>&1; then
    echo "docker-build: no Docker engine answers; start one (as root, scripts/docker-engine.sh" \
        "installs and starts Debian's docker.io)" >&2
    exit 1
fi
base=$(scripts/base-image.sh)
wheelhouse=$(scripts/wheelhouse.sh "$base")
echo "docker-build: $IMAGE from $base with wheels from $wheelhouse" >&2
docker build --quiet -f deploy/Dockerfile -t "$IMAGE" \
    --build-arg "BASE_IMAGE=$base" --build-arg "WHEELHOUSE=$wheelhouse" . 2> >(grep -v -e DEPRECATED -e buildx -e 'docs.docker.com/go/buildx' -e '^ *$' >&2) >/dev/null
echo "docker-build: built $IMAGE" >&2
# Earlier builds of the image, untagged by this one, are of no use (build-stage images stay:
# they are the layer cache of the next build).
docker image prune -f --filter label=ringlb.image=ringlb >/dev/null
