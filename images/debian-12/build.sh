#!/usr/bin/env bash
# Builds Ironbark's Debian 12 (bookworm) cloud image from Debian packages only, with mmdebstrap
# and the host's apt sources, in the manner of Debian's own genericcloud image:
#   vmlinuz      the Debian cloud kernel (linux-image-cloud-amd64), for direct kernel boot
#   initrd.img   its initramfs-tools initramfs, holding just the virtio disk and ext4 modules
#   rootfs.img   qcow2 disk holding one ext4 filesystem (no partition table): systemd,
#                systemd-networkd, openssh-server, sudo and cloud-init with the Ec2 datasource;
#                cloud-init grows the filesystem to the instance's disk size at first boot
#   manifest.json  sha256 and size of each file, kernel command line, recipe version and the
#                  fingerprint of every input (rebuild when it changes)
#
# Usage:
#   build.sh OUTDIR              build into OUTDIR, printing "step N/T message" lines
#   build.sh --fingerprint       print the fingerprint the next build would record
#   build.sh --required-packages print the Debian packages this recipe needs on the host
#
# Downloaded .debs are kept in OUTDIR/../debs, so a rebuild after a recipe change fetches only
# what changed. Set IRONBARK_DEBIAN_MIRROR / IRONBARK_DEBIAN_SECURITY_MIRROR to use other mirrors
# (default: the host's Debian sources, else deb.debian.org).
set -Eeuo pipefail
export LC_ALL=C
trap 'status=$?; echo "error: build.sh line $LINENO: \"$BASH_COMMAND\" failed (exit $status)" >&2' ERR

RECIPE=debian-12
RECIPE_VERSION=1
RECIPE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUITE=bookworm
ROOTFS_SIZE_MIB=2048
ROOTFS_LABEL=debian-root
# rw: no fsck of a fresh copy-on-write disk on every boot; quiet: the serial console under TCG is
# slow, and cloud-init's own output (which goes to the console) is what a user looks for there.
CMDLINE="root=/dev/vda rootfstype=ext4 rw console=ttyS0 quiet panic=-1 cryptomgr.notests"
ROOTFS_UUID=5f0b7a1e-4d2c-4b6e-9a57-1ab0c0ffee12
ROOTFS_HASH_SEED=0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c412
export SOURCE_DATE_EPOCH=1700000000
REQUIRED_PACKAGES="mmdebstrap e2fsprogs qemu-utils"

TOTAL_STEPS=6
step_no=0
step() {
  step_no=$((step_no + 1))
  echo "step $step_no/$TOTAL_STEPS $*"
}
die() {
  echo "error: $*" >&2
  exit 1
}

image_packages() {
  sed 's/#.*//; s/[[:space:]]//g; /^$/d' "$RECIPE_DIR/packages"
}

# The host's Debian mirror for SUITE (deb822 .sources or one-line sources.list), else deb.debian.org.
host_mirror() { # $1: "main" or "security"
  local files want
  files=$(ls /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$files" ] || return 0
  if [ "$1" = security ]; then want="$SUITE-security"; else want="$SUITE"; fi
  # shellcheck disable=SC2086
  awk -v want="$want" '
    function pick(uri, suites,   n, i, s) { n = split(suites, s, /[ \t]+/); for (i = 1; i <= n; i++) if (s[i] == want) { print uri; exit } }
    /^[ \t]*deb[ \t]/ { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } pick($i, $(i + 1)); next }
    /^URIs:/ { uri = $2 } /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
    /^[ \t]*$/ { if (uri != "" && suites != "") pick(uri, suites); uri = ""; suites = "" }
    END { if (uri != "" && suites != "") pick(uri, suites) }
  ' $files | head -n 1
}

resolve_mirrors() {
  MIRROR=${IRONBARK_DEBIAN_MIRROR:-$(host_mirror main)}
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
  SECURITY_MIRROR=${IRONBARK_DEBIAN_SECURITY_MIRROR:-$(host_mirror security)}
  SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
}

