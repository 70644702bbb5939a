// Whole-disk images that carry their own boot loader, made from the default guest image's kernel,
// initramfs and root filesystem with Debian packages only, for the image import tests:
//   legacy-bios: MBR disk, syslinux's MBR code, a FAT boot partition with SYSLINUX, the root as vda2;
//   uefi:        GPT disk, an EFI system partition with systemd-boot as BOOTX64.EFI, the root as vda2.
// No loop devices or mounts: FAT filesystems are written with mtools and placed with dd. Each disk
// is cached by the fingerprint of its inputs, as the guest images are.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultImageCacheDir, ensureDefaultGuestImage } from '../../src/node/guest-image.ts';

export type DiskBootMode = 'legacy-bios' | 'uefi';

/** The Debian packages the builder uses (and the commands it needs from them). */
export const BOOTABLE_DISK_PACKAGES = ['syslinux', 'syslinux-common', 'mtools', 'dosfstools', 'fdisk', 'systemd-boot-efi', 'qemu-utils'];
const SYSLINUX_MBR = '/usr/lib/syslinux/mbr/mbr.bin';
const SYSTEMD_BOOT = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';

/** What is missing on this host to build a disk, or undefined. */
export function bootableDiskPrerequisite(): string | undefined {
  for (const [file, pkg] of [[SYSLINUX_MBR, 'syslinux-common'], [SYSTEMD_BOOT, 'systemd-boot-efi']]) {
    if (!existsSync(file!)) return `${file} (Debian ${pkg})`;
  }
  for (const [cmd, pkg] of [['syslinux', 'syslinux'], ['mcopy', 'mtools'], ['mkfs.fat', 'dosfstools'], ['sfdisk', 'fdisk']]) {
    if (spawnSync('sh', ['-c', `command -v ${cmd}`]).status !== 0) return `${cmd} (Debian ${pkg})`;
  }
  return undefined;
}

function sh(command: string, args: string[], input?: string): string {
  const r = spawnSync(command, args, { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr || r.error?.message}`);
  return r.stdout;
}

const SECTOR = 512;
const BOOT_START = 2048; // 1 MiB
const BOOT_SECTORS = 64 * 2048; // 64 MiB: FAT16 for syslinux, and enough for an ESP

/**
 * Builds (or finds cached) a qcow2 disk that boots `mode`'s way into the default guest, and
 * answers its path. The guest prints `ironbark-guest: instance-id=…` on its console as usual.
 */
export async function ensureBootableDisk(mode: DiskBootMode, cacheDir = join(defaultImageCacheDir(), '..', 'test-disks')): Promise<string> {
  const guest = await ensureDefaultGuestImage();
  const cmdline = 'root=/dev/vda2 rootfstype=ext4 rw console=ttyS0 panic=-1 cryptomgr.notests';
  const fingerprint = createHash('sha256').update(JSON.stringify({ mode, cmdline, recipe: 2, guest: guest.manifest.fingerprint })).digest('hex').slice(0, 16);
  const out = join(cacheDir, `${mode}-${fingerprint}.qcow2`);
  if (existsSync(out)) return out;
  mkdirSync(cacheDir, { recursive: true });
  const work = join(cacheDir, `${mode}-${fingerprint}.work-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work);
  try {
    const rootBytes = Number(guest.manifest.files['rootfs.img']!.size);
    const rootStart = BOOT_START + BOOT_SECTORS;
    const rootSectors = Math.ceil(rootBytes / SECTOR);
    // GPT keeps a backup table in the last 33 sectors.
    const totalSectors = rootStart + rootSectors + 2048;
    const disk = join(work, 'disk.raw');
    sh('truncate', ['-s', String(totalSectors * SECTOR), disk]);
    const table = mode === 'uefi'
      ? `label: gpt\nstart=${BOOT_START}, size=${BOOT_SECTORS}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\nstart=${rootStart}, size=${rootSectors}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n`
      : `label: dos\nstart=${BOOT_START}, size=${BOOT_SECTORS}, type=e, bootable\nstart=${rootStart}, size=${rootSectors}, type=83\n`;
    sh('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', disk], table);

    const fat = join(work, 'boot.fat');
    // -h: the partition's start, which the FAT boot sector uses to find its loader on the disk.
    sh('mkfs.fat', ['-F', '16', '-n', 'BOOT', '-h', String(BOOT_START), '-C', fat, String(BOOT_SECTORS / 2)]);
    const m = (args: string[]) => sh(args[0]!, ['-i', fat, ...args.slice(1)]);
    m(['mcopy', guest.kernel, '::/vmlinuz']);
    m(['mcopy', guest.initrd!, '::/initrd.img']);
    if (mode === 'uefi') {
      writeFileSync(join(work, 'loader.conf'), 'default ironbark.conf\ntimeout 0\nconsole-mode keep\n');
      writeFileSync(join(work, 'ironbark.conf'), `title Ironbark guest\nlinux /vmlinuz\ninitrd /initrd.img\noptions ${cmdline}\n`);
      for (const dir of ['::/EFI', '::/EFI/BOOT', '::/loader', '::/loader/entries']) m(['mmd', dir]);
      m(['mcopy', SYSTEMD_BOOT, '::/EFI/BOOT/BOOTX64.EFI']);
      m(['mcopy', join(work, 'loader.conf'), '::/loader/loader.conf']);
      m(['mcopy', join(work, 'ironbark.conf'), '::/loader/entries/ironbark.conf']);
    } else {
      writeFileSync(join(work, 'syslinux.cfg'), `SERIAL 0 115200\nDEFAULT guest\nPROMPT 0\nTIMEOUT 0\nLABEL guest\n  KERNEL /vmlinuz\n  INITRD /initrd.img\n  APPEND ${cmdline}\n`);
      m(['mcopy', join(work, 'syslinux.cfg'), '::/syslinux.cfg']);
      sh('syslinux', ['--install', fat]);
      sh('dd', [`if=${SYSLINUX_MBR}`, `of=${disk}`, 'bs=440', 'count=1', 'conv=notrunc', 'status=none']);
    }
    sh('dd', [`if=${fat}`, `of=${disk}`, `bs=${SECTOR}`, `seek=${BOOT_START}`, 'conv=notrunc', 'status=none']);
    sh('dd', [`if=${guest.rootfs}`, `of=${disk}`, `bs=1M`, `seek=${rootStart * SECTOR}`, 'oflag=seek_bytes', 'conv=notrunc', 'status=none']);
    const qcow2 = join(work, 'disk.qcow2');
    sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', disk, qcow2]);
    renameSync(qcow2, out);
    return out;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The SHA-256 of a file, for tests that compare what was imported. */
export function fileSha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}
