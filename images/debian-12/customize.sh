#!/bin/sh
# Runs once the packages are installed (mmdebstrap --customize-hook), with the image's root
# directory as $1: services for a fast headless boot, and nothing that must differ per instance.
set -eu
root=$1
in_root() { chroot "$root" "$@"; }

# cloud-init renders systemd-networkd configuration; networkd brings the network up.
in_root systemctl enable systemd-networkd.service >/dev/null 2>&1
# Periodic maintenance a short-lived cloud instance has no use for at boot, and the VGA login
# prompt of a VM without a display (the serial console keeps its getty).
for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
  e2scrub_reap.service fstrim.timer getty@tty1.service; do
  in_root systemctl disable "$unit" >/dev/null 2>&1 || true
done
in_root systemctl mask getty@tty1.service >/dev/null 2>&1
# Early-boot units with nothing to do on a virtio VM booted without firmware tables of its own
# (DRM, EFI pstore) or that mount debugging file systems; under TCG each one costs boot time.
for unit in modprobe@drm.service modprobe@efi_pstore.service systemd-pstore.service \
  sys-kernel-debug.mount sys-kernel-tracing.mount dev-hugepages.mount; do
  in_root systemctl mask "$unit" >/dev/null 2>&1
done

# Per-instance identity is made at first boot: SSH host keys by cloud-init, the machine id by systemd.
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
# Nothing of the build host or of a previous boot.
# Not "$root"/tmp: mmdebstrap keeps its apt configuration there (TMPDIR) until it ends; without it
# mmdebstrap's last step, an `apt-get update` with no sources, runs on the host's apt and empties
# the host's package lists. build.sh empties the image's /tmp once mmdebstrap is done.
rm -rf "$root"/var/lib/cloud/* "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/var/tmp/*
rm -f "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
