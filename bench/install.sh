#!/usr/bin/env bash
# Installs the reference programs the benchmark compares ringlb with (Debian packages),
# only those that are missing; runs `apt-get update` once, and only when something is missing.
set -euo pipefail
missing=()
for tool in haproxy nginx wrk; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "bench: installing ${missing[*]} from Debian packages" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
