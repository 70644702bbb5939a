#!/usr/bin/env bash
# Builds the Ironbark default guest image from Debian packages only:
#   vmlinuz      the Debian cloud kernel (linux-image-cloud-amd64)
#   initrd.img   busybox initramfs that loads the virtio/ACPI modules and mounts /dev/vda
#   rootfs.img   raw ext4 disk (made with mke2fs -d, no loop mount): busybox, dropbear,
#                resize2fs and the guest's boot scripts from rootfs/
#   manifest.json  sha256 and size of each file, kernel command line, recipe version,
#                  and the fingerprint of every input (rebuild when it changes)
#
# Usage:
#   build.sh OUTDIR              build into OUTDIR, printing "step N/T message" lines
#   build.sh --fingerprint       print the fingerprint the next build would record
#   build.sh --required-packages print the Debian packages this recipe needs on the host
#
# The kernel comes from the host when the matching package is installed, else from
# `apt-get download` + `dpkg-deb -x` into a work dir (never installed on the host).
# Set IRONBARK_KERNEL_SOURCE=apt to always download it.
set -Eeuo pipefail
export LC_ALL=C
# Whatever fails unexpectedly says what it was; the caller shows the last lines of stderr.
trap 'status=$?; echo "error: build.sh line $LINENO: \"$BASH_COMMAND\" failed (exit $status)" >&2' ERR

RECIPE_VERSION=1
RECIPE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOTFS_SIZE_MIB=256
# cryptomgr.notests: the boot-time crypto self-tests cost a noticeable slice of a TCG boot.
CMDLINE="root=/dev/vda rootfstype=ext4 rw console=ttyS0 quiet panic=-1 cryptomgr.notests"
# Modules the guest needs before its root disk is mounted (ext4 is built in).
INITRAMFS_MODULES="virtio_pci virtio_blk virtio_net virtio_rng button evdev"
# Fixed identifiers and timestamps: the same inputs give a byte-identical initramfs and a
# root disk that differs only in inode change times (mke2fs -d copies them from the tree).
ROOTFS_UUID=5f0b7a1e-4d2c-4b6e-9a57-1ab0c0ffee01
ROOTFS_HASH_SEED=0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5
export SOURCE_DATE_EPOCH=1700000000
KERNEL_META=linux-image-cloud-amd64
REQUIRED_PACKAGES="busybox-static dropbear-bin e2fsprogs cpio gzip xz-utils zstd kmod"

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

installed_version() { # empty when the package is not installed (or unknown to dpkg)
  { dpkg-query -W -f='${db:Status-Status} ${Version}\n' "$1" 2>/dev/null || true; } | awk '$1 == "installed" { print $2 }'
}

# Decides which kernel package (e.g. linux-image-6.1.0-56-cloud-amd64) and version to use.
resolve_kernel_package() {
  local depends
  if [ -n "$(installed_version "$KERNEL_META")" ]; then
    depends=$(dpkg-query -W -f='${Depends}' "$KERNEL_META")
  else
    local shown
    # apt-cache's own complaint is the reason when it fails (exit 100): keep it for the message.
    shown=$(apt-cache show --no-all-versions "$KERNEL_META" 2>&1) || die "apt-cache show $KERNEL_META failed: $(printf '%s\n' "$shown" | grep -E '^(E|W):' | tail -n 3 | tr '\n' ' ')(run apt-get update)"
    depends=$(printf '%s\n' "$shown" | sed -n 's/^Depends: //p' | head -n 1)
    [ -n "$depends" ] || die "apt knows no package $KERNEL_META (run apt-get update)"
  fi
  KERNEL_PACKAGE=$(printf '%s\n' "$depends" | tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep '^linux-image-' | head -n 1)
  [ -n "$KERNEL_PACKAGE" ] || die "cannot find the kernel package behind $KERNEL_META ($depends)"
  KERNEL_RELEASE=${KERNEL_PACKAGE#linux-image-}
  KERNEL_VERSION=$(installed_version "$KERNEL_PACKAGE")
  KERNEL_FROM_HOST=no
  if [ -n "$KERNEL_VERSION" ] && [ "${IRONBARK_KERNEL_SOURCE:-}" != apt ] \
    && [ -r "/boot/vmlinuz-$KERNEL_RELEASE" ] && [ -r "/lib/modules/$KERNEL_RELEASE/modules.dep" ]; then
    KERNEL_FROM_HOST=yes
  else
    KERNEL_VERSION=$({ apt-cache show --no-all-versions "$KERNEL_PACKAGE" 2>/dev/null || true; } | sed -n 's/^Version: //p' | head -n 1)
    [ -n "$KERNEL_VERSION" ] || die "apt knows no package $KERNEL_PACKAGE (run apt-get update)"
  fi
}

package_file() { # package, program name -> the host path of that program (empty if not installed)
  { dpkg -L "$1" 2>/dev/null || true; } | grep -E "/s?bin/$2\$" | head -n 1 || true
}

resolve_host_binaries() {
  BUSYBOX=$(package_file busybox-static busybox)
  DROPBEAR=$(package_file dropbear-bin dropbear)
  DROPBEARKEY=$(package_file dropbear-bin dropbearkey)
  RESIZE2FS=$(package_file e2fsprogs resize2fs)
  for f in "$BUSYBOX" "$DROPBEAR" "$DROPBEARKEY" "$RESIZE2FS"; do
    [ -n "$f" ] && [ -x "$f" ] || die "missing a host binary; install the Debian packages: $REQUIRED_PACKAGES"
  done
  if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is not static (install busybox-static)"
  fi
  DYNAMIC_BINARIES="$DROPBEAR $DROPBEARKEY $RESIZE2FS"
  # Shared libraries (and the loader) the dynamic binaries need, as the host resolves them.
  SHARED_LIBS=$(ldd $DYNAMIC_BINARIES | awk '/=> \// { print $3 } /^\t\/[^ ]*ld-linux/ { print $1 }' | sort -u)
}

fingerprint() {
  {
    echo "recipe-version $RECIPE_VERSION"
    (cd "$RECIPE_DIR" && find . -type f ! -name '*.md' -print0 | sort -z | xargs -0 sha256sum && find . -type f ! -name '*.md' -printf '%m %p\n' | sort)
    echo "kernel $KERNEL_PACKAGE $KERNEL_VERSION"
    for f in "$BUSYBOX" $DYNAMIC_BINARIES $SHARED_LIBS; do
      echo "$f $(sha256sum < "$f" | cut -d' ' -f1)"
    done
  } | sha256sum | cut -d' ' -f1
}

case "${1:-}" in
  --required-packages)
    echo "$REQUIRED_PACKAGES"
    exit 0
    ;;
  --fingerprint)
    resolve_kernel_package
    resolve_host_binaries
    fingerprint
    exit 0
    ;;
  "" | -*)
    echo "usage: $0 OUTDIR | --fingerprint | --required-packages" >&2
    exit 2
    ;;
