#!/usr/bin/env bash
# Headless Chromium from Debian's packages, for the HTML safety-report screenshot test.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "ERROR: chromium is missing; install it with: sudo apt-get install -y chromium" >&2; exit 1
fi
echo "Installing chromium (Debian package) for the report screenshot test" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
