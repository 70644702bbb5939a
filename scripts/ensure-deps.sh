#!/usr/bin/env bash
# Installs what Ironbark needs and this machine lacks: Debian packages (apt) and npm packages.
# Usage: scripts/ensure-deps.sh [run|test]   — `test` adds what the test suite needs.
set -euo pipefail
cd "$(dirname "$0")/.."
purpose=${1:-run}

packages=(qemu-system-x86 qemu-utils dnsmasq-base nftables iproute2 busybox-static dropbear-bin e2fsprogs cpio openssh-client procps)
if [ "$purpose" = test ]; then
  packages+=(awscli postgresql putty-tools)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then missing+=("$p"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "ironbark: these Debian packages are missing: ${missing[*]}; run as root or install them with apt-get." >&2
    exit 1
  fi
  echo "==> installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x node_modules/.bin/tsx ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> installing npm packages (better-sqlite3 compiles from source; this takes a minute)"
  npm ci --no-audit --no-fund
fi
