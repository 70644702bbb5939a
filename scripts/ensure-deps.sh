#!/usr/bin/env bash
# Installs what Ironbark needs and this machine lacks: Debian packages (apt) and npm packages.
# Usage: scripts/ensure-deps.sh [run|test]   — `test` adds what the test suite needs.
set -Eeuo pipefail
trap 'status=$?; echo "ironbark: ensure-deps.sh line $LINENO: \"$BASH_COMMAND\" failed (exit $status)" >&2' ERR
cd "$(dirname "$0")/.."
purpose=${1:-run}

# ovmf: UEFI firmware for imported images whose BootMode is uefi.
packages=(qemu-system-x86 qemu-utils dnsmasq-base nftables iproute2 busybox-static dropbear-bin e2fsprogs cpio gzip xz-utils zstd kmod openssh-client procps ovmf)
if [ "$purpose" = test ]; then
  # awscli: the real aws CLI; postgresql: the private test server; putty-tools: .ppk key checks.
  packages+=(awscli postgresql putty-tools)
  # The image import e2e makes disks with their own boot loader: SYSLINUX (BIOS) and systemd-boot (UEFI).
  packages+=(syslinux syslinux-common mtools dosfstools fdisk systemd-boot-efi)
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
  apt-get update -q --error-on=any
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm packages follow the lock file's content: re-installed whenever it changed since the last
# install here (timestamps say nothing after a clone or a checkout).
lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.ironbark-lock-sha256
if [ ! -x node_modules/.bin/tsx ] || [ "$(cat "$stamp" 2>/dev/null)" != "$lock_hash" ]; then
  echo "==> installing npm packages (better-sqlite3 compiles from source; this takes a minute)"
  npm ci --no-audit --no-fund
  echo "$lock_hash" > "$stamp"
fi