# "package version" for every listed package, as apt on this host would install it (one apt-cache
# run: each one reads all the package lists).
resolve_versions() {
  local pkg packages
  packages=$(image_packages)
  # shellcheck disable=SC2086
  PACKAGE_VERSIONS=$(apt-cache policy $packages 2>/dev/null | awk '
    /^[^ ].*:$/ { pkg = substr($0, 1, length($0) - 1) }
    /^  Candidate: / { if ($2 != "(none)") print pkg, $2 }')
  for pkg in $packages; do
    printf '%s\n' "$PACKAGE_VERSIONS" | grep -q "^$pkg " || die "apt knows no package $pkg (run apt-get update)"
  done
  PACKAGE_VERSIONS+=$'\n'
}

fingerprint() {
  {
    echo "recipe $RECIPE $RECIPE_VERSION"
    (cd "$RECIPE_DIR" && find . -type f ! -name '*.md' -print0 | sort -z | xargs -0 sha256sum && find . -type f ! -name '*.md' -printf '%m %p\n' | sort)
    printf '%s' "$PACKAGE_VERSIONS"
    echo "mmdebstrap $(dpkg-query -W -f='${Version}' mmdebstrap 2>/dev/null || echo none)"
  } | sha256sum | cut -d' ' -f1
}

case "${1:-}" in
  --required-packages)
    echo "$REQUIRED_PACKAGES"
    exit 0
    ;;
  --fingerprint)
    resolve_versions
    fingerprint
    exit 0
    ;;
  "" | -*)
    echo "usage: $0 OUTDIR | --fingerprint | --required-packages" >&2
    exit 2
    ;;
esac

