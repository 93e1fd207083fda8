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
# The image has no C compiler: the compiled hot path is built here, into the wheelhouse, when
# this host's Python is the image's (same minor version) and its C library no newer;
# otherwise, or when that build fails, the image installs the source and runs it as is.
project=$wheelhouse/project
rm -rf "$project" && mkdir -p "$project"
PY=${PY:-.venv/bin/python}
[[ -x $PY ]] || PY=python3
target=${wheelhouse##*/}  # cp311-x86_64-glibc2.36
if [[ ${RINGLB_PURE:-} != 1 ]] && $PY - "$target" <<'PY'
import platform, sys
python, arch, glibc = sys.argv[1].split("-")
here = f"cp{sys.version_info[0]}{sys.version_info[1]}"
mine = tuple(map(int, (platform.libc_ver()[1] or "0").split(".")))
theirs = tuple(map(int, glibc.removeprefix("glibc").split(".")))
sys.exit(0 if (python, arch) == (here, platform.machine()) and mine <= theirs else 1)
PY
then
    if $PY -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$project" . \
        2> >(grep -v -e "is ignored: it is neither" -e "^warning:" >&2); then
        echo "docker-build: hot path compiled on this host: $(ls "$project")" >&2
    else
        rm -rf "$project" && mkdir -p "$project"
        echo "docker-build: could not compile the hot path here: the image runs it as pure Python" >&2
    fi
else
    echo "docker-build: this host cannot compile for the image ($target): pure Python hot path" >&2
fi
echo "docker-build: $IMAGE from $base with wheels from $wheelhouse" >&2
docker build --quiet -f deploy/Dockerfile -t "$IMAGE" \
    --build-arg "BASE_IMAGE=$base" --build-arg "WHEELHOUSE=$wheelhouse" . 2> >(grep -v -e DEPRECATED -e buildx -e 'docs.docker.com/go/buildx' -e '^ *$' >&2) >/dev/null
echo "docker-build: built $IMAGE" >&2
# Earlier builds of the image, untagged by this one, are of no use (build-stage images stay:
# they are the layer cache of the next build).
docker image prune -f --filter label=ringlb.image=ringlb >/dev/null
