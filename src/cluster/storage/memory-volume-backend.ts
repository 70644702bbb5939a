// A volume back-end that only remembers: sizes in a map and exports that point nowhere. For the
// fake driver (scale simulation, fast API tests), whose VMs never open a disk. It keeps the same
// contract as the qcow2 back-end (see test/unit/volume-backend-contract.test.ts), snapshots
// included: a deleted snapshot is kept (unlisted) while a volume or a copy still depends on it.
import {
  checkSize, checkSnapshotId, checkVolumeId, SnapshotNotFoundError, VolumeNotFoundError, VolumeSizeError,
  type NbdLocation, type SnapshotBackendInfo, type VolumeBackend, type VolumeBackendInfo,
} from './volume-backend.ts';

interface MemorySnapshot { sizeGiB: number; deleted: boolean; base: string | undefined }

export class MemoryVolumeBackend implements VolumeBackend {
  readonly kind = 'memory';
  readonly #sizes = new Map<string, number>();
  /** The snapshot each volume was made from (its data depends on it). */
  readonly #bases = new Map<string, string>();
  readonly #snapshots = new Map<string, MemorySnapshot>();
  readonly #exported = new Set<string>();

  async create(volumeId: string, sizeGiB: number): Promise<VolumeBackendInfo> {
    checkVolumeId(volumeId);
    checkSize(volumeId, sizeGiB);
    if (!this.#sizes.has(volumeId)) this.#sizes.set(volumeId, sizeGiB);
    return this.#info(volumeId)!;
  }

  async delete(volumeId: string): Promise<void> {
    checkVolumeId(volumeId);
    this.#exported.delete(volumeId);
    this.#sizes.delete(volumeId);
    this.#bases.delete(volumeId);
    this.#collect();
  }

  async resize(volumeId: string, sizeGiB: number): Promise<VolumeBackendInfo> {
    checkVolumeId(volumeId);
    checkSize(volumeId, sizeGiB);
    const now = this.#sizes.get(volumeId);
    if (now === undefined) throw new VolumeNotFoundError(volumeId);
    if (sizeGiB < now) throw new VolumeSizeError(volumeId, `cannot shrink from ${now} GiB to ${sizeGiB} GiB`);
    this.#sizes.set(volumeId, sizeGiB);
    return this.#info(volumeId)!;
  }

  async info(volumeId: string): Promise<VolumeBackendInfo | undefined> {
    checkVolumeId(volumeId);
    return this.#info(volumeId);
  }

  async list(): Promise<VolumeBackendInfo[]> {
    return [...this.#sizes.keys()].sort().map((id) => this.#info(id)!);
  }

  async export(volumeId: string): Promise<NbdLocation> {
    checkVolumeId(volumeId);
    if (!this.#sizes.has(volumeId)) throw new VolumeNotFoundError(volumeId);
    this.#exported.add(volumeId);
    return { host: 'memory.invalid', port: 10809, exportName: volumeId };
  }

  async unexport(volumeId: string): Promise<void> {
    this.#exported.delete(volumeId);
  }

  isExported(volumeId: string): boolean {
    return this.#exported.has(volumeId);
  }

  async close(): Promise<void> {}

  async snapshot(volumeId: string, snapshotId: string): Promise<SnapshotBackendInfo> {
    checkVolumeId(volumeId);
    checkSnapshotId(snapshotId);
    if (!this.#snapshots.has(snapshotId)) {
      const size = this.#sizes.get(volumeId);
      if (size === undefined) throw new VolumeNotFoundError(volumeId);
      this.#snapshots.set(snapshotId, { sizeGiB: size, deleted: false, base: this.#bases.get(volumeId) });
    }
    return this.#snapshotInfo(snapshotId)!;
  }

  async createFromSnapshot(volumeId: string, snapshotId: string, sizeGiB: number): Promise<VolumeBackendInfo> {
    checkVolumeId(volumeId);
    checkSnapshotId(snapshotId);
    checkSize(volumeId, sizeGiB);
    if (!this.#sizes.has(volumeId)) {
      const snap = this.#snapshotInfo(snapshotId);
      if (!snap) throw new SnapshotNotFoundError(snapshotId);
      if (sizeGiB < snap.sizeGiB) throw new VolumeSizeError(volumeId, `size ${sizeGiB} GiB is smaller than snapshot ${snapshotId} (${snap.sizeGiB} GiB)`);
      this.#sizes.set(volumeId, sizeGiB);
      this.#bases.set(volumeId, snapshotId);
    }
    return this.#info(volumeId)!;
  }

  async copySnapshot(sourceSnapshotId: string, snapshotId: string): Promise<SnapshotBackendInfo> {
    checkSnapshotId(sourceSnapshotId);
    checkSnapshotId(snapshotId);
    if (!this.#snapshots.has(snapshotId)) {
      const source = this.#snapshotInfo(sourceSnapshotId);
      if (!source) throw new SnapshotNotFoundError(sourceSnapshotId);
      this.#snapshots.set(snapshotId, { sizeGiB: source.sizeGiB, deleted: false, base: sourceSnapshotId });
    }
    return this.#snapshotInfo(snapshotId)!;
  }

  async deleteSnapshot(snapshotId: string): Promise<void> {
    checkSnapshotId(snapshotId);
    const snap = this.#snapshots.get(snapshotId);
    if (snap) snap.deleted = true;
    this.#collect();
  }

  async snapshotInfo(snapshotId: string): Promise<SnapshotBackendInfo | undefined> {
    checkSnapshotId(snapshotId);
    return this.#snapshotInfo(snapshotId);
  }

  async listSnapshots(): Promise<SnapshotBackendInfo[]> {
    return [...this.#snapshots.keys()].sort().map((id) => this.#snapshotInfo(id)).filter((s): s is SnapshotBackendInfo => s !== undefined);
  }

  /** Whether the snapshot is still kept (deleted or not): for tests of the keep-until-unused rule. */
  holdsSnapshot(snapshotId: string): boolean {
    return this.#snapshots.has(snapshotId);
  }

  #collect(): void {
    for (;;) {
      const needed = new Set([...this.#bases.values(), ...[...this.#snapshots.values()].map((s) => s.base).filter((b): b is string => b !== undefined)]);
      const free = [...this.#snapshots].filter(([id, s]) => s.deleted && !needed.has(id)).map(([id]) => id);
      if (free.length === 0) return;
      for (const id of free) this.#snapshots.delete(id);
    }
  }

  #snapshotInfo(snapshotId: string): SnapshotBackendInfo | undefined {
    const snap = this.#snapshots.get(snapshotId);
    return snap && !snap.deleted ? { snapshotId, sizeGiB: snap.sizeGiB, allocatedBytes: 0 } : undefined;
  }

  #info(volumeId: string): VolumeBackendInfo | undefined {
    const size = this.#sizes.get(volumeId);
    return size === undefined ? undefined : { volumeId, sizeGiB: size, allocatedBytes: 0 };
  }
}