[ "$(id -u)" = 0 ] || die "the image build needs root (mmdebstrap's root mode, file ownership in the image)"
command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (apt-get install $REQUIRED_PACKAGES)"
OUTDIR=$1
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
DEB_CACHE=$(dirname "$OUTDIR")/debs
mkdir -p "$DEB_CACHE"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ironbark-debian.XXXXXX")
cleanup() {
  # mmdebstrap unmounts what it mounted; make sure, before removing the tree.
  for m in $(awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
rm -f "$OUTDIR/manifest.json"

step "resolving inputs"
resolve_mirrors
resolve_versions
FINGERPRINT=$(fingerprint)
echo "  mirrors $MIRROR, $SECURITY_MIRROR; $(printf '%s' "$PACKAGE_VERSIONS" | grep -c .) packages listed"
echo "  $(printf '%s' "$PACKAGE_VERSIONS" | grep -E '^(linux-image-cloud-amd64|cloud-init|systemd) ' | tr '\n' ' ')"

step "installing Debian $SUITE with mmdebstrap (downloads into $DEB_CACHE)"
ROOT="$WORK/root"
mkdir -p "$ROOT"
SOURCES="$WORK/sources.list"
{
  echo "deb $MIRROR $SUITE main"
  echo "deb $MIRROR $SUITE-updates main"
  echo "deb $SECURITY_MIRROR $SUITE-security main"
} > "$SOURCES"
include=$(image_packages | paste -sd, -)
# mmdebstrap reports on stderr; its "I:" lines are the progress shown to the user.
mmdebstrap --variant=minbase --mode=root --format=directory --include="$include" \
  --aptopt='Acquire::Retries "3"' --dpkgopt=force-unsafe-io \
  --skip=essential/unlink \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
  --setup-hook="sync-in '$DEB_CACHE' /var/cache/apt/archives" \
  --setup-hook="sync-in '$RECIPE_DIR/setup' /" \
  --customize-hook="sync-in '$RECIPE_DIR/rootfs' /" \
  --customize-hook="'$RECIPE_DIR/customize.sh' \"\$1\"" \
  --customize-hook='chroot "$1" apt-get -q autoclean >/dev/null' \
  --customize-hook="rm -rf '$DEB_CACHE' && mkdir -p '$DEB_CACHE'" \
  --customize-hook="sync-out /var/cache/apt/archives '$DEB_CACHE'" \
  "$SUITE" "$ROOT" "$SOURCES" 2>&1 \
  | { grep --line-buffered -E '^(I|W|E): ' || true; } | sed -u 's/^/  /'
[ "${PIPESTATUS[0]}" = 0 ] || die "mmdebstrap failed"
# The host's apt must be as it was: mmdebstrap's cleanup runs apt-get on the host's configuration
# if its own (in the image's /tmp) went missing, which once emptied the host's package lists.
apt-cache show --no-all-versions linux-image-cloud-amd64 >/dev/null 2>&1 \
  || die "after mmdebstrap the host's apt no longer knows linux-image-cloud-amd64: its package lists were changed (run apt-get update)"
find "$ROOT/tmp" -mindepth 1 -delete
rm -f "$DEB_CACHE/lock"; rm -rf "$DEB_CACHE/partial"
# mmdebstrap leaves the build host's resolver configuration; the guest uses systemd-resolved,
# which learns DNS servers from DHCP (none at all is quick to fail, a host's unreachable one is not).
rm -f "$ROOT/etc/resolv.conf"
ln -s ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"

step "extracting kernel and initramfs"
KERNEL_PACKAGE=$(chroot "$ROOT" dpkg-query -W -f='${Depends}' linux-image-cloud-amd64 | tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep '^linux-image-' | head -n 1)
[ -n "$KERNEL_PACKAGE" ] || die "cannot tell which kernel linux-image-cloud-amd64 installed"
KERNEL_RELEASE=${KERNEL_PACKAGE#linux-image-}
KERNEL_VERSION=$(chroot "$ROOT" dpkg-query -W -f='${Version}' "$KERNEL_PACKAGE")
[ -r "$ROOT/boot/vmlinuz-$KERNEL_RELEASE" ] || die "no /boot/vmlinuz-$KERNEL_RELEASE in the image"
[ -r "$ROOT/boot/initrd.img-$KERNEL_RELEASE" ] || die "no /boot/initrd.img-$KERNEL_RELEASE in the image"
cp "$ROOT/boot/vmlinuz-$KERNEL_RELEASE" "$OUTDIR/vmlinuz"
cp "$ROOT/boot/initrd.img-$KERNEL_RELEASE" "$OUTDIR/initrd.img"
CLOUD_INIT_VERSION=$(chroot "$ROOT" dpkg-query -W -f='${Version}' cloud-init)
echo "  kernel $KERNEL_PACKAGE $KERNEL_VERSION, initramfs $(($(stat -c %s "$OUTDIR/initrd.img") / 1024)) KiB, cloud-init $CLOUD_INIT_VERSION"
chroot "$ROOT" dpkg-query -W -f='${Package} ${Version}\n' > "$OUTDIR/packages.txt"
printf 'recipe=%s\nrecipe_version=%s\nfingerprint=%s\n' "$RECIPE" "$RECIPE_VERSION" "$FINGERPRINT" > "$ROOT/etc/ironbark-image"

step "making ${ROOTFS_SIZE_MIB} MiB ext4 root filesystem"
RAW="$WORK/rootfs.raw"
truncate -s "${ROOTFS_SIZE_MIB}M" "$RAW"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mke2fs -q -F -t ext4 -b 4096 -m 1 -L "$ROOTFS_LABEL" \
  -U "$ROOTFS_UUID" -E "root_owner=0:0,hash_seed=$ROOTFS_HASH_SEED" \
  -d "$ROOT" "$RAW"
e2fsck -fn "$RAW" >/dev/null 2>&1 || die "the new root filesystem does not pass e2fsck"
echo "  $(du -sm "$ROOT" | cut -f1) MiB of files"

step "converting the root disk to compressed qcow2"
rm -f "$OUTDIR/rootfs.img"
qemu-img convert -q -f raw -O qcow2 -c -o compression_type=zstd "$RAW" "$OUTDIR/rootfs.img" 2>/dev/null \
  || qemu-img convert -q -f raw -O qcow2 -c "$RAW" "$OUTDIR/rootfs.img"
rm -f "$RAW"
echo "  $(($(stat -c %s "$OUTDIR/rootfs.img") / 1048576)) MiB qcow2"

step "writing manifest"
file_entry() {
  local f=$1
  printf '"%s": { "sha256": "%s", "size": %s }' "$f" "$(sha256sum < "$OUTDIR/$f" | cut -d' ' -f1)" "$(stat -c %s "$OUTDIR/$f")"
}
cat > "$OUTDIR/manifest.json.tmp" <<EOF
{
  "recipe": "$RECIPE",
  "recipeVersion": $RECIPE_VERSION,
  "fingerprint": "$FINGERPRINT",
  "kernel": { "package": "$KERNEL_PACKAGE", "version": "$KERNEL_VERSION", "release": "$KERNEL_RELEASE" },
  "cmdline": "$CMDLINE",
  "rootfsFormat": "qcow2",
  "os": { "name": "Debian", "version": "12", "codename": "$SUITE", "cloudInit": "$CLOUD_INIT_VERSION", "defaultUser": "admin" },
  "files": {
    $(file_entry vmlinuz),
    $(file_entry initrd.img),
    $(file_entry rootfs.img)
  }
}
EOF
mv "$OUTDIR/manifest.json.tmp" "$OUTDIR/manifest.json"
echo "done $OUTDIR"
