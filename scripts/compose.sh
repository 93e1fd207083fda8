#!/usr/bin/env bash
# Runs the compose tool with the given arguments: the `docker compose` plugin when present,
# else Debian's `docker-compose`. When neither exists it installs Debian's docker-compose
# (root with apt-get), else stops with what to install: Debian's docker.io brings no compose
# tool, and every Makefile target that needs one goes through here.
set -euo pipefail

if docker compose version >/dev/null 2>&1; then
    exec docker compose "$@"
fi
if command -v docker-compose >/dev/null 2>&1; then
    exec docker-compose "$@"
fi
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "compose: no compose tool: installing Debian's docker-compose" >&2
    export DEBIAN_FRONTEND=noninteractive
    install() { apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }
    # The package lists may be missing or stale on a fresh machine: refresh once and retry.
    install || { apt-get update -qq && install; }
    exec docker-compose "$@"
fi
echo "compose: no compose tool: install the Docker Compose plugin (\`docker compose\`) or" \
    "Debian's docker-compose (apt-get install docker-compose), as root" >&2
exit 127
