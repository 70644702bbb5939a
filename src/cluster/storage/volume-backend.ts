// The seam between a zone's cluster controller and where its EBS volumes live. One small vocabulary
// (create, delete, resize, info, list, export) that a qcow2 directory implements today and that LVM
// or Ceph RBD can implement later; snapshot and clone are the next words (issue 10, item 3) and
// are left optional so a back-end that lacks them says so.
//
// A node never opens a volume's file: it reaches every volume over the zone's network as an NBD
// export of the back-end's host, authenticated with the zone's TLS pre-shared key, so the VM and
// its volume need not share a host.
import type { NbdLocation } from '../../node/node-api.ts';

export type { NbdLocation };

export interface VolumeBackendInfo {
  volumeId: string;
  /** Virtual size in GiB, what the guest sees. */
  sizeGiB: number;
  /** Bytes the back-end really holds for it (thin provisioning). */
  allocatedBytes: number;
}

export interface VolumeBackend {
  /** What keeps the volumes, e.g. "qcow2" or "memory". */
  readonly kind: string;
  /** Makes an empty volume; idempotent (a volume that exists with this size is kept as it is). */
  create(volumeId: string, sizeGiB: number): Promise<VolumeBackendInfo>;
  /** Removes the volume and its export (cutting off any client still connected); idempotent. */
  delete(volumeId: string): Promise<void>;
  /** Grows the volume; a smaller size is refused, and so is growing one a node is attached to (ExportInUseError). */
  resize(volumeId: string, sizeGiB: number): Promise<VolumeBackendInfo>;
  info(volumeId: string): Promise<VolumeBackendInfo | undefined>;
  list(): Promise<VolumeBackendInfo[]>;
  /** Where a node of the zone attaches the volume (exporting it first if it is not). */
  export(volumeId: string): Promise<NbdLocation>;
  /**
   * Ends the volume's export; with `force`, connected clients are cut off (a forced detach of a
   * VM that will not let go), else they keep it until they disconnect.
   */
  unexport(volumeId: string, opts?: { force?: boolean }): Promise<void>;
  /** Stops using the back-end (the qcow2 one may leave its NBD server running for attached VMs). */
  close(): Promise<void>;
  // Room for snapshots and clones (issue 10, item 3): absent means the back-end cannot.
  snapshot?(volumeId: string, snapshotId: string): Promise<void>;
  createFromSnapshot?(volumeId: string, snapshotId: string, sizeGiB: number): Promise<VolumeBackendInfo>;
}

export class VolumeNotFoundError extends Error {
  constructor(readonly volumeId: string) {
    super(`volume ${volumeId} does not exist in this zone's storage`);
    this.name = 'VolumeNotFoundError';
  }
}

export class VolumeSizeError extends Error {
  constructor(volumeId: string, message: string) {
    super(`volume ${volumeId}: ${message}`);
    this.name = 'VolumeSizeError';
  }
}

/** Volume ids name files and QEMU nodes: only EC2's own shape is accepted. */
export const VOLUME_ID = /^vol-[0-9a-f]{8}([0-9a-f]{9})?$/;

export function checkVolumeId(volumeId: string): void {
  if (!VOLUME_ID.test(volumeId)) throw new Error(`${JSON.stringify(volumeId)} is not a volume id (vol- and 8 or 17 hex digits)`);
}

export function checkSize(volumeId: string, sizeGiB: number): void {
  if (!Number.isInteger(sizeGiB) || sizeGiB < 1 || sizeGiB > 65_536) throw new VolumeSizeError(volumeId, `size ${sizeGiB} GiB is not a whole number from 1 to 65536`);
}
