// Volumes as qcow2 files in the storage directory of the cluster controller's host, made and
// inspected with qemu-img and served to the zone's nodes by the NBD server (nbd-export-server.ts).
// qcow2 keeps them thin (a new 100 GiB volume takes a few hundred KiB). Every volume is exported
// while it exists, so attaching one is only the node's work; the export is what the file is opened
// by, so resizing and snapshots go through it.
//
// Snapshots are qcow2 backing chains, kept in the same directory as the volumes (so every backing
// file name in a header is a bare file name and the directory can move):
//   vol-A.qcow2 -> snap-2.qcow2 -> snap-1.qcow2        (A, snapshotted twice)
//   vol-B.qcow2 -> snap-2.qcow2 -> ...                 (B, made from snap-2)
// Taking a snapshot gives the volume's image a second name (snap-N, a hard link: nothing is
// copied) and puts a new empty top under the volume's name, swapped in by the NBD server between
// two writes (blockdev-snapshot), so the snapshot is crash-consistent while a node writes and holds
// only what changed since the one before (incremental). A volume from a snapshot is a new empty
// top on it: copy-on-write, its time does not grow with the size.
import { execFile } from 'node:child_process';
import { chmod, link, open as openFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { ensurePrivateDir, PRIVATE_FILE_MODE, writePrivateFile } from '../../store/private-files.ts';
import { describeCommandFailure } from '../../node/command-failure.ts';
import { NbdExportServer } from './nbd-export-server.ts';
import {
  checkSize, checkSnapshotId, checkVolumeId, SNAPSHOT_ID, SnapshotNotFoundError, VOLUME_ID, VolumeNotFoundError, VolumeSizeError,
  type NbdLocation, type SnapshotBackendInfo, type VolumeBackend, type VolumeBackendInfo,
} from './volume-backend.ts';

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
    await this.#exclusive(async () => {
      await this.nbd.removeExport(volumeId);
      for (const name of await this.#names()) {
        if (name.startsWith(`${volumeId}.qcow2.`) && name.endsWith('.next')) await rm(join(this.dir, name), { force: true });
      }
      await rm(this.#file(volumeId), { force: true });
      await rm(`${this.#file(volumeId)}.creating`, { force: true });
      // Snapshots deleted while this volume depended on them go with it.
      await this.#collect();
    });
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
      // Not during a snapshot of it: the file under the volume's name changes then.
      await this.#exclusive(async () => {
        await this.nbd.removeExport(volumeId, { mode: 'safe' });
        try {
          await this.#qemuImgRun(['resize', '-q', '-f', 'qcow2', this.#file(volumeId), String(sizeGiB * GiB)]);
        } finally {
          await this.nbd.ensureExport(volumeId, this.#file(volumeId));
        }
      });
    }
    return (await this.info(volumeId))!;
  }

  async info(volumeId: string): Promise<VolumeBackendInfo | undefined> {
    checkVolumeId(volumeId);
    const file = this.#file(volumeId);
    if (!(await exists(file))) return undefined;
    const image = await this.#imageInfo(file);
    return { volumeId, sizeGiB: Math.ceil(image.virtualBytes / GiB), allocatedBytes: image.allocatedBytes };
  }

  async list(): Promise<VolumeBackendInfo[]> {
    const out: VolumeBackendInfo[] = [];
    for (const name of await this.#names()) {
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
    await this.#lock;
    await this.nbd.close();
  }

  // ---- snapshots --------------------------------------------------------------------------

  async snapshot(volumeId: string, snapshotId: string): Promise<SnapshotBackendInfo> {
    checkVolumeId(volumeId);
    checkSnapshotId(snapshotId);
    return this.#exclusive(async () => {
      await this.#settle(volumeId);
      const done = await this.#snapshotInfo(snapshotId);
      if (done) return done;
      const vol = this.#file(volumeId);
      if (!(await exists(vol))) throw new VolumeNotFoundError(volumeId);
      const { virtualBytes } = await this.#imageInfo(vol);
      const snap = this.#file(snapshotId);
      const next = this.#nextFile(volumeId, snapshotId);
      // The daemon must hold the volume open: the swap happens there, between two of its writes.
      await this.nbd.ensureExport(volumeId, vol);
      await rm(next, { force: true });
      // -u: the backing name is given now; the snapshot gets it in the next step.
      await this.#qemuImgRun(['create', '-q', '-f', 'qcow2', '-u', '-b', basename(snap), '-F', 'qcow2', next, String(virtualBytes)]);
      await chmod(next, PRIVATE_FILE_MODE);
      try {
        await link(vol, snap);
        await this.nbd.swapTop(volumeId, next);
      } catch (err) {
        // Nothing half-made: the volume's image keeps its one name and every write.
        await rm(next, { force: true });
        if (await sameFile(snap, vol)) await rm(snap, { force: true });
        throw err;
      }
      await rename(next, vol);
      return (await this.#snapshotInfo(snapshotId))!;
    });
  }

  async createFromSnapshot(volumeId: string, snapshotId: string, sizeGiB: number): Promise<VolumeBackendInfo> {
    checkVolumeId(volumeId);
    checkSnapshotId(snapshotId);
    checkSize(volumeId, sizeGiB);
    const file = this.#file(volumeId);
    await this.#exclusive(async () => {
      if (await exists(file)) return;
      const snap = await this.#snapshotInfo(snapshotId);
      if (!snap) throw new SnapshotNotFoundError(snapshotId);
      if (sizeGiB < snap.sizeGiB) throw new VolumeSizeError(volumeId, `size ${sizeGiB} GiB is smaller than snapshot ${snapshotId} (${snap.sizeGiB} GiB)`);
      await this.#overlay(file, snapshotId, sizeGiB * GiB);
    });
    await this.nbd.ensureExport(volumeId, file);
    return (await this.info(volumeId))!;
  }

  /** A copy is an empty layer on the source (CopySnapshot in the same zone): nothing is copied, and the source's file stays while the copy needs it. */
  async copySnapshot(sourceSnapshotId: string, snapshotId: string): Promise<SnapshotBackendInfo> {
    checkSnapshotId(sourceSnapshotId);
    checkSnapshotId(snapshotId);
    return this.#exclusive(async () => {
      const done = await this.#snapshotInfo(snapshotId);
      if (done) return done;
      const source = await this.#snapshotInfo(sourceSnapshotId);
      if (!source) throw new SnapshotNotFoundError(sourceSnapshotId);
      const { virtualBytes } = await this.#imageInfo(this.#file(sourceSnapshotId));
      await this.#overlay(this.#file(snapshotId), sourceSnapshotId, virtualBytes);
      return (await this.#snapshotInfo(snapshotId))!;
    });
  }

  /**
   * A deleted snapshot is marked (snap-N.deleted) and its file kept until no volume or snapshot
   * has it in its backing chain, then removed (#collect). The other choice, flattening the
   * dependents (copying the snapshot's data into each), would rewrite images a node may be
   * writing right now and take time and space that grow with the data; keeping the file costs only
   * the space the user already had, and frees it when the last dependent goes.
   */
  async deleteSnapshot(snapshotId: string): Promise<void> {
    checkSnapshotId(snapshotId);
    await this.#exclusive(async () => {
      const file = this.#file(snapshotId);
      await rm(`${file}.creating`, { force: true });
      if (!(await exists(file))) return;
      await writePrivateFile(this.#tombstone(snapshotId), '');
      await this.#collect();
    });
  }

  async snapshotInfo(snapshotId: string): Promise<SnapshotBackendInfo | undefined> {
    checkSnapshotId(snapshotId);
    return this.#snapshotInfo(snapshotId);
  }

  async listSnapshots(): Promise<SnapshotBackendInfo[]> {
    const out: SnapshotBackendInfo[] = [];
    for (const name of await this.#names()) {
      const id = name.replace(/\.qcow2$/, '');
      if (!name.endsWith('.qcow2') || !SNAPSHOT_ID.test(id)) continue;
      const info = await this.#snapshotInfo(id);
      if (info) out.push(info);
    }
    return out;
  }

  async #snapshotInfo(snapshotId: string): Promise<SnapshotBackendInfo | undefined> {
    const file = this.#file(snapshotId);
    if (!(await exists(file)) || (await exists(this.#tombstone(snapshotId)))) return undefined;
    // A name that is still the live image of a volume is a snapshot being taken, not one taken.
    for (const name of await this.#names()) {
      if (name.endsWith(`.qcow2.${snapshotId}.next`)) return undefined;
    }
    const image = await this.#imageInfo(file);
    return { snapshotId, sizeGiB: Math.ceil(image.virtualBytes / GiB), allocatedBytes: image.allocatedBytes };
  }

  /** Makes `file` an empty qcow2 layer of `bytes` on the snapshot, aside and renamed. */
  async #overlay(file: string, snapshotId: string, bytes: number): Promise<void> {
    await ensurePrivateDir(this.dir);
    const partial = `${file}.creating`;
    await rm(partial, { force: true });
    await this.#qemuImgRun(['create', '-q', '-f', 'qcow2', '-u', '-b', basename(this.#file(snapshotId)), '-F', 'qcow2', partial, String(bytes)]);
    await chmod(partial, PRIVATE_FILE_MODE);
    await rename(partial, file);
  }

  /**
   * Finishes or undoes a snapshot of the volume that a crash left between its steps. The new top
   * (vol.qcow2.<snap>.next) exists from before the link until after the swap: if the daemon has it
   * open, or it holds writes (the daemon swapped, then died), the swap happened and the snapshot
   * is completed; otherwise it never happened and both new names go (the volume keeps every write).
   */
  async #settle(volumeId: string): Promise<void> {
    const vol = this.#file(volumeId);
    for (const name of await this.#names()) {
      const m = new RegExp(`^${volumeId}\\.qcow2\\.(snap-[0-9a-f]+)\\.next$`).exec(name);
      if (!m) continue;
      const next = join(this.dir, name);
      const snap = this.#file(m[1]!);
      const swapped = (await this.nbd.hasOpen(next)) || (await this.#hasOwnData(next));
      if (swapped && (await exists(snap))) {
        await rename(next, vol);
      } else {
        await rm(next, { force: true });
        if (await sameFile(snap, vol)) await rm(snap, { force: true });
      }
    }
  }

  async #hasOwnData(file: string): Promise<boolean> {
    const out = await this.#qemuImgRun(['map', '-U', '--output=json', '-f', 'qcow2', file]).catch(() => '[]');
    return (JSON.parse(out) as { depth: number; data: boolean }[]).some((e) => e.depth === 0 && e.data);
  }

  /** Removes the deleted snapshots no image depends on any more, until none is left to remove. */
  async #collect(): Promise<void> {
    for (;;) {
      const names = await this.#names();
      const needed = new Set<string>();
      for (const name of names) {
        if (!/\.qcow2(\.creating|\.snap-[0-9a-f]+\.next)?$/.test(name)) continue;
        const backing = await backingFileName(join(this.dir, name));
        if (backing) needed.add(backing);
      }
      const free = names.filter((n) => n.endsWith('.deleted')).map((n) => n.replace(/\.deleted$/, ''))
        .filter((id) => SNAPSHOT_ID.test(id) && !needed.has(`${id}.qcow2`));
      if (free.length === 0) return;
      for (const id of free) {
        await rm(this.#file(id), { force: true });
        await rm(this.#tombstone(id), { force: true });
      }
    }
  }

  /** One snapshot change at a time: each reads the directory, then changes it. */
  #lock: Promise<unknown> = Promise.resolve();

  #exclusive<T>(work: () => Promise<T>): Promise<T> {
    const next = this.#lock.then(work);
    this.#lock = next.catch(() => undefined);
    return next;
  }

  async #names(): Promise<string[]> {
    return (await readdir(this.dir).catch(() => [] as string[])).sort();
  }

  async #imageInfo(file: string): Promise<{ virtualBytes: number; allocatedBytes: number }> {
    // -U: the NBD server holds the file's lock while it exports it.
    const out = await this.#qemuImgRun(['info', '-U', '--output=json', '-f', 'qcow2', file]);
    const parsed = JSON.parse(out) as { 'virtual-size': number; 'actual-size'?: number };
    return { virtualBytes: parsed['virtual-size'], allocatedBytes: parsed['actual-size'] ?? 0 };
  }

  #nextFile(volumeId: string, snapshotId: string): string {
    return `${this.#file(volumeId)}.${snapshotId}.next`;
  }

  #tombstone(snapshotId: string): string {
    return join(this.dir, `${snapshotId}.deleted`);
  }

  /** Ends the NBD server too (tests, and a host leaving the zone): attached VMs lose their volumes. */
  async shutdown(): Promise<void> {
    await this.nbd.stop();
  }

  /** A volume's or a snapshot's file. */
  #file(id: string): string {
    return join(this.dir, `${id}.qcow2`);
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

async function sameFile(a: string, b: string): Promise<boolean> {
  const [sa, sb] = await Promise.all([stat(a).catch(() => undefined), stat(b).catch(() => undefined)]);
  return sa !== undefined && sb !== undefined && sa.ino === sb.ino && sa.dev === sb.dev;
}

/** The backing file name in a qcow2 header (bytes 8..15: its offset, 16..19: its length), if any. */
async function backingFileName(file: string): Promise<string | undefined> {
  const handle = await openFile(file, 'r').catch(() => undefined);
  if (!handle) return undefined;
  try {
    const header = Buffer.alloc(20);
    const { bytesRead } = await handle.read(header, 0, 20, 0);
    if (bytesRead < 20 || header.readUInt32BE(0) !== 0x514649fb) return undefined;
    const offset = Number(header.readBigUInt64BE(8));
    const length = header.readUInt32BE(16);
    if (offset === 0 || length === 0 || length > 1023) return undefined;
    const name = Buffer.alloc(length);
    await handle.read(name, 0, length, offset);
    return name.toString('utf8');
  } finally {
    await handle.close();
  }
}
