#!/usr/bin/env bash
# Prints the name of a base image the Dockerfile can build FROM, making one if needed.
#
# 1. $BASE_IMAGE (default python:3.11-slim) when it is present or can be pulled;
# 2. otherwise (no registry: the air-gapped build) $LOCAL_BASE_IMAGE, imported from a
#    debootstrapped minimal Debian with python3 and python3-venv. The root filesystem
#    tarball is cached in .cache/base/, so only the first run pays for debootstrap.
# Progress goes to stderr; stdout is only the image name.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
SUITE=${DEBIAN_SUITE:-bookworm}
LOCAL_BASE_IMAGE=${LOCAL_BASE_IMAGE:-ringlb-base:$SUITE}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=.cache/base
ROOTFS_TAR=$CACHE/debian-$SUITE-python3.tar

say() { echo "base-image: $*" >&2; }

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "$BASE_IMAGE"
    exit 0
fi
if timeout 120 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    say "pulled $BASE_IMAGE"
    echo "$BASE_IMAGE"
    exit 0
fi
say "cannot pull $BASE_IMAGE: using the local base image $LOCAL_BASE_IMAGE"
if docker image inspect "$LOCAL_BASE_IMAGE" >/dev/null 2>&1; then
    echo "$LOCAL_BASE_IMAGE"
    exit 0
fi

if [[ ! -s $ROOTFS_TAR ]]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
    fi
    mkdir -p "$CACHE"
    rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    say "debootstrap $SUITE (minbase + python3) from $MIRROR; takes a few minutes once"
    debootstrap --variant=minbase --include=python3,python3-venv \
        "$SUITE" "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
        { tail -n 20 "$CACHE/debootstrap.log" >&2; exit 1; }
    # What an image never needs: package lists, caches, docs, manuals, translations.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/*
    tar -C "$rootfs" --numeric-owner -cf "$ROOTFS_TAR.part" .
    mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
    say "cached the root filesystem in $ROOTFS_TAR"
fi

say "importing $ROOTFS_TAR as $LOCAL_BASE_IMAGE"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'LABEL ringlb.image=base' \
    --change 'CMD ["python3"]' \
    "$ROOTFS_TAR" "$LOCAL_BASE_IMAGE" >/dev/null
echo "$LOCAL_BASE_IMAGE"
