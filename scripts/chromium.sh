#!/usr/bin/env bash
# Makes Debian's Chromium available for the status page test (tests/integration/
# test_dashboard.py): installs the `chromium` package when /usr/bin/chromium is missing.
# Idempotent; needs root (or sudo) to install. Playwright drives this browser; it never
# downloads one of its own.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "chromium: installing Debian's chromium package"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
