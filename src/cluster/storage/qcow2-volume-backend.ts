// Volumes as qcow2 files in the storage directory of the cluster controller's host, made and
// inspected with qemu-img and served to the zone's nodes by the NBD server (nbd-export-server.ts).
// qcow2 keeps them thin (a new 100 GiB volume takes a few hundred KiB) and leaves room for
// snapshots as backing chains later. Every volume is exported while it exists, so attaching one is
// only the node's work; the export is what the file is opened by, so resizing goes through it.
import { execFile } from 'node:child_process';
import { chmod, readdir, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ensurePrivateDir, PRIVATE_FILE_MODE } from '../../store/private-files.ts';
import { describeCommandFailure } from '../../node/command-failure.ts';
import { NbdExportServer } from './nbd-export-server.ts';
import { checkSize, checkVolumeId, VOLUME_ID, VolumeNotFoundError, VolumeSizeError, type NbdLocation, type VolumeBackend, type VolumeBackendInfo } from './volume-backend.ts';

export interface Qcow2VolumeBackendOptions {
  /** Where the volume files and the NBD server's files live. */
  dir: string;
  /** Address the zone's nodes reach this host at; the NBD server listens there only. */
  host: string;
  port?: number;
  /** The zone: names the TLS pre-shared key's identity. */
  zone: string;
  qemuImg?: string;
  /** Named network namespace the NBD server listens in (tests' hosts). */
  netns?: string;
}

const GiB = 1024 ** 3;

export class Qcow2VolumeBackend implements VolumeBackend {
  readonly kind = 'qcow2';
  readonly dir: string;
  readonly #qemuImg: string;
  readonly nbd: NbdExportServer;

  constructor(opts: Qcow2VolumeBackendOptions) {
    this.dir = resolve(opts.dir);
    this.#qemuImg = opts.qemuImg ?? 'qemu-img';
    this.nbd = new NbdExportServer({ dir: join(this.dir, 'nbd'), host: opts.host, port: opts.port, identity: `ironbark-${opts.zone}`, netns: opts.netns });
  }

  async create(volumeId: string, sizeGiB: number): Promise<VolumeBackendInfo> {
    checkVolumeId(volumeId);
    checkSize(volumeId, sizeGiB);
    const file = this.#file(volumeId);
    if (!(await exists(file))) {
      await ensurePrivateDir(this.dir);
      // Made aside and renamed, so a crash never leaves a half-made file under the volume's name.
      const partial = `${file}.creating`;
      await rm(partial, { force: true });
      await this.#qemuImgRun(['create', '-q', '-f', 'qcow2', partial, String(sizeGiB * GiB)]);
      await chmod(partial, PRIVATE_FILE_MODE);
      await rename(partial, file);
    }
    await this.nbd.ensureExport(volumeId, file);
    return (await this.info(volumeId))!;
  }

  async delete(volumeId: string): Promise<void> {
    checkVolumeId(volumeId);
    await this.nbd.removeExport(volumeId);
    await rm(this.#file(volumeId), { force: true });
    await rm(`${this.#file(volumeId)}.creating`, { force: true });
  }

  async resize(volumeId: string, sizeGiB: number): Promise<VolumeBackendInfo> {
    checkVolumeId(volumeId);
    checkSize(volumeId, sizeGiB);
    const now = await this.info(volumeId);
    if (!now) throw new VolumeNotFoundError(volumeId);
    if (sizeGiB < now.sizeGiB) throw new VolumeSizeError(volumeId, `cannot shrink from ${now.sizeGiB} GiB to ${sizeGiB} GiB`);
    if (sizeGiB > now.sizeGiB) {
      // An NBD client keeps the size it connected with, and the export holds the file's size
      // fixed: a volume grows while no node is attached to it (ExportInUseError until then).
      await this.nbd.removeExport(volumeId, { mode: 'safe' });
      try {
        await this.#qemuImgRun(['resize', '-q', '-f', 'qcow2', this.#file(volumeId), String(sizeGiB * GiB)]);
      } finally {
        await this.nbd.ensureExport(volumeId, this.#file(volumeId));
      }
    }
    return (await this.info(volumeId))!;
  }

  async info(volumeId: string): Promise<VolumeBackendInfo | undefined> {
    checkVolumeId(volumeId);
    const file = this.#file(volumeId);
    if (!(await exists(file))) return undefined;
    // -U: the NBD server holds the file's lock while it exports it.
    const out = await this.#qemuImgRun(['info', '-U', '--output=json', '-f', 'qcow2', file]);
    const parsed = JSON.parse(out) as { 'virtual-size': number; 'actual-size'?: number };
    return { volumeId, sizeGiB: Math.ceil(parsed['virtual-size'] / GiB), allocatedBytes: parsed['actual-size'] ?? 0 };
  }

  async list(): Promise<VolumeBackendInfo[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const out: VolumeBackendInfo[] = [];
    for (const name of names.sort()) {
      const id = name.replace(/\.qcow2$/, '');
      if (!name.endsWith('.qcow2') || !VOLUME_ID.test(id)) continue;
      const info = await this.info(id);
      if (info) out.push(info);
    }
    return out;
  }

  async export(volumeId: string): Promise<NbdLocation> {
    checkVolumeId(volumeId);
    const file = this.#file(volumeId);
    if (!(await exists(file))) throw new VolumeNotFoundError(volumeId);
    return this.nbd.ensureExport(volumeId, file);
  }

  async unexport(volumeId: string, opts: { force?: boolean } = {}): Promise<void> {
    checkVolumeId(volumeId);
    // Only a forced detach cuts clients off; otherwise the export stays for the next attach.
    if (opts.force) {
      await this.nbd.removeExport(volumeId, { keepOpen: true });
    }
  }

  async close(): Promise<void> {
    await this.nbd.close();
  }

  /** Ends the NBD server too (tests, and a host leaving the zone): attached VMs lose their volumes. */
  async shutdown(): Promise<void> {
    await this.nbd.stop();
  }

  #file(volumeId: string): string {
    return join(this.dir, `${volumeId}.qcow2`);
  }

  #qemuImgRun(args: string[]): Promise<string> {
    return new Promise((resolvePromise, reject) => {
      execFile(this.#qemuImg, args, { timeout: 120_000, maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
        if (!err) return resolvePromise(stdout);
        reject(new Error(describeCommandFailure({
          argv: [this.#qemuImg, ...args], exitCode: typeof err.code === 'number' ? err.code : null, signal: err.signal, stderr, cause: err.message,
        })));
      });
    });
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}
