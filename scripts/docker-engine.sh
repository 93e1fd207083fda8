#!/usr/bin/env bash
# Makes a Docker engine reachable: installs Debian's docker.io if needed, starts dockerd in
# the background with overlay2 when none answers, and waits until `docker info` answers.
# Idempotent; needs root to install or start anything. Logs of a dockerd started here go to
# .cache/dockerd.log. The compose tool is scripts/compose.sh's job: it is needed where an
# engine already answers too, so it is obtained where it is used.
set -euo pipefail
cd "$(dirname "$0")/.."

WAIT_SECONDS=${DOCKER_ENGINE_WAIT:-60}
LOG=.cache/dockerd.log

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }
# A dockerd that is not a zombie (a killed daemon can linger as one, unreaped).
dockerd_running() { ps -C dockerd -o stat= 2>/dev/null | grep -qv '^Z'; }

if engine_answers; then
    echo "docker-engine: engine already reachable"
    exit 0
fi

need_packages=()
command -v dockerd >/dev/null 2>&1 || need_packages+=(docker.io)
command -v docker >/dev/null 2>&1 || need_packages+=(docker.io)
if ((${#need_packages[@]})); then
    if [[ $(id -u) != 0 ]]; then
        echo "docker-engine: no engine, and installing ${need_packages[*]} needs root" >&2
        exit 1
    fi
    echo "docker-engine: installing ${need_packages[*]} from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
fi

if engine_answers; then
    exit 0
fi

if ! dockerd_running; then
    if [[ $(id -u) != 0 ]]; then
        echo "docker-engine: dockerd is not running and starting it needs root" >&2
        exit 1
    fi
    mkdir -p .cache
    echo "docker-engine: starting dockerd (storage overlay2, log $LOG)"
    # setsid: the daemon must outlive this script and the make that called it.
    setsid dockerd --storage-driver=overlay2 >>"$LOG" 2>&1 </dev/null &
fi

for ((i = 0; i < WAIT_SECONDS; i++)); do
    if engine_answers; then
        echo "docker-engine: engine ready after ${i}s"
        exit 0
    fi
    sleep 1
done
echo "docker-engine: engine did not answer within ${WAIT_SECONDS}s; see $LOG" >&2
tail -n 20 "$LOG" >&2 || true
exit 1
