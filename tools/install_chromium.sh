#!/usr/bin/env bash
# Install Debian's chromium for the browser test, when it is missing (needs root or sudo).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "error: chromium is missing and installing it needs root: run 'sudo apt-get install chromium'" >&2
  exit 1
fi
echo "installing Debian's chromium for the browser test"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
