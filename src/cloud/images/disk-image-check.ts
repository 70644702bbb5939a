// What the cloud checks before it takes a disk image file someone hands it (`ironbark admin
// image import`): qemu-img says what the file is. Only raw and qcow2 are taken. A qcow2 that names
// a backing file or an external data file is refused, because QEMU would open that host file
// for the guest to read; so is a qcow2 that `qemu-img check` finds corrupt, a disk larger than
// the limit, and a file whose first sector holds no boot record (nothing could boot from it).
import { execFile } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export const GiB = 1024 ** 3;
/** The largest disk an import takes unless the operator says otherwise. */
export const DEFAULT_MAX_IMPORT_GIB = 64;

export type DiskFormat = 'raw' | 'qcow2';

export interface DiskImageFacts {
  format: DiskFormat;
  virtualSizeBytes: number;
  fileSizeBytes: number;
  /** What the first sector says: an MBR (or protective MBR of a GPT disk), and whether a GPT follows. */
  partitioning: 'mbr' | 'gpt';
}

/** A file the cloud will not take, with the sentence that says why. */
export class DiskImageRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DiskImageRefused';
  }
}

interface QemuImgInfo {
  format?: string;
  'virtual-size'?: number;
  'actual-size'?: number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'format-specific'?: { type?: string; data?: { 'data-file'?: string; corrupt?: boolean; encrypt?: unknown } };
  encrypted?: boolean;
}

function run(command: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      // A helper that exits non-zero has a numeric code; one that cannot start (ENOENT) a string.
      const exit = (err as { code?: unknown } | null)?.code;
      const code = !err ? 0 : typeof exit === 'number' ? exit : 127;
      resolve({ code, stdout: String(stdout), stderr: code === 127 && !stderr ? String(err?.message) : String(stderr) });
    });
  });
}

function firstLine(text: string): string {
  return text.trim().split('\n').map((l) => l.replace(/^qemu-img: /, '').trim()).find(Boolean) ?? 'no reason given';
}

/** qemu-img's view of the file; never follows a backing file into the host. */
async function qemuImgInfo(path: string): Promise<QemuImgInfo> {
  const result = await run('qemu-img', ['info', '--output=json', '-U', path]);
  if (result.code === 127) throw new Error(`qemu-img cannot run on this host (install Debian's qemu-utils): ${firstLine(result.stderr)}`);
  if (result.code !== 0) throw new DiskImageRefused(`${path} is not a readable disk image: ${firstLine(result.stderr)}`);
  try {
    return JSON.parse(result.stdout) as QemuImgInfo;
  } catch {
    throw new DiskImageRefused(`${path} is not a readable disk image: qemu-img gave no description of it`);
  }
}

/** The first 512 bytes of the disk as the guest would see them. */
async function firstSector(path: string, format: DiskFormat): Promise<Buffer> {
  if (format === 'raw') {
    const file = await open(path, 'r');
    try {
      const buf = Buffer.alloc(1024);
      const { bytesRead } = await file.read(buf, 0, 1024, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await file.close();
    }
  }
  const dir = await mkdtemp(join(dirname(path), '.sector-'));
  try {
    const out = join(dir, 'sector');
    const result = await run('qemu-img', ['dd', '-f', 'qcow2', '-O', 'raw', 'bs=512', 'count=2', `if=${path}`, `of=${out}`]);
    if (result.code !== 0) throw new DiskImageRefused(`${path} is corrupt: its first sectors cannot be read (${firstLine(result.stderr)})`);
    const file = await open(out, 'r');
    try {
      const buf = Buffer.alloc(1024);
      const { bytesRead } = await file.read(buf, 0, 1024, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await file.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Inspects a disk image file and answers its facts, or throws DiskImageRefused with the reason.
 * `maxBytes` bounds the disk's virtual size (what the guest sees) and the file's own size.
 */
export async function checkDiskImage(path: string, opts: { maxBytes: number }): Promise<DiskImageFacts> {
  const info = await qemuImgInfo(path);
  const format = info.format;
  if (format !== 'raw' && format !== 'qcow2') {
    throw new DiskImageRefused(`${path} is a ${format ?? 'unknown'} image; only raw and qcow2 can be imported (qemu-img convert -O qcow2 makes one)`);
  }
  if (info['backing-filename'] !== undefined || info['full-backing-filename'] !== undefined) {
    throw new DiskImageRefused(`${path} is a qcow2 image with a backing file (${info['backing-filename'] ?? info['full-backing-filename']}), which would let the guest read that file of the host; flatten it first (qemu-img convert -O qcow2 ${path} flat.qcow2)`);
  }
  if (info['format-specific']?.data?.['data-file'] !== undefined) {
    throw new DiskImageRefused(`${path} is a qcow2 image with an external data file (${info['format-specific'].data['data-file']}), which would let the guest read that file of the host; convert it into one self-contained file first`);
  }
  if (info.encrypted || info['format-specific']?.data?.encrypt !== undefined) {
    throw new DiskImageRefused(`${path} is encrypted; import an unencrypted image`);
  }
  if (info['format-specific']?.data?.corrupt) throw new DiskImageRefused(`${path} is corrupt: its qcow2 header marks it so`);
  const virtualSizeBytes = Number(info['virtual-size']);
  if (!Number.isSafeInteger(virtualSizeBytes) || virtualSizeBytes < 512) {
    throw new DiskImageRefused(`${path} is corrupt: its disk size (${info['virtual-size']}) is not a usable size`);
  }
  const fileSizeBytes = (await open(path, 'r').then(async (f) => { try { return (await f.stat()).size; } finally { await f.close(); } }));
  const limit = `${(opts.maxBytes / GiB).toFixed(opts.maxBytes % GiB === 0 ? 0 : 2)} GiB`;
  if (virtualSizeBytes > opts.maxBytes) {
    throw new DiskImageRefused(`${path} is a disk of ${(virtualSizeBytes / GiB).toFixed(2)} GiB, over the import limit of ${limit} (a larger limit: --max-size)`);
  }
  if (fileSizeBytes > opts.maxBytes) {
    throw new DiskImageRefused(`${path} is a file of ${(fileSizeBytes / GiB).toFixed(2)} GiB, over the import limit of ${limit} (a larger limit: --max-size)`);
  }
  if (format === 'qcow2') {
    const check = await run('qemu-img', ['check', '--output=json', '-f', 'qcow2', '-U', path]);
    // 0: clean; 3: only leaked clusters (wasted space, harmless); 2: corruptions; 1: could not check.
    if (check.code !== 0 && check.code !== 3) {
      throw new DiskImageRefused(`${path} is corrupt: qemu-img check ${check.code === 2 ? 'found errors in its metadata' : `could not check it (${firstLine(check.stderr || check.stdout)})`}`);
    }
  }
  const sector = await firstSector(path, format);
  if (sector.length < 512 || sector[510] !== 0x55 || sector[511] !== 0xaa) {
    throw new DiskImageRefused(`${path} holds no boot record (its first sector lacks the 55 AA signature): it is corrupt or not a whole disk, and nothing could boot from it`);
  }
  const gpt = sector.length >= 520 && sector.subarray(512, 520).toString('latin1') === 'EFI PART';
  return { format, virtualSizeBytes, fileSizeBytes, partitioning: gpt ? 'gpt' : 'mbr' };
}
