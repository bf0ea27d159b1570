#!/usr/bin/env bash
# Install a Debian package when its command is missing (needs root or sudo):
#   tools/apt_install.sh COMMAND PACKAGE WHY
# chromium for the browser test; g++ for the counting allocator that measures a training step
# (ondevice/memory/counting_allocator.cpp, built once on first use).
set -euo pipefail
if [ $# -ne 3 ]; then echo "usage: $0 COMMAND PACKAGE WHY" >&2; exit 2; fi
command_name=$1 package=$2 why=$3
if command -v "$command_name" >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "error: $command_name is missing ($why) and installing it needs root: run 'sudo apt-get install $package'" >&2
  exit 1
fi
echo "installing Debian's $package ($why)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$package" >/dev/null
command -v "$command_name" >/dev/null