esac

[ "$(id -u)" = 0 ] || die "the image build needs root (device nodes and file ownership in the images)"
OUTDIR=$1
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ironbark-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
rm -f "$OUTDIR/manifest.json"

step "resolving inputs"
resolve_kernel_package
resolve_host_binaries
FINGERPRINT=$(fingerprint)
echo "  kernel $KERNEL_PACKAGE $KERNEL_VERSION (from $([ $KERNEL_FROM_HOST = yes ] && echo host || echo apt))"

step "obtaining kernel $KERNEL_RELEASE"
if [ "$KERNEL_FROM_HOST" = yes ]; then
  KROOT=""
else
  mkdir -p "$WORK/debs" "$WORK/kernel"
  # (apt warns that its _apt user cannot reach the private work dir; it is harmless.)
  (cd "$WORK/debs" && apt-get download -q "$KERNEL_PACKAGE=$KERNEL_VERSION" 2>&1 | grep -v 'unsandboxed as root' | sed 's/^/  /')
  deb=$(ls "$WORK/debs"/*.deb 2>/dev/null | head -n 1)
  [ -n "$deb" ] || die "apt-get download $KERNEL_PACKAGE produced no package"
  dpkg-deb -x "$deb" "$WORK/kernel"
  KROOT="$WORK/kernel"
  rm -f "$deb"
fi
KMODDIR="$KROOT/lib/modules/$KERNEL_RELEASE"
[ -r "$KROOT/boot/vmlinuz-$KERNEL_RELEASE" ] || die "no vmlinuz in $KERNEL_PACKAGE"
[ -d "$KMODDIR" ] || die "no /lib/modules/$KERNEL_RELEASE in $KERNEL_PACKAGE"
if [ ! -r "$KMODDIR/modules.dep" ]; then
  # The package leaves modules.dep to its install script; make it for the unpacked tree.
  if command -v depmod >/dev/null; then
    depmod -b "${KROOT:-/}" "$KERNEL_RELEASE"
  else
    "$BUSYBOX" depmod -b "${KROOT:-/}" "$KERNEL_RELEASE"
  fi
fi
[ -r "$KMODDIR/modules.dep" ] || die "no modules.dep for $KERNEL_RELEASE"
cp "$KROOT/boot/vmlinuz-$KERNEL_RELEASE" "$OUTDIR/vmlinuz"

step "building initramfs"
INITRAMFS="$WORK/initramfs"
mkdir -p "$INITRAMFS"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$BUSYBOX" "$INITRAMFS/bin/busybox"
for applet in sh mount umount insmod sleep cat echo switch_root poweroff; do
  ln -s busybox "$INITRAMFS/bin/$applet"
done
install -m 755 "$RECIPE_DIR/initramfs/init" "$INITRAMFS/init"
mknod -m 600 "$INITRAMFS/dev/console" c 5 1
# modules.dep lists every dependency of a module, the one to load first last.
: > "$INITRAMFS/lib/modules/load-order"
for name in $INITRAMFS_MODULES; do
  line=$(awk -F: -v want="$name" '{ base = $1; sub(/.*\//, "", base); sub(/\.ko(\.[a-z]+)?$/, "", base); gsub(/-/, "_", base); if (base == want) { print; exit } }' "$KMODDIR/modules.dep")
  [ -n "$line" ] || die "kernel $KERNEL_RELEASE has no module $name"
  for path in $(printf '%s\n' "${line#*:}" | tr ' ' '\n' | sed '/^$/d' | tac) "${line%%:*}"; do
    grep -qxF "$path" "$INITRAMFS/lib/modules/load-order" && continue
    mkdir -p "$INITRAMFS/lib/modules/$(dirname "$path")"
    case "$path" in
      *.ko) cp "$KMODDIR/$path" "$INITRAMFS/lib/modules/$path" ;;
      *.ko.xz) xz -dc "$KMODDIR/$path" > "$INITRAMFS/lib/modules/${path%.xz}"; path=${path%.xz} ;;
      *.ko.zst) zstd -qdc "$KMODDIR/$path" > "$INITRAMFS/lib/modules/${path%.zst}"; path=${path%.zst} ;;
      *) die "unsupported module file $path" ;;
    esac
    echo "$path" >> "$INITRAMFS/lib/modules/load-order"
  done
done
echo "  modules: $(sed 's/.*\///; s/\.ko$//' "$INITRAMFS/lib/modules/load-order" | tr '\n' ' ')"
find "$INITRAMFS" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$INITRAMFS" && find . -print0 | sort -z | cpio --null --create --format=newc --reproducible --quiet) \
  | gzip -9 -n > "$OUTDIR/initrd.img"

step "assembling root filesystem tree"
ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,dev,proc,sys,run,tmp,mnt,root,home,var/log,var/lib,var/empty,etc/dropbear}
chmod 700 "$ROOT/root"
chmod 1777 "$ROOT/tmp"
ln -s ../run "$ROOT/var/run"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list-full); do
  [ -e "$ROOT/$applet" ] || ln -s /bin/busybox "$ROOT/$applet"
done
cp "$DROPBEAR" "$ROOT/usr/sbin/dropbear"
cp "$DROPBEARKEY" "$ROOT/usr/bin/dropbearkey"
cp "$RESIZE2FS" "$ROOT/sbin/resize2fs"
for lib in $SHARED_LIBS; do
  case "$lib" in
    */ld-linux-x86-64.so.2) cp -L "$lib" "$ROOT/lib64/ld-linux-x86-64.so.2" ;;
    *) cp -L "$lib" "$ROOT/lib/x86_64-linux-gnu/$(basename "$lib")" ;;
  esac
