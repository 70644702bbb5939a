// An instance's root disk is a qcow2 overlay on the cached base image: creating it writes only
// metadata, so it takes the same time for a 100 MiB and a 10 GiB image, and the base stays shared.
import { execFile } from 'node:child_process';
import { chmod, rm, stat } from 'node:fs/promises';
import { ensurePrivateDir, PRIVATE_FILE_MODE } from '../store/private-files.ts';
import { dirname, resolve } from 'node:path';
import { describeCommandFailure } from './command-failure.ts';

export interface InstanceDiskOptions {
  /** Virtual size of the new disk; at least the base image's size. Defaults to the base's size. */
  sizeGiB?: number;
  baseFormat: 'raw' | 'qcow2';
  qemuImg?: string;
}

export interface DiskInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFile?: string;
  backingFormat?: string;
}

export class InstanceDiskError extends Error {
  constructor(diskPath: string, message: string) {
    super(`instance disk ${diskPath}: ${message}`);
    this.name = 'InstanceDiskError';
  }
}

const GiB = 1024 ** 3;

export async function createInstanceDisk(basePath: string, diskPath: string, opts: InstanceDiskOptions): Promise<void> {
  const qemuImg = opts.qemuImg ?? 'qemu-img';
  // The overlay records the backing path as given, so it must not depend on the current directory.
  const base = resolve(basePath);
  const disk = resolve(diskPath);
  if (!(await stat(base).then((s) => s.isFile(), () => false))) throw new InstanceDiskError(disk, `base image ${base} does not exist`);
  if (await stat(disk).then(() => true, () => false)) throw new InstanceDiskError(disk, 'already exists');
  const args = ['create', '-q', '-f', 'qcow2', '-b', base, '-F', opts.baseFormat, disk];
  if (opts.sizeGiB !== undefined) {
    if (!Number.isInteger(opts.sizeGiB) || opts.sizeGiB < 1) throw new InstanceDiskError(disk, 'sizeGiB must be a positive integer');
    const baseInfo = await diskInfo(base, { format: opts.baseFormat, qemuImg });
    const requested = opts.sizeGiB * GiB;
    if (requested < baseInfo.virtualSize) {
      throw new InstanceDiskError(disk, `${opts.sizeGiB} GiB is smaller than its image (${baseInfo.virtualSize} bytes)`);
    }
    args.push(String(requested));
  }
  // The guest writes its data into the overlay: the owner's alone, whatever qemu-img's umask.
  await ensurePrivateDir(dirname(disk));
  try {
    await run(qemuImg, args);
    await chmod(disk, PRIVATE_FILE_MODE);
  } catch (err) {
    await rm(disk, { force: true });
    throw new InstanceDiskError(disk, (err as Error).message);
  }
}

export async function deleteInstanceDisk(diskPath: string): Promise<void> {
  await rm(resolve(diskPath), { force: true });
}

export async function diskInfo(path: string, opts: { format?: string; qemuImg?: string } = {}): Promise<DiskInfo> {
  const args = ['info', '--output=json', '-U'];
  if (opts.format) args.push('-f', opts.format);
  args.push(path);
  const out = JSON.parse(await run(opts.qemuImg ?? 'qemu-img', args)) as Record<string, unknown>;
  return {
    format: String(out.format),
    virtualSize: Number(out['virtual-size']),
    actualSize: Number(out['actual-size']),
    backingFile: out['backing-filename'] as string | undefined,
    backingFormat: out['backing-filename-format'] as string | undefined,
  };
}

function run(binary: string, args: string[]): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile(binary, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      if (!err) return resolvePromise(stdout);
      const exitCode = typeof err.code === 'number' ? err.code : null;
      reject(new Error(describeCommandFailure({
        argv: [binary, ...args], exitCode, signal: err.signal, stderr, timedOut: err.killed,
        cause: exitCode === null && !err.killed ? err.message : undefined,
      })));
    });
  });
}
