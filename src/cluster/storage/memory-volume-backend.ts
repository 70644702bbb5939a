// A volume back-end that only remembers: sizes in a map and exports that point nowhere. For the
// fake driver (scale simulation, fast API tests), whose VMs never open a disk. It keeps the same
// contract as the qcow2 back-end (see test/unit/volume-backend-contract.test.ts).
import { checkSize, checkVolumeId, VolumeNotFoundError, VolumeSizeError, type NbdLocation, type VolumeBackend, type VolumeBackendInfo } from './volume-backend.ts';

export class MemoryVolumeBackend implements VolumeBackend {
  readonly kind = 'memory';
  readonly #sizes = new Map<string, number>();
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

  #info(volumeId: string): VolumeBackendInfo | undefined {
    const size = this.#sizes.get(volumeId);
    return size === undefined ? undefined : { volumeId, sizeGiB: size, allocatedBytes: 0 };
  }
}