done
cp -a "$RECIPE_DIR/rootfs/." "$ROOT/"
chmod 600 "$ROOT/etc/shadow"
mkdir -p "$ROOT/var/lib/ironbark"
echo $((ROOTFS_SIZE_MIB * 1048576)) > "$ROOT/var/lib/ironbark/disk-bytes"
echo "$KERNEL_RELEASE" > "$ROOT/etc/ironbark-kernel"
printf 'recipe=default\nrecipe_version=%s\nfingerprint=%s\n' "$RECIPE_VERSION" "$FINGERPRINT" > "$ROOT/etc/ironbark-image"
find "$ROOT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

step "making ${ROOTFS_SIZE_MIB} MiB ext4 root disk"
rm -f "$OUTDIR/rootfs.img"
truncate -s "${ROOTFS_SIZE_MIB}M" "$OUTDIR/rootfs.img"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mke2fs -q -F -t ext4 -b 4096 -I 256 -m 1 -L ironbark-root \
  -U "$ROOTFS_UUID" -E "root_owner=0:0,hash_seed=$ROOTFS_HASH_SEED" \
  -d "$ROOT" "$OUTDIR/rootfs.img"
e2fsck -fn "$OUTDIR/rootfs.img" >/dev/null 2>&1 || die "the new root disk does not pass e2fsck"

step "writing manifest"
file_entry() {
  local f=$1
  printf '"%s": { "sha256": "%s", "size": %s }' "$f" "$(sha256sum < "$OUTDIR/$f" | cut -d' ' -f1)" "$(stat -c %s "$OUTDIR/$f")"
}
cat > "$OUTDIR/manifest.json.tmp" <<EOF
{
  "recipe": "default",
  "recipeVersion": $RECIPE_VERSION,
  "fingerprint": "$FINGERPRINT",
  "kernel": { "package": "$KERNEL_PACKAGE", "version": "$KERNEL_VERSION", "release": "$KERNEL_RELEASE" },
  "cmdline": "$CMDLINE",
  "rootfsFormat": "raw",
  "files": {
    $(file_entry vmlinuz),
    $(file_entry initrd.img),
    $(file_entry rootfs.img)
  }
}
EOF
mv "$OUTDIR/manifest.json.tmp" "$OUTDIR/manifest.json"
echo "done $OUTDIR"
