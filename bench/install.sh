#!/usr/bin/env bash
# Installs the reference programs the benchmark compares ringlb with (Debian packages),
# only those that are missing; runs `apt-get update` once, and only when something is missing.
# Usage: bench/install.sh [TOOL...] (default: haproxy nginx wrk, what `make bench` runs;
# `make attack` asks for haproxy slowhttptest). Each tool's Debian package has its name.
set -euo pipefail
tools=("$@")
if [ ${#tools[@]} -eq 0 ]; then
    tools=(haproxy nginx wrk)
fi
missing=()
for tool in "${tools[@]}"; do
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
